"""The JAX renderer: deterministic by key, joints drawn where project_to_2d puts them."""

import jax
import numpy as np
import pytest

from posemachine import geometry, skeleton
from posemachine.data import render, synthetic


@pytest.fixture(scope="module")
def clip():
  """Two frames of a synthetic walk seen by a virtual camera: camera-frame joints."""
  rng = np.random.default_rng(3)
  body = synthetic.sample_body(rng)
  world = synthetic.simulate_motion("walk", body, rng, 30, 50.0)
  cam_id, rot, centre = synthetic.sample_camera(rng, world)
  points = ((world - centre) @ rot)[[0, 17]].astype(np.float32)
  return points, geometry.Camera.h36m(cam_id)


def _render(points, camera, key, size=48, jitter=0.0):
  app = jax.tree.map(lambda x: x[0], render.sample_appearance(jax.random.key(5), 1))
  return jax.jit(render.render_clip, static_argnums=(4, 5, 6))(points, camera, app, key, size,
                                                           1.35, jitter)


def test_deterministic_by_key(clip):
  points, camera = clip
  a = _render(points, camera, jax.random.key(0), jitter=0.05)
  b = _render(points, camera, jax.random.key(0), jitter=0.05)
  c = _render(points, camera, jax.random.key(1), jitter=0.05)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert np.abs(np.asarray(a["images"]) - np.asarray(c["images"])).mean() > 0.01
  assert a["images"].shape == (2, 48, 48, 3)
  assert 0.0 <= float(a["images"].min()) and float(a["images"].max()) <= 1.0


def test_joints_are_where_project_to_2d_puts_them(clip):
  points, camera = clip
  out = _render(points, camera, jax.random.key(0), jitter=0.1)
  px = np.asarray(geometry.project_to_2d(points, camera), np.float64)   # (T, K, 2) pixels
  back = np.asarray(render.from_crop(out["joints_2d"], out["boxes"]))
  np.testing.assert_allclose(back, px, atol=1e-2)                        # 1/100 pixel
  assert np.all(np.abs(np.asarray(out["joints_2d"])) < 1.0)              # inside the crop


def test_body_covers_every_joint_and_not_the_corners(clip):
  """The coverage of the drawn body is 1 at every joint's pixel (each joint lies on its
  capsules' axes), and the crop corners show background."""
  points, camera = clip
  size = 64
  box = render.crop_boxes(geometry.project_to_2d(points[0], camera))
  app = jax.tree.map(lambda x: x[0], render.sample_appearance(jax.random.key(5), 1))
  scene = render.sample_scene(jax.random.key(2))
  image, joints, cover = render.render_frame(points[0], camera, box, app, scene,
                                             jax.random.key(3), size, with_coverage=True)
  ij = np.floor((np.asarray(joints) + 1) / 2 * size).astype(int)         # (K, 2) x, y
  assert np.all(np.asarray(cover)[ij[:, 1], ij[:, 0]] > 0.99)
  cover = np.asarray(cover)
  assert cover[:3, :3].max() == 0 and cover[-3:, -3:].max() == 0
  assert 0.05 < cover.mean() < 0.5


def test_rejects_a_wrong_joint_count(clip):
  points, camera = clip
  with pytest.raises(ValueError, match="17, 3"):
    _render(points[:, :15], camera, jax.random.key(0))
