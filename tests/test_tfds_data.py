"""Prepared (TFDS ArrayRecord) datasets: equal to the in-memory loaders, per-process shards,
clear errors for missing or corrupt files."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from posemachine import config_defaults
from posemachine.data import labels, pipeline, tfds_data
from posemachine.data.sequences import DataError
from test_h36m import write_tiny_h36m
from test_humaneva import write_tiny_humaneva
from test_bvh import mixamo_like_bvh

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _h36m_config(directory, **h36m):
  c = config_defaults.get_config()
  c.data.source, c.data.dir = "h36m", directory
  c.data.h36m.update(h36m)
  return c


def _humaneva_config(directory):
  c = config_defaults.get_config()
  c.data.source, c.data.dir, c.data.num_joints = "humaneva", directory, 15
  return c


def _mocap_config(directory):
  c = config_defaults.get_config()
  c.data.source = "mocap"
  c.data.mocap.train_dir = os.path.join(directory, "train")
  c.data.mocap.test_dir = os.path.join(directory, "test")
  for split, n in (("train", 3), ("test", 1)):
    os.makedirs(os.path.join(directory, split), exist_ok=True)
    for i in range(n):
      with open(os.path.join(directory, split, f"clip{i}.bvh"), "w") as f:
        f.write(mixamo_like_bvh(frames=12 + 3 * i))
  return c


def assert_same(a, b):
  assert a.num_sequences == b.num_sequences
  for f in ("pose_3d", "pose_2d", "confidence", "starts", "lengths", "has_3d"):
    np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
  assert (a.subject, a.action, a.camera) == (b.subject, b.action, b.camera)
  # The prepared format does not store the multi-view extras (loss.w_multiview needs
  # data.format='memory').
  views_only = {"view_group", "camera_rotation"}
  assert sorted(set(a.extras) - views_only) == sorted(set(b.extras) - views_only)
  for k in set(a.extras) & set(b.extras):
    np.testing.assert_array_equal(a.extras[k], b.extras[k], err_msg=k)


@pytest.mark.parametrize("source", ["h36m", "humaneva", "mocap"])
def test_prepared_equals_the_in_memory_loader(tmp_path, source):
  d = str(tmp_path / "files")
  if source == "h36m":
    write_tiny_h36m(d, subjects=("S1", "S5", "S9", "S11"), actions=("Walking", "Eating 2"),
                    frames=6)
    config = _h36m_config(d, train_subjects="S1,S5", test_subjects="S9,S11")
  elif source == "humaneva":
    write_tiny_humaneva(d)
    config = _humaneva_config(d)
  else:
    config = _mocap_config(d)
  path = tfds_data.prepare(config)
  assert path.startswith(os.path.join(tfds_data.prepared_dir(config), f"posemachine_{source}"))
  assert any(f.endswith("-of-00001") and ".array_record" in f for f in os.listdir(path))
  for split in tfds_data.SPLITS:
    assert_same(pipeline.load_split(config, split, "tfds"),
                pipeline.load_split(config, split, "memory"))
  # Other data settings are another dataset: not prepared yet, a clear error.
  if source == "h36m":
    other = _h36m_config(d, train_subjects="S1,S5", test_subjects="S9,S11", downsample=2)
    with pytest.raises(DataError, match=r"(?s)No prepared h36m dataset.*posemachine.data.prepare"):
      pipeline.load_split(other, "train", "tfds")


@pytest.fixture(scope="module")
def prepared_h36m(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("h36m"))
  write_tiny_h36m(d, subjects=("S1", "S5", "S6", "S9", "S11"), actions=("Walking", "Eating 2",
                                                                         "Sitting"), frames=12)
  config = _h36m_config(d, train_subjects="S1,S5,S6", test_subjects="S9,S11")
  tfds_data.prepare(config)
  return config


@pytest.mark.parametrize("processes", [2, 3, 5])
def test_process_shards_are_disjoint_and_complete(prepared_h36m, processes):
  config = prepared_h36m
  full = tfds_data.load_split(config, "train")
  shards = [tfds_data.load_split(config, "train", p, processes) for p in range(processes)]
  names = [list(zip(s.subject, s.action, s.camera)) for s in shards]
  flat = [n for part in names for n in part]
  assert len(flat) == len(set(flat)) == full.num_sequences  # disjoint, complete
  assert sum(s.num_frames for s in shards) == full.num_frames
  for p, s in enumerate(shards):  # shard p = sequences p, p + P, ...: the same frames.
    idx = np.arange(full.num_sequences)[p::processes]
    np.testing.assert_array_equal(s.pose_3d, full.select(np.isin(
        np.arange(full.num_sequences), idx)).pose_3d)
    assert "process" in s.source
  # Val/test are read whole by every process; shard_by_process=False reads all.
  assert tfds_data.load_split(config, "test", 1, processes).num_sequences == \
      tfds_data.load_split(config, "test").num_sequences
  config.data.shard_by_process = False
  assert tfds_data.load_split(config, "train", 1, processes).num_sequences == full.num_sequences
  config.data.shard_by_process = True


@pytest.mark.parametrize("by", ["subject", "sequence"])
def test_labelled_fraction_on_shards_equals_one_process(prepared_h36m, by):
  """Each process draws the labelled subjects (sequences) over the whole split, so the
  shards together label exactly what a single process labels."""
  config = prepared_h36m
  full = labels.apply_labelled_fraction(tfds_data.load_split(config, "train"), 0.4, by, 3)
  want = {k for k, h in zip(zip(full.subject, full.action, full.camera), full.has_3d) if h}
  assert 0 < len(want) < full.num_sequences
  got = set()
  for p in range(2):
    shard = tfds_data.load_split(config, "train", p, 2)
    assert shard.split_index is not None and len(shard.split_subjects) == full.num_sequences
    shard = labels.apply_labelled_fraction(shard, 0.4, by, 3)
    got |= {k for k, h in zip(zip(shard.subject, shard.action, shard.camera), shard.has_3d)
            if h}
  assert got == want
  # A dataset prepared before metadata.json listed the subjects: they are read from records.
  meta_path = os.path.join(tfds_data.dataset_path(config), "metadata.json")
  with open(meta_path) as f:
    meta = json.load(f)
  try:
    with open(meta_path, "w") as f:
      json.dump({k: v for k, v in meta.items() if k != "split_subjects"}, f)
    shard = tfds_data.load_split(config, "train", 1, 2)
    assert shard.split_subjects == tuple(full.subject)
  finally:
    with open(meta_path, "w") as f:
      json.dump(meta, f)


def test_sharded_host_batches_draw_from_the_own_shard(prepared_h36m, monkeypatch):
  config = prepared_h36m
  config.data.format = "tfds"
  config.train.batch_size = 8
  monkeypatch.setattr(pipeline, "process_sharded", lambda c: True)  # as with 2 processes
  shard = tfds_data.load_split(config, "train", 1, 2)
  a = pipeline.train_batch(shard, config, 5, num_processes=2, process_index=1)
  b = pipeline.train_batch(shard, config, 5, num_processes=2, process_index=1)
  assert a["pose_3d"].shape[0] == 4
  np.testing.assert_array_equal(a["pose_2d"], b["pose_2d"])  # (seed, step, process)
  frames = shard.pose_3d.reshape(len(shard.pose_3d), -1)
  for w in a["pose_3d"].reshape(4, a["pose_3d"].shape[1], -1):
    assert all((frames == f).all(-1).any() for f in w)  # every frame is from the shard
  config.data.format = "memory"


def test_missing_and_corrupt_files_give_data_errors(tmp_path):
  d = str(tmp_path / "files")
  write_tiny_h36m(d, subjects=("S1", "S9"), actions=("Walking",), frames=10)
  config = _h36m_config(d, train_subjects="S1", test_subjects="S9")
  with pytest.raises(DataError, match=r"(?s)No prepared h36m.*prepared.*posemachine.data.prepare"):
    pipeline.load_split(config, "train", "tfds")
  # A missing source file at prepare time: the loader's error, naming the file.
  config_missing = _h36m_config(str(tmp_path / "empty"), train_subjects="S1", test_subjects="S9")
  os.makedirs(config_missing.data.dir)
  with pytest.raises(DataError, match="data_3d_h36m.npz"):
    tfds_data.prepare(config_missing)
  path = tfds_data.prepare(config)
  train_file = [f for f in os.listdir(path) if "-train.array_record" in f][0]
  full = os.path.join(path, train_file)
  data = open(full, "rb").read()
  with open(full, "wb") as f:  # truncated
    f.write(data[: len(data) // 2])
  with pytest.raises(DataError, match=r"(?s)train split.*corrupt"):
    pipeline.load_split(config, "train", "tfds")
  with open(full, "wb") as f:  # bytes flipped in the middle
    f.write(data[:100] + bytes(b ^ 0xFF for b in data[100:200]) + data[200:])
  with pytest.raises(DataError, match=r"(?s)train split"):
    pipeline.load_split(config, "train", "tfds")
  os.remove(full)
  with pytest.raises(DataError, match=r"missing file of the prepared train split"):
    pipeline.load_split(config, "train", "tfds")
  # prepare --overwrite rebuilds it.
  tfds_data.prepare(config, overwrite=True)
  assert_same(pipeline.load_split(config, "train", "tfds"),
              pipeline.load_split(config, "train", "memory"))


def test_synthetic_has_no_prepared_format():
  config = config_defaults.get_config()
  config.data.format = "tfds"
  with pytest.raises(DataError, match="synthetic source is generated in memory"):
    pipeline.load_split(config, "train")


def test_prepare_cli_then_main_trains_on_the_prepared_files_as_in_memory(tmp_path):
  d = str(tmp_path / "files")
  write_tiny_h36m(d, subjects=("S1", "S5", "S9", "S11"), actions=("Walking", "Eating 2"),
                  frames=10)
  data_flags = [f"--config.data.dir={d}", "--config.data.h36m.train_subjects=S1,S5",
                "--config.data.h36m.test_subjects=S9,S11"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1")
  r = subprocess.run([sys.executable, "-m", "posemachine.data.prepare",
                      "--config=configs/h36m.py", *data_flags], cwd=REPO, env=env,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "Prepared h36m" in r.stdout and "train: 16 sequences" in r.stdout, r.stdout
  results = {}
  for fmt in ("memory", "tfds"):
    work = tmp_path / fmt
    cmd = [sys.executable, "-m", "posemachine.main", "--config=configs/h36m.py",
           f"--workdir={work}", *data_flags, f"--config.data.format={fmt}",
           "--config.train.num_steps=2", "--config.model.hidden=16",
           "--config.model.projector_hidden=16", "--config.train.batch_size=8",
           "--config.eval.batch_size=8", "--config.data.window=4", "--config.train.eval_every=2",
           "--config.train.warmup_steps=1", "--config.eval.num_plot_frames=1"]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(work / "eval.json") as f:
      results[fmt] = json.load(f)
  assert results["tfds"]["overall"] == results["memory"]["overall"]
  # Missing prepared data through the CLI: the project's error, no traceback.
  cmd[cmd.index(f"--config.data.dir={d}")] = f"--config.data.dir={tmp_path}"
  r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode != 0 and "posemachine: error: No prepared h36m dataset" in r.stderr
  assert "Traceback" not in r.stderr
