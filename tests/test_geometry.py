"""Camera projection and transforms against an independent NumPy computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posemachine import geometry, skeleton


def numpy_project(points, f, c, k, p):
  """Reference Brown-Conrady projection, one point at a time (the Human3.6M camera model)."""
  out = []
  for x_, y_, z_ in points.reshape(-1, 3).astype(np.float64):
    x, y = x_ / z_, y_ / z_
    r2 = x * x + y * y
    radial = 1 + k[0] * r2 + k[1] * r2 ** 2 + k[2] * r2 ** 3
    tan = p[0] * x + p[1] * y
    xd = x * (radial + tan) + p[0] * r2
    yd = y * (radial + tan) + p[1] * r2
    out.append([f[0] * xd + c[0], f[1] * yd + c[1]])
  return np.asarray(out).reshape(points.shape[:-1] + (2,))


def random_points(rng, shape):
  pts = rng.normal(size=shape + (3,)) * [0.5, 0.5, 0.3]
  pts[..., 2] += 5.0
  return pts.astype(np.float32)


@pytest.mark.parametrize("cam_id", geometry.H36M_CAMERA_IDS)
def test_project_matches_numpy(cam_id):
  rng = np.random.default_rng(0)
  cam = geometry.Camera.h36m(cam_id)
  pts = random_points(rng, (3, 5, 17))
  got = np.asarray(geometry.project_to_2d(jnp.asarray(pts), cam))
  want = numpy_project(pts, cam.f, cam.c, cam.k, cam.p)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)


def test_project_batched_cameras_and_jit_grad():
  rng = np.random.default_rng(1)
  cams = geometry.Camera.stack([geometry.Camera.h36m(i) for i in geometry.H36M_CAMERA_IDS])
  pts = random_points(rng, (4, 6, 17))
  got = np.asarray(jax.jit(geometry.project_to_2d)(pts, cams))
  for i in range(4):
    want = numpy_project(pts[i], cams.f[i], cams.c[i], cams.k[i], cams.p[i])
    np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-3)
  # Differentiable: the gradient matches central finite differences.
  cam = geometry.Camera.h36m(54138969)
  fn = lambda x: geometry.project_to_2d(x, cam).sum()
  x0 = jnp.asarray(pts[0, 0, :2], jnp.float32)
  g = jax.grad(fn)(x0)
  eps = 1e-3
  fd = (fn(x0.at[0, 2].add(eps)) - fn(x0.at[0, 2].add(-eps))) / (2 * eps)
  np.testing.assert_allclose(g[0, 2], fd, rtol=2e-2)


def test_camera_h36m_values_and_unknown_id():
  cam = geometry.Camera.h36m("55011271")
  np.testing.assert_allclose(cam.f, [1149.6757, 1147.5916])
  assert float(cam.w) == 1000 and float(cam.h) == 1000
  assert float(geometry.Camera.h36m(60457274).h) == 1002
  with pytest.raises(ValueError, match="Unknown Human3.6M camera id"):
    geometry.Camera.h36m(12345)


def test_world_camera_round_trip_and_look_at():
  rng = np.random.default_rng(2)
  centre = np.array([3.0, 1.6, -4.0])
  rot = geometry.look_at_rotation(centre, [0, 1, 0])
  np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-9)
  assert np.isclose(np.linalg.det(rot), 1.0)
  pts = rng.normal(size=(10, 17, 3))
  cam_pts = geometry.world_to_camera(pts, rot, centre)
  # Independent: x_cam = R^T (x_world - T).
  np.testing.assert_allclose(cam_pts, (pts - centre) @ rot, atol=1e-5)
  np.testing.assert_allclose(geometry.camera_to_world(cam_pts, rot, centre), pts, atol=1e-5)
  # The target is straight ahead; world up is image up (negative camera y).
  ahead = geometry.world_to_camera(np.array([0.0, 1.0, 0.0]), rot, centre)
  np.testing.assert_allclose(ahead[:2], 0, atol=1e-6)
  above = geometry.world_to_camera(np.array([0.0, 2.0, 0.0]), rot, centre)
  assert above[1] < 0


def test_normalisation_round_trip():
  px = np.array([[0.0, 0.0], [1000.0, 1002.0], [500.0, 501.0]], np.float32)
  n = geometry.normalize_screen_coordinates(px, 1000, 1002)
  np.testing.assert_allclose(n[0], [-1, -1.002], atol=1e-6)
  np.testing.assert_allclose(n[1], [1, 1.002], atol=1e-6)
  np.testing.assert_allclose(geometry.image_coordinates(n, 1000, 1002), px, atol=1e-3)


def test_skeleton_tables():
  assert len(skeleton.PARENTS) == skeleton.NUM_JOINTS == 17
  assert all(p < i for i, p in enumerate(skeleton.PARENTS))
  flip = skeleton.FLIP_PERMUTATION
  assert sorted(flip) == list(range(17)) and all(flip[flip[i]] == i for i in range(17))
  assert flip[4] == 1 and flip[16] == 13
  pose = np.zeros((17, 3))
  pose[1] = [0.1, 0, 0]
  assert np.isclose(skeleton.bone_lengths(pose)[0], 0.1)
