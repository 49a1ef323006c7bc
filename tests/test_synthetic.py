"""Tests of the procedural synthetic motion dataset (posemachine/data/synthetic.py)."""

import hypothesis
from hypothesis import strategies as st
import ml_collections
import numpy as np
import pytest

from posemachine import geometry
from posemachine import skeleton
from posemachine.data import synthetic
from posemachine.data.sequences import DataError

FRAMES = 60


def small_config(**overrides):
  config = synthetic.default_config()
  config.num_subjects = ml_collections.ConfigDict(dict(train=2, val=1, test=2))
  config.sequences_per_action = 1
  config.frames_per_sequence = FRAMES
  config.cameras_per_sequence = 2
  config.update(overrides)
  return config


@pytest.fixture(scope="module")
def train():
  return synthetic.generate(small_config(), "train")


def camera_of(seqs, i):
  return geometry.Camera.h36m(seqs.camera[i].split("#")[0])


def body_axes(pose):
  """(..., 17, 3) -> unit lateral (towards the subject's left) axis from the hips."""
  lat = pose[..., 4, :] - pose[..., 1, :]
  return lat / np.linalg.norm(lat, axis=-1, keepdims=True)


def test_default_config():
  config = synthetic.default_config()
  assert set(config.keys()) == {
      "seed", "num_subjects", "sequences_per_action", "frames_per_sequence", "fps",
      "cameras_per_sequence", "noise_px", "outlier_prob", "outlier_px", "actions"}
  assert dict(config.num_subjects) == dict(train=8, val=2, test=3)
  assert (config.sequences_per_action, config.frames_per_sequence, config.fps,
          config.cameras_per_sequence) == (2, 200, 50.0, 2)
  assert (config.noise_px, config.outlier_prob, config.outlier_px) == (4.0, 0.01, 40.0)
  assert tuple(config.actions) == synthetic.ACTIONS
  assert len(synthetic.ACTIONS) >= 7


def test_shapes_dtypes_and_labels(train):
  num_actions = len(synthetic.ACTIONS)
  s = 2 * num_actions * 1 * 2
  n = s * FRAMES
  assert train.num_sequences == s and train.num_frames == n
  assert train.pose_3d.shape == (n, 17, 3) and train.pose_3d.dtype == np.float32
  assert train.pose_2d.shape == (n, 17, 2) and train.pose_2d.dtype == np.float32
  assert train.confidence.shape == (n, 17) and train.confidence.dtype == np.float32
  assert set(train.extras) == {"pose_2d_clean", "root_3d", "pose_world", "view_group",
                               "camera_rotation"}
  assert train.extras["camera_rotation"].shape == (n, 3, 3)
  assert train.extras["pose_2d_clean"].shape == (n, 17, 2)
  assert train.extras["root_3d"].shape == (n, 3)
  assert train.extras["pose_world"].shape == (n, 17, 3)
  assert all(v.dtype == np.float32 for v in train.extras.values())
  assert train.has_3d.all() and train.source == "synthetic:train"
  assert sorted(set(train.subject)) == ["synth_train_00", "synth_train_01"]
  for cam in train.camera:
    cam_id, index = cam.split("#")
    assert cam_id in geometry.H36M_CAMERA_IDS and index.isdigit()
  names = [train.sequence_name(i) for i in range(s)]
  assert len(set(names)) == s  # unique sequence names.
  assert train.validate(17) is train


def test_every_family_present(train):
  for action in synthetic.ACTIONS:
    assert train.action.count(action) == 2 * 2  # subjects x cameras.


def test_deterministic_by_seed():
  config = small_config(frames_per_sequence=20, actions=("walk", "sit"))
  a = synthetic.generate(config, "val")
  b = synthetic.generate(config, "val")
  for field in ("pose_3d", "pose_2d", "confidence"):
    np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
  for k in a.extras:
    np.testing.assert_array_equal(a.extras[k], b.extras[k])
  assert a.camera == b.camera
  c = synthetic.generate(small_config(frames_per_sequence=20, actions=("walk", "sit"), seed=1),
                         "val")
  assert not np.allclose(a.pose_3d, c.pose_3d)
  assert not np.allclose(a.pose_2d, c.pose_2d)


