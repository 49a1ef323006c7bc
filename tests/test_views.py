"""Synchronised second views (data/views.py) and the multi-view consistency term."""

import json

import jax
import numpy as np
import pytest

from posemachine import config_defaults, errors, losses, train
from posemachine.data import device_sampler, pipeline, sequences, views
from posemachine.data.sequences import DataError

import tiny_config


def tiny_views_config(**overrides):
  c = tiny_config.get_config(**overrides)
  c.data.synthetic.cameras_per_sequence = 2
  return c


def test_partner_view_is_the_same_pose_rotated():
  config = tiny_views_config()
  seqs = views.attach(pipeline.load_split(config, "train"))
  pf, rot = seqs.extras["view_partner_frame"], seqs.extras["view_rotation"]
  # Ground truth of one camera rotated into the other equals the other's (independent of
  # the model: the synthetic cameras' own geometry).
  np.testing.assert_allclose(seqs.pose_3d @ rot, seqs.pose_3d[pf], atol=1e-5)
  assert (pf != np.arange(seqs.num_frames)).all()  # another sequence, never itself
  np.testing.assert_allclose(rot @ np.swapaxes(rot, -1, -2), np.broadcast_to(np.eye(3), rot.shape),
                             atol=1e-5)


@pytest.mark.parametrize("on_device", [False, True])
def test_batches_carry_the_second_view(on_device):
  config = tiny_views_config()
  seqs = views.attach(pipeline.load_split(config, "train"))
  if on_device:
    data = device_sampler.to_device(seqs, train.create_mesh(1))
    batch = jax.device_get(device_sampler.sample_batch(data, jax.random.key(0), 6, 8))
  else:
    batch = sequences.sample_train_batch(seqs, np.random.default_rng(0), 6, 8)
  assert batch["view_pose_2d"].shape == batch["pose_2d"].shape
  assert batch["view_rotation"].shape == (6, 3, 3)
  want = np.einsum("btkj,bji->btki", batch["pose_3d"], batch["view_rotation"])
  np.testing.assert_allclose(want, batch["view_pose_3d"], atol=1e-5)
  assert not np.allclose(batch["view_pose_2d"], batch["pose_2d"])
  w = batch["mask"]
  assert float(losses.multiview_error(batch["pose_3d"], batch["view_pose_3d"],
                                      batch["view_rotation"], w)) < 1e-9
  assert float(losses.multiview_error(batch["pose_3d"], batch["pose_3d"],
                                      batch["view_rotation"], w)) > 1e-3


def test_missing_or_single_views_are_refused():
  config = tiny_config.get_config()  # one camera per motion
  seqs = pipeline.load_split(config, "train")
  with pytest.raises(DataError, match="no sequence has a second view"):
    views.attach(seqs)
  bare = sequences.Sequences(**{**seqs.__dict__, "extras": {}})
  with pytest.raises(DataError, match="w_multiview.*missing"):
    views.attach(bare)
  config.loss.w_multiview = 1.0
  config.train.augment_flip = True
  with pytest.raises(errors.ConfigError, match="augment_flip"):
    config_defaults.validate(config)


def test_a_sequence_without_its_second_view_is_its_own_partner():
  config = tiny_views_config()
  seqs = pipeline.load_split(config, "train")
  keep = np.ones(seqs.num_sequences, bool)
  keep[1] = False  # the second camera of the first motion
  assert seqs.extras["view_group"][seqs.starts[0]] == seqs.extras["view_group"][seqs.starts[1]]
  seqs = views.attach(seqs.select(keep))
  pf, rot = seqs.extras["view_partner_frame"], seqs.extras["view_rotation"]
  alone = slice(0, seqs.lengths[0])
  np.testing.assert_array_equal(pf[alone], np.arange(seqs.lengths[0]))
  np.testing.assert_array_equal(rot[alone], np.broadcast_to(np.eye(3), rot[alone].shape))
  rest = slice(seqs.lengths[0], None)  # the other motions keep partners from other cameras
  np.testing.assert_allclose(seqs.pose_3d[rest] @ rot[rest], seqs.pose_3d[pf[rest]], atol=1e-5)
  assert (pf[rest] != np.arange(seqs.lengths[0], seqs.num_frames)).all()


def test_training_with_multiview_logs_the_term(tmp_path):
  config = tiny_views_config(num_steps=4)
  config.loss.w_multiview = 1.0
  config.data.labelled_fraction, config.data.labelled_by = 0.5, "sequence"
  train.train_and_evaluate(config, str(tmp_path))
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  values = [r["train/multiview"] for r in rows if "train/multiview" in r]
  assert values and all(np.isfinite(values)) and values[0] > 0
