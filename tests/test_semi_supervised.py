"""Semi-/self-supervised training pieces: labelled fractions and the 3D priors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posemachine import config_defaults, errors, losses, skeleton
from posemachine.data import labels
from posemachine.data.sequences import Sequences

K = 17


def seqs_of(subjects):
  items = [{"pose_3d": np.zeros((3, K, 3)), "pose_2d": np.zeros((3, K, 2)),
            "confidence": np.ones((3, K)), "subject": s, "action": "walk", "camera": str(i)}
           for i, s in enumerate(subjects)]
  return Sequences.from_list(items, "unit-test")


def test_labelled_fraction_by_subject_and_sequence():
  seqs = seqs_of(["a", "a", "b", "c", "d", "d"])
  half = labels.apply_labelled_fraction(seqs, 0.5, "subject", seed=0)
  chosen = {s for s, h in zip(half.subject, half.has_3d) if h}
  assert len(chosen) == 2  # 2 of 4 subjects, all of their sequences
  assert all(h == (s in chosen) for s, h in zip(half.subject, half.has_3d))
  again = labels.apply_labelled_fraction(seqs, 0.5, "subject", seed=0)
  np.testing.assert_array_equal(half.has_3d, again.has_3d)
  assert labels.apply_labelled_fraction(seqs, 0.01, "subject", 0).has_3d.sum() >= 1
  assert labels.apply_labelled_fraction(seqs, 0.0, "subject", 0).has_3d.sum() == 0
  assert labels.apply_labelled_fraction(seqs, 1.0, "subject", 0).has_3d.all()
  assert labels.apply_labelled_fraction(seqs, 0.5, "sequence", 0).has_3d.sum() == 3
  config = config_defaults.get_config()
  config.data.labelled_fraction = 1.5
  with pytest.raises(errors.ConfigError, match="labelled_fraction"):
    config_defaults.validate(config)


def mean_body():
  """A T-pose-like body with exactly the mean bone lengths (independent FK by hand)."""
  direction = {1: [-1, 0, 0], 2: [0, 1, 0], 3: [0, 1, 0], 4: [1, 0, 0], 5: [0, 1, 0],
               6: [0, 1, 0], 7: [0, -1, 0], 8: [0, -1, 0], 9: [0, -1, 0], 10: [0, -1, 0],
               11: [1, 0, 0], 12: [1, 0, 0], 13: [1, 0, 0], 14: [-1, 0, 0], 15: [-1, 0, 0],
               16: [-1, 0, 0]}
  pose = np.zeros((K, 3))
  for j in range(1, K):
    pose[j] = pose[skeleton.PARENTS[j]] + np.array(direction[j]) * skeleton.MEAN_BONE_LENGTHS[j]
  return pose.astype(np.float32)


def test_bone_priors():
  pose = jnp.asarray(mean_body())[None, None]
  w = jnp.ones((1, 1))
  assert float(losses.bone_length_prior(pose, w)) < 1e-10
  assert float(losses.symmetry_prior(pose, w)) < 1e-10
  longer_left_shin = pose.at[..., 6, 1].add(0.1)  # left shin 0.1 m longer
  np.testing.assert_allclose(losses.bone_length_prior(longer_left_shin, w), 0.01 / 16, rtol=1e-3)
  np.testing.assert_allclose(losses.symmetry_prior(longer_left_shin, w), 0.01 / 6, rtol=1e-3)


def test_weak_perspective_term_is_zero_for_a_consistent_view():
  config = config_defaults.get_config()
  config.loss.w_2d_weak_perspective = 1.0
  pose = jnp.asarray(mean_body())[None, None]
  pose_2d = pose[..., :2] * 0.3 + jnp.asarray([0.2, -0.1])  # a weak-perspective view
  outputs = {"pose_3d": pose, "pose_3d_intermediate": pose, "proj_2d": pose_2d}
  batch = {"pose_3d": pose, "pose_2d": pose_2d, "mask": jnp.ones((1, 1)),
           "has_3d": jnp.zeros((1,))}
  _, terms = losses.total_loss(outputs, batch, config.loss)
  assert float(terms["2d_weak_perspective"]) < 1e-8
  _, terms = losses.total_loss({**outputs, "pose_3d": pose.at[..., 13, 0].add(0.2)}, batch,
                               config.loss)
  assert float(terms["2d_weak_perspective"]) > 1e-4


def _mixed_sequences(lengths, labelled):
  """Sequence i: n frames whose 3D is all i (so a row tells its sequence), has_3d given."""
  items = [{"pose_3d": np.full((n, K, 3), i, np.float32), "pose_2d": np.zeros((n, K, 2)),
            "confidence": np.ones((n, K)), "subject": f"s{i}", "action": "walk",
            "camera": "0", "has_3d": lab} for i, (n, lab) in enumerate(zip(lengths, labelled))]
  return Sequences.from_list(items, "unit-test")


@pytest.mark.parametrize("on_device", [False, True])
def test_labelled_share_stratifies_batches(on_device):
  from posemachine.data import device_sampler, sequences  # pylint: disable=g-import-not-at-top
  # 1 labelled sequence of 10 frames among 90 unlabelled frames: 10 % of the frames.
  seqs = _mixed_sequences([10, 40, 50], [True, False, False])
  batch, window = 200, 4

  def draw(share, step):
    if on_device:
      from posemachine import train  # pylint: disable=g-import-not-at-top
      data = device_sampler.to_device(seqs, train.create_mesh(1))
      b = device_sampler.sample_batch(data, jax.random.key(step), batch, window,
                                      labelled_share=share)
      return {k: np.asarray(v) for k, v in b.items()}
    return sequences.sample_train_batch(seqs, np.random.default_rng(step), batch, window,
                                        share)
  for step in range(3):
    b = draw(0.5, step)
    assert b["has_3d"].sum() == batch // 2
    # Labelled rows come from the labelled sequence only (its 3D is all zeros).
    np.testing.assert_array_equal(b["pose_3d"][b["has_3d"] > 0], 0.0)
    assert (b["pose_3d"][b["has_3d"] == 0] > 0).all()
  # In proportion to frames without it: about 10 % labelled.
  share = np.mean([draw(-1.0, s)["has_3d"].mean() for s in range(5)])
  assert 0.04 < share < 0.18
  # All labelled: the share cannot apply, proportional draws.
  full = _mixed_sequences([10, 40, 50], [True, True, True])
  if not on_device:
    b = sequences.sample_train_batch(full, np.random.default_rng(0), batch, window, 0.5)
    assert b["has_3d"].all()


def test_labelled_share_config_checks():
  config = config_defaults.get_config()
  config.data.labelled_share = 1.5
  with pytest.raises(errors.ConfigError, match="labelled_share"):
    config_defaults.validate(config)
  config.data.labelled_share = 0.5
  config.data.format = "tfds"
  with pytest.raises(errors.ConfigError, match="labelled_share"):
    config_defaults.validate(config)