def test_action_subset_gives_the_same_sequences(train):
  only = synthetic.generate(small_config(actions=("squat",)), "train")
  mask = np.array([a == "squat" for a in train.action])
  np.testing.assert_array_equal(train.select(mask).pose_2d, only.pose_2d)


def test_splits_have_disjoint_subjects_and_bodies(train):
  test = synthetic.generate(small_config(), "test")
  val = synthetic.generate(small_config(), "val")
  assert not set(train.subject) & set(test.subject)
  assert not set(train.subject) & set(val.subject)
  assert not set(val.subject) & set(test.subject)
  assert set(test.action) == set(synthetic.ACTIONS)  # same families, new bodies.
  def bones(seqs):
    first = seqs.starts[[seqs.subject.index(s) for s in sorted(set(seqs.subject))]]
    return skeleton.bone_lengths(seqs.pose_3d[first])
  b_train, b_test = bones(train), bones(test)
  for bt in b_test:
    assert np.abs(b_train - bt).max(-1).min() > 1e-3  # no test body seen in training.


def test_bone_lengths_rigid_symmetric_and_plausible(train):
  nominal = synthetic.NOMINAL_BONE_LENGTHS[skeleton.BONE_CHILD]
  child = list(skeleton.BONE_CHILD)
  for i in range(train.num_sequences):
    seq = train.sequence(i)
    lengths = skeleton.bone_lengths(seq["pose_3d"])                 # (T, 16)
    np.testing.assert_allclose(lengths, lengths[:1].repeat(len(lengths), 0), atol=1e-5)
    world = skeleton.bone_lengths(seq["pose_world"])
    np.testing.assert_allclose(world, lengths, atol=1e-5)            # rigid camera transform.
    ratio = lengths[0] / nominal
    assert ((ratio > 0.75) & (ratio < 1.25)).all(), ratio
    for left, right in zip(skeleton.LEFT, skeleton.RIGHT):
      if left in child:
        assert lengths[0, child.index(left)] == pytest.approx(lengths[0, child.index(right)],
                                                              abs=1e-5)


def test_bodies_vary_between_subjects():
  bodies = [synthetic.sample_body(np.random.default_rng([0, 0, i])) for i in range(40)]
  lengths = np.stack([b.bone_lengths[1:] for b in bodies]) / synthetic.NOMINAL_BONE_LENGTHS[1:]
  assert 0.04 < lengths.std(0).mean() < 0.09  # about +-6% (scale 5%, per-bone 4%).
  assert lengths.min() >= 0.88 * 0.9 - 1e-9 and lengths.max() <= 1.12 * 1.1 + 1e-9


def test_root_relative_and_positive_depth(train):
  assert np.abs(train.pose_3d[:, 0]).max() == 0.0
  cam = train.pose_3d + train.extras["root_3d"][:, None]
  assert cam[..., 2].min() > 0.5
  dist = np.linalg.norm(train.extras["root_3d"], axis=-1)
  assert 1.5 < dist.min() and dist.max() < 15.0
  # Mostly inside the image (normalised x in [-1, 1]).
  x = train.extras["pose_2d_clean"][..., 0]
  assert np.mean(np.abs(x) <= 1) > 0.95


def test_clean_2d_is_the_projection(train):
  """Independent recomputation of the Human3.6M camera model (pinhole + Brown-Conrady) in NumPy."""
  for i in range(train.num_sequences):
    seq = train.sequence(i)
    cam = camera_of(train, i)
    p = (seq["pose_3d"] + seq["root_3d"][:, None]).astype(np.float64)
    x, y = p[..., 0] / p[..., 2], p[..., 1] / p[..., 2]
    (k1, k2, k3), (p1, p2) = cam.k, cam.p
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
    tan = p1 * x + p2 * y
    u = cam.f[0] * (x * (radial + tan) + p1 * r2) + cam.c[0]
    v = cam.f[1] * (y * (radial + tan) + p2 * r2) + cam.c[1]
    w, h = float(cam.w), float(cam.h)
    expect = np.stack([u / w * 2 - 1, v / w * 2 - h / w], -1)
    np.testing.assert_allclose(seq["pose_2d_clean"], expect, atol=2e-5)


