"""Bad input gets a clear error naming the field, sequence, frame or joint."""

import ml_collections
import numpy as np
import pytest

from posemachine import config_defaults
from posemachine.data import pipeline, sequences
from posemachine.data.sequences import DataError, Sequences

K = 17


def make(lengths=(5, 3), joints=K):
  items = []
  for i, n in enumerate(lengths):
    items.append({"pose_3d": np.zeros((n, joints, 3)), "pose_2d": np.zeros((n, joints, 2)),
                  "confidence": np.ones((n, joints)), "subject": f"S{i}", "action": "walk",
                  "camera": "cam0"})
  return Sequences.from_list(items, source="unit-test")


def test_valid_sequences_pass():
  seqs = make().validate(K)
  assert seqs.num_frames == 8 and seqs.num_sequences == 2
  np.testing.assert_array_equal(seqs.starts, [0, 5])


def test_nan_in_2d_names_sequence_frame_joint():
  seqs = make()
  seqs.pose_2d[6, 11, 0] = np.nan
  with pytest.raises(DataError, match=r"'pose_2d' of sequence 1 \(S1/walk/cam0\), frame 1, joint 11"):
    seqs.validate(K)


def test_inf_in_confidence():
  seqs = make()
  seqs.confidence[2, 3] = np.inf
  with pytest.raises(DataError, match="non-finite.*'confidence'.*frame 2, joint 3"):
    seqs.validate(K)


def test_wrong_joint_count():
  with pytest.raises(DataError, match="'pose_3d' has 16 joints, expected 17"):
    make(joints=16).validate(K)


def test_empty_sequence():
  with pytest.raises(DataError, match=r"sequence 1 \(S1/walk/cam0\) is empty"):
    make(lengths=(4, 0)).validate(K)
  with pytest.raises(DataError, match="no sequences"):
    Sequences.from_list([], source="unit-test")


def test_windows_cover_every_frame_once_with_padding():
  seqs = make(lengths=(5, 3))
  ids, offs = sequences.tile_windows(seqs, 4)
  idx, mask = sequences.window_indices(seqs.starts, seqs.lengths, ids, offs, 4)
  assert sorted(idx[mask].tolist()) == list(range(8))
  np.testing.assert_array_equal(idx[1], [4, 4, 4, 4])  # edge padding of sequence 0
  np.testing.assert_array_equal(mask[1], [1, 0, 0, 0])


def test_train_batch_is_deterministic_per_step_and_sharded_by_process():
  config = config_defaults.get_config()
  config.train.batch_size, config.data.window = 8, 4
  seqs = make(lengths=(30, 20))
  a = pipeline.train_batch(seqs, config, 7)
  b = pipeline.train_batch(seqs, config, 7)
  np.testing.assert_array_equal(a["pose_2d"], b["pose_2d"])
  assert a["pose_2d"].shape == (8, 4, K, 2) and a["mask"].shape == (8, 4)
  halves = [pipeline.train_batch(seqs, config, 7, 2, i)["pose_3d"] for i in range(2)]
  np.testing.assert_array_equal(np.concatenate(halves), a["pose_3d"])


def test_unknown_source_and_missing_h36m_files(tmp_path):
  config = config_defaults.get_config()
  config.data.source = "nope"
  with pytest.raises(DataError, match="Unknown config.data.source 'nope'"):
    pipeline.load_split(config, "train")
  config.data.source = "h36m"
  config.data.dir = str(tmp_path)
  with pytest.raises(DataError, match=r"(?s)Missing \['data_3d_h36m.npz', 'data_2d_h36m_gt.npz'\]"
                     r".*prepare_data_h36m.py"):
    pipeline.load_split(config, "train")


def test_config_unknown_key_and_bad_values():
  config = config_defaults.get_config()
  config.train.unlocked = True  # ConfigDicts are unlocked by default; validate() catches typos.
  with pytest.raises(ValueError, match="Unknown config key 'train.unlocked'"):
    config_defaults.validate(config)
  config = config_defaults.get_config()
  config.model.direction = "sideways"
  with pytest.raises(ValueError, match="'model.direction' = 'sideways'; expected one of"):
    config_defaults.validate(config)
  d = config_defaults.get_config().to_dict()
  d["train"]["batch_size"] = "64"  # as a hand-written config file could say
  config = ml_collections.ConfigDict(d)
  with pytest.raises(ValueError, match="'train.batch_size' = '64' has type str, expected int"):
    config_defaults.validate(config)
  config_defaults.validate(config_defaults.get_config())


@pytest.mark.parametrize("key,value,message", [
    ("train.checkpoint_keep", -2, "expected an integer >= 1"),
    ("train.learning_rate", -1.0, "expected a value >= 0"),
    ("train.clip_norm", 0.0, r"expected a value > 0"),
    ("train.b2", 1.0, r"expected a value in \[0, 1\)"),
    ("train.warmup_steps", -5, "expected a value >= 0"),
    ("train.num_devices", 0, "expected -1 \\(all devices\\) or a count >= 1"),
    ("eval.val_max_windows", 0, "expected an integer >= 1"),
    ("eval.split", "foo", "expected 'test', 'val' or 'train'"),
    ("refine.smooth_frames", 4, "expected an odd window"),
    ("refine.chunk", -1, "expected a value >= 0"),
    ("data.h36m.p3_frame_stride", 0, "expected an integer >= 1"),
    ("data.mocap.scale", -1.0, "expected a value >= 0"),
    ("data.mocap.outlier_prob", 2.0, r"expected a value in \[0, 1\]"),
    ("data.mocap.noise_px", float("nan"), "expected a finite number"),
    ("stages.encoder.batch_size", 0, "expected an integer >= 1"),
])
def test_config_ranges(key, value, message):
  config = config_defaults.get_config()
  group, _, leaf = key.rpartition(".")
  node = config
  for part in group.split("."):
    node = node[part]
  node[leaf] = value
  with pytest.raises(ValueError, match=f"Config key '{key}' = .*{message}"):
    config_defaults.validate(config)


def test_every_range_names_a_key_of_the_schema():
  keys = dict(config_defaults._leaves(config_defaults.get_config()))  # pylint: disable=protected-access
  assert set(config_defaults.RANGES) <= set(keys), set(config_defaults.RANGES) - set(keys)


def test_describe_flag_error_names_the_key_and_a_close_match():
  msg = config_defaults.describe_flag_error(
      ["main", "--config=configs/synthetic.py", "--config.train.batchsize=32"], KeyError("x"))
  assert "Unknown config key 'train.batchsize'" in msg
  assert "Did you mean 'train.batch_size'?" in msg
  msg = config_defaults.describe_flag_error(["main", "--config.bogus.x=1"], KeyError("x"))
  assert "Unknown config key 'bogus.x'" in msg and "'train'" in msg
  msg = config_defaults.describe_flag_error(["main", "--config=x.py"], OSError("no file"))
  assert msg == "Cannot load --config (OSError: no file)."


def test_workdir_that_is_a_file_or_has_no_checkpoints(tmp_path):
  from posemachine import errors, train  # pylint: disable=g-import-not-at-top
  import tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config.get_config()
  a_file = tmp_path / "a_file"
  a_file.write_text("x")
  with pytest.raises(errors.PoseMachineError, match="is a file, not a directory"):
    train.train_and_evaluate(config, str(a_file))
  missing = tmp_path / "never_trained"
  with pytest.raises(errors.PoseMachineError, match="No checkpoints in .*train first"):
    train.evaluate_workdir(config, str(missing))
  assert not missing.exists()  # nothing created by a failed evaluation