def test_world_pose_stands_on_the_ground(train):
  world = train.extras["pose_world"]
  ankles = world[:, (3, 6), 1]
  assert ankles.min() > 0.06  # the ankle joint stays above the ground.
  grounded = np.isin(np.array(train.action)[np.searchsorted(
      train.starts, np.arange(train.num_frames), side="right") - 1],
                     ["walk", "squat", "wave", "turn", "sit"])
  lowest = ankles[grounded].min(-1)
  assert lowest.max() < 0.11 and lowest.min() > 0.07  # one foot on the ground.
  assert (world[:, 10, 1] > world[:, 0, 1]).mean() > 0.99  # head above pelvis.


def test_motion_is_smooth(train):
  for i in range(train.num_sequences):
    world = train.sequence(i)["pose_world"]
    step = np.linalg.norm(np.diff(world, axis=0), axis=-1)  # metres per frame at 50 fps.
    assert step.max() < 0.3, (train.sequence_name(i), step.max())


def test_knees_bend_forward(train):
  for pose in (train.pose_3d, train.extras["pose_world"]):
    lat = body_axes(pose)
    for hip, knee, ankle in ((1, 2, 3), (4, 5, 6)):
      thigh = pose[:, knee] - pose[:, hip]
      shin = pose[:, ankle] - pose[:, knee]
      axis = np.cross(thigh, shin) / (np.linalg.norm(thigh, axis=-1) * np.linalg.norm(
          shin, axis=-1))[:, None]
      # sin(knee angle) along the hip axis: >= 0 when the shin swings backwards.
      assert (axis * lat).sum(-1).min() > -1e-4


def test_knees_actually_bend(train):
  pose = train.pose_3d
  angle = np.degrees(np.arccos(np.clip((
      (pose[:, 2] - pose[:, 1]) * (pose[:, 3] - pose[:, 2])).sum(-1) / np.linalg.norm(
          pose[:, 2] - pose[:, 1], axis=-1) / np.linalg.norm(pose[:, 3] - pose[:, 2], axis=-1),
                                                -1, 1)))
  assert angle.max() > 60 and np.median(angle) < 40


@pytest.mark.parametrize("noise_px", [2.0, 6.0])
def test_noise_statistics(noise_px):
  config = small_config(noise_px=noise_px, outlier_prob=0.0, frames_per_sequence=100)
  seqs = synthetic.generate(config, "val")
  w = np.concatenate([np.full(n, float(camera_of(seqs, i).w))
                      for i, n in enumerate(seqs.lengths)])
  err = (seqs.pose_2d - seqs.extras["pose_2d_clean"]) * w[:, None, None] / 2  # pixels.
  std = err.std(axis=(0, 2))
  np.testing.assert_allclose(std, noise_px * synthetic.JOINT_NOISE_SCALE, rtol=0.1)
  assert np.abs(err.mean()) < 0.1 * noise_px
  assert std[(3, 6, 13, 16),].mean() > std[(0, 7, 8),].mean()  # extremities noisier.
  assert 0.7 < seqs.confidence.mean() < 0.98


def test_outliers_and_confidence():
  config = small_config(noise_px=3.0, outlier_prob=0.05, outlier_px=50.0,
                        frames_per_sequence=100)
  seqs = synthetic.generate(config, "test")
  w = np.concatenate([np.full(n, float(camera_of(seqs, i).w))
                      for i, n in enumerate(seqs.lengths)])
  err = np.linalg.norm(seqs.pose_2d - seqs.extras["pose_2d_clean"], axis=-1) * w[:, None] / 2
  outlier = err > 20.0  # > 4.4 sigma of the noisiest joint: ~never by the Gaussian alone.
  assert 0.035 < outlier.mean() < 0.065
  conf = seqs.confidence
  assert conf.min() >= 0.0 and conf.max() <= 1.0
  assert conf[outlier].mean() < 0.15 and conf[~outlier].mean() > 0.75
  assert np.corrcoef(err.ravel(), conf.ravel())[0, 1] < -0.5


def test_no_noise_means_clean_observation():
  seqs = synthetic.generate(small_config(noise_px=0.0, outlier_prob=0.0,
                                         frames_per_sequence=10), "val")
  np.testing.assert_allclose(seqs.pose_2d, seqs.extras["pose_2d_clean"], atol=1e-6)


@pytest.mark.parametrize("frames", [1, 2, 600])
def test_short_and_long_sequences(frames):
  config = small_config(frames_per_sequence=frames, actions=("run", "walk", "turn", "jump"),
                        cameras_per_sequence=1)
  seqs = synthetic.generate(config, "val").validate(17)
  assert (seqs.lengths == frames).all()
  cam = seqs.pose_3d + seqs.extras["root_3d"][:, None]
  assert cam[..., 2].min() > 0.5  # long locomotion paths still stay in front of the camera.


def test_invalid_inputs_raise_data_error():
  with pytest.raises(DataError, match="walk"):
    synthetic.generate(small_config(actions=("walk", "moonwalk")), "train")
  with pytest.raises(DataError, match="split"):
    synthetic.generate(small_config(), "training")
  with pytest.raises(DataError, match="frames_per_sequence"):
    synthetic.generate(small_config(frames_per_sequence=0), "train")
  with pytest.raises(DataError, match="seed"):
    synthetic.generate(small_config(seed=-1), "train")
  with pytest.raises(DataError, match="walk"):
    synthetic.simulate_motion("fly", synthetic.sample_body(np.random.default_rng(0)),
                              np.random.default_rng(0), 10, 50.0)


def test_forward_kinematics_conventions():
  body = synthetic.sample_body(np.random.default_rng(0))
  zero = {name: np.zeros(1) for name in synthetic.DOF_NAMES}
  rest = synthetic.forward_kinematics(body.offsets, synthetic.local_rotations(zero))[0]
  np.testing.assert_allclose(skeleton.bone_lengths(rest), body.bone_lengths[1:], rtol=1e-12)
  assert rest[4, 0] > 0 > rest[1, 0]  # body frame: +X is the subject's left.
  assert rest[10, 1] > rest[8, 1] > 0 > rest[3, 1]  # Y up.
  bent = dict(zero, l_knee=np.radians([90.0]), l_hip_flex=np.radians([90.0]),
              r_elbow=np.radians([90.0]))
  pose = synthetic.forward_kinematics(body.offsets, synthetic.local_rotations(bent))[0]
  assert pose[5, 2] > 0.3 and abs(pose[5, 1] - rest[4, 1]) < 0.05  # thigh forward.
  assert pose[6, 1] < pose[5, 1] - 0.3  # shin hangs down from the raised knee.
  assert pose[16, 2] > 0.2  # forearm forward.


@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(action=st.sampled_from(synthetic.ACTIONS), seed=st.integers(0, 2 ** 31))
def test_any_motion_is_valid(action, seed):
  rng = np.random.default_rng(seed)
  body = synthetic.sample_body(rng)
  world = synthetic.simulate_motion(action, body, rng, 80, 30.0)
  assert world.shape == (80, 17, 3) and np.isfinite(world).all()
  lengths = skeleton.bone_lengths(world)
  np.testing.assert_allclose(lengths, np.broadcast_to(body.bone_lengths[1:], lengths.shape),
                             rtol=1e-9)
  assert world[:, (3, 6), 1].min() >= body.ankle_height - 1e-9
  lat = body_axes(world)
  for hip, knee, ankle in ((1, 2, 3), (4, 5, 6)):
    axis = np.cross(world[:, knee] - world[:, hip], world[:, ankle] - world[:, knee])
    assert (axis * lat).sum(-1).min() > -1e-9
