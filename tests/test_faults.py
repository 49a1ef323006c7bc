"""Injected faults: NaN/Inf in the step, corrupt or unwritable checkpoints, untrusted configs."""

import builtins
import contextlib
import errno
import json
import os
import re
import shutil

from etils import epath
import jax
import numpy as np
import pytest

from posemachine import checkpoints, errors, inference, train
from posemachine.data import pipeline
from posemachine.models import machine
import tiny_config as tiny_config_lib


def _poisoned_batches(monkeypatch, bad_steps, value):
  """Makes pipeline.train_batch put `value` into pose_2d at the given steps."""
  real = pipeline.train_batch

  def batch(seqs, config, step, *args, **kwargs):
    b = real(seqs, config, step, *args, **kwargs)
    if step in bad_steps:
      b = dict(b, pose_2d=np.full_like(b["pose_2d"], value))
    return b
  monkeypatch.setattr(pipeline, "train_batch", batch)


def _train_lines(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [d for d in map(json.loads, f) if "train/skipped" in d]


# ------------------------------------------------------------------------ numerical faults


def test_step_skips_nonfinite_update_and_flags_groups():
  config = tiny_config_lib.get_config()
  mesh = train.create_mesh(1)
  model = machine.from_config(config.model, 17)
  tx = train.make_optimizer(config.train)
  state = train.init_state(model, tx, jax.random.key(0), 17, 8)
  before = jax.device_get(state)
  step = train.make_train_step(model, tx, config.loss, mesh)
  batch = pipeline.train_batch(pipeline.load_split(config, "train"), config, step=1)
  # 3e38: a finite 3D label whose squared error overflows to Inf.
  for field, value in (("pose_2d", np.nan), ("pose_2d", np.inf), ("pose_3d", 3e38)):
    bad = dict(batch, **{field: np.full_like(batch[field], value)})
    state, m = step(state, train.shard_batch(bad, mesh))
    m = jax.device_get(m)
    assert m[train.SKIPPED] == 1.0, (field, value)
    assert m["_nonfinite_grads"].any(), (field, value)
  assert int(state.step) == 3  # the counter advances; params and Adam state do not.
  jax.tree.map(np.testing.assert_array_equal, before.params, jax.device_get(state.params))
  jax.tree.map(np.testing.assert_array_equal, before.opt_state,
               jax.device_get(state.opt_state))
  for _ in range(2):  # good batches still train (Adam's count, hence the lr, was kept at 0).
    state, m = step(state, train.shard_batch(batch, mesh))
    assert jax.device_get(m[train.SKIPPED]) == 0.0
  after = jax.device_get(state.params)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(after))
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before.params),
                                                      jax.tree.leaves(after)))


def test_nonfinite_skip_counts_and_keeps_params_finite(tmp_path, monkeypatch):
  _poisoned_batches(monkeypatch, {2, 5}, np.nan)
  config = tiny_config_lib.get_config(nonfinite="skip")
  config.data.device_sampling = False  # the poison goes into the host pipeline's batches.
  results = train.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(results["overall"]["mpjpe"])
  lines = _train_lines(str(tmp_path))
  assert [(d["step"], d["train/skipped"]) for d in lines] == [(2, 1.0), (4, 0.0), (6, 1.0)]
  assert all(np.isfinite(d["train/loss"]) for d in lines)  # means over the good steps.
  mgr = checkpoints.make_manager(str(tmp_path), 3)
  model = machine.from_config(config.model, 17)
  tx = train.make_optimizer(config.train)
  state = checkpoints.restore(mgr, train.init_state(model, tx, jax.random.key(1), 17, 8))
  mgr.close()
  assert int(state.step) == 6
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))


def test_nonfinite_stop_names_step_and_tensor(tmp_path, monkeypatch):
  _poisoned_batches(monkeypatch, {3}, np.inf)
  config = tiny_config_lib.get_config()  # nonfinite='stop' is the default.
  config.data.device_sampling = False  # the poison goes into the host pipeline's batches.
  assert config.train.nonfinite == "stop"
  with pytest.raises(errors.NonFiniteError,
                     match=r"(?s)at training step 3: the loss \(.*gradients of param "
                     r"group\(s\) .*train.nonfinite='skip'") as e:
    train.train_and_evaluate(config, str(tmp_path))
  print(e.value)
  # Stopped at step 3's eval point, before its checkpoint: nothing non-finite was saved.
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints", "3"))


def test_a_preemption_after_a_nonfinite_step_stops_instead_of_saving(tmp_path, monkeypatch):
  """SIGTERM between log points: the steps since the last log are checked before the
  preemption checkpoint, which is never written past a non-finite step."""
  from posemachine import distributed  # pylint: disable=g-import-not-at-top
  _poisoned_batches(monkeypatch, {2}, np.inf)
  monkeypatch.setattr(distributed.PreemptionWatcher, "should_stop",
                      lambda self, step: step == 3)
  config = tiny_config_lib.get_config(num_steps=6, log_every=6, eval_every=6)
  config.data.device_sampling = False
  with pytest.raises(errors.NonFiniteError, match="at training step 2"):
    train.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints", "3"))


def test_nonfinite_choice_is_validated():
  config = tiny_config_lib.get_config(nonfinite="ignore")
  with pytest.raises(errors.ConfigError, match="train.nonfinite"):
    train.train_and_evaluate(config, "/nonexistent-unused")


# ----------------------------------------------------------------------- corrupted state


def _state(seed):
  config = tiny_config_lib.get_config()
  model = machine.from_config(config.model, 17)
  tx = train.make_optimizer(config.train)
  return train.init_state(model, tx, jax.random.key(seed), 17, 8)


@pytest.fixture(scope="module")
def three_checkpoints(tmp_path_factory):
  """A workdir with complete checkpoints of steps 1, 2, 3 (different params each)."""
  workdir = str(tmp_path_factory.mktemp("ckpts"))
  mgr = checkpoints.make_manager(workdir, 3)
  for step in (1, 2, 3):
    checkpoints.save(mgr, step, _state(step).replace(step=step),
                     {checkpoints.BEST_METRIC: 10.0 - step})
  checkpoints.wait(mgr)
  mgr.close()
  return workdir


def _largest_file(step_dir):
  files = [os.path.join(r, f) for r, _, fs in os.walk(step_dir) for f in fs]
  return max(files, key=os.path.getsize)


def _truncate(path):
  data = open(path, "rb").read()
  open(path, "wb").write(data[:len(data) // 2])


def _flip_bit(path):
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0x10
  open(path, "wb").write(bytes(data))


CORRUPTIONS = {
    "truncated data": lambda d: _truncate(_largest_file(d)),
    "bit flip in data": lambda d: _flip_bit(_largest_file(d)),  # Orbax alone misses this.
    "truncated metadata": lambda d: _truncate(os.path.join(d, "default", "_METADATA")),
    "deleted file": lambda d: os.remove(_largest_file(d)),
    "digest of a complete step lost, data truncated": lambda d: (
        os.remove(os.path.join(d, checkpoints.DIGEST)), _truncate(_largest_file(d))),
}


def _restore(workdir, seed=9):
  mgr = checkpoints.make_manager(workdir, 3)
  try:
    return checkpoints.restore(mgr, _state(seed)), mgr
  except BaseException:
    mgr.close()
    raise


@pytest.mark.parametrize("fault", sorted(CORRUPTIONS))
def test_corrupt_latest_checkpoint_falls_back(three_checkpoints, tmp_path, fault, caplog):
  workdir = str(tmp_path / "w")
  shutil.copytree(three_checkpoints, workdir)
  CORRUPTIONS[fault](os.path.join(workdir, "checkpoints", "3"))
  state, mgr = _restore(workdir)
  try:
    assert int(state.step) == 2, fault
    jax.tree.map(np.testing.assert_array_equal, _state(2).params, state.params)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "Checkpoint step 3" in warned and "corrupt_checkpoints" in warned, warned
    print(f"{fault}: {warned[:400]}")
    # The damaged step is kept for inspection, out of the way: training saves step 3 again.
    assert os.path.isdir(os.path.join(workdir, "corrupt_checkpoints", "3"))
    assert mgr.all_steps() == [1, 2]
    checkpoints.save(mgr, 3, state.replace(step=3))
    checkpoints.wait(mgr)
  finally:
    mgr.close()
  state, mgr = _restore(workdir)
  mgr.close()
  assert int(state.step) == 3


def test_loading_a_corrupt_step_for_inference_names_the_good_ones(three_checkpoints, tmp_path):
  """inference (predict) reads only: a damaged latest step is reported with the readable
  alternatives, left in place, and never met with advice to delete the checkpoints."""
  workdir = str(tmp_path / "w")
  shutil.copytree(three_checkpoints, workdir)
  checkpoints.check_workdir_config(workdir, tiny_config_lib.get_config())  # config.json
  _truncate(_largest_file(os.path.join(workdir, "checkpoints", "3")))
  with pytest.raises(errors.CheckpointError,
                     match=r"(?s)checkpoint step 3 in .* is unreadable .*Other steps there: "
                     r"\[1, 2\]; load one of them \(predict: --checkpoint=N\)") as e:
    inference.load_checkpoint(workdir)
  assert "delete" not in str(e.value)
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "3"))
  ckpt = inference.load_checkpoint(workdir, 2)
  jax.tree.map(np.testing.assert_array_equal, ckpt.params, _state(2).params)


def test_no_good_checkpoint_raises(three_checkpoints, tmp_path):
  workdir = str(tmp_path / "w")
  shutil.copytree(three_checkpoints, workdir)
  for step in (1, 2, 3):
    _flip_bit(_largest_file(os.path.join(workdir, "checkpoints", str(step))))
  with pytest.raises(errors.CheckpointError,
                     match=r"(?s)No readable checkpoint .*step 3: .*CRC-32.*step 1: .*delete the "
                     r"checkpoints directory"):
    _restore(workdir)


def test_full_disk_during_save_surfaces_and_keeps_previous(three_checkpoints, tmp_path,
                                                           monkeypatch):
  workdir = str(tmp_path / "w")
  shutil.copytree(three_checkpoints, workdir)
  state, mgr = _restore(workdir)

  def no_space(self, *args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(self))
  path_cls = type(epath.Path(workdir))
  monkeypatch.setattr(path_cls, "write_text", no_space)
  monkeypatch.setattr(path_cls, "write_bytes", no_space)
  try:
    with pytest.raises(errors.CheckpointError) as e:
      checkpoints.save(mgr, 4, state.replace(step=4))
      checkpoints.wait(mgr)
    print(e.value)
  finally:
    monkeypatch.undo()
    with contextlib.suppress(Exception):  # close() re-raises the save's background errors.
      mgr.close()
  assert re.search(r"(?s)Writing checkpoint step 4 .*No space left on device.*partial files "
                   r"were moved to .*corrupt_checkpoints/4\.orbax-checkpoint-tmp\. The complete "
                   r"checkpoints \[1, 2, 3\] are unchanged", str(e.value)), e.value
  # Only complete steps count (a temporary directory is never restored).
  assert sorted(n for n in os.listdir(os.path.join(workdir, "checkpoints"))
                if n.isdigit()) == ["1", "2", "3"]
  state, mgr = _restore(workdir)
  mgr.close()
  assert int(state.step) == 3
  jax.tree.map(np.testing.assert_array_equal, _state(3).params, state.params)


def test_digest_is_written_when_the_step_commits(tmp_path, monkeypatch):
  """No later save or checkpoints.wait needed: the digest comes with Orbax's commit."""
  monkeypatch.setattr(checkpoints, "_write_digests", lambda manager: None)  # no fallback.
  mgr = checkpoints.make_manager(str(tmp_path), 3)
  try:
    checkpoints.save(mgr, 1, _state(1).replace(step=1), {checkpoints.BEST_METRIC: 5.0})
    mgr.wait_until_finished()  # Orbax's own wait: the step is committed.
    step_dir = os.path.join(str(tmp_path), "checkpoints", "1")
    with open(os.path.join(step_dir, checkpoints.DIGEST)) as f:
      digest = json.load(f)
    assert digest == checkpoints._file_digests(step_dir)  # pylint: disable=protected-access
    assert any(k.startswith("default") for k in digest) and len(digest) >= 5, digest
    checkpoints._verify(mgr, 1)  # pylint: disable=protected-access
  finally:
    mgr.close()


def test_an_error_after_a_save_completes_that_checkpoint_before_the_process_exits(tmp_path):
  """A run stopped by an error (here as main() stops on a PoseMachineError: sys.exit) while
  an asynchronous save is in flight: the save completes and the process exits cleanly."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = f"""
import sys
import numpy as np
from posemachine import checkpoints, errors
manager = checkpoints.make_manager({str(tmp_path)!r}, 2)
state = {{"w": np.arange(4 << 20, dtype=np.float32).reshape(-1, 1024)}}
try:
  with checkpoints.finishing(manager):
    checkpoints.save(manager, 3, state)
    raise errors.NonFiniteError("non-finite at step 5")
except errors.PoseMachineError as e:
  sys.exit(f"posemachine: error: {{e}}")
"""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                     timeout=120)
  assert r.returncode == 1 and "posemachine: error: non-finite at step 5" in r.stderr
  assert "Traceback" not in r.stderr, r.stderr
  step_dir = os.path.join(str(tmp_path), "checkpoints", "3")
  assert os.path.exists(os.path.join(step_dir, checkpoints.DIGEST))
  mgr = checkpoints.make_manager(str(tmp_path), 2)
  try:
    checkpoints._verify(mgr, 3)  # pylint: disable=protected-access
    assert mgr.all_steps() == [3]
  finally:
    mgr.close()


# ------------------------------------------------------------------------ untrusted files


def test_workdir_config_json_is_data_not_code(tmp_path, monkeypatch):
  """A planted config.json is parsed as JSON only: nothing in it is evaluated or run."""
  marker = tmp_path / "marker"
  payload = f"__import__('os').system('touch {marker}')"
  config = tiny_config_lib.get_config()
  saved = json.loads(config.to_json_best_effort())
  saved["model"]["hidden"] = payload  # code where a number belongs ...
  saved["__reduce__"] = payload       # ... and in keys the reader never looks at.
  (tmp_path / "config.json").write_text(json.dumps(saved))
  for name in ("eval", "exec"):
    monkeypatch.setattr(builtins, name, lambda *a, **k: pytest.fail(f"{name} called"))
  with pytest.raises(errors.IncompatibleWorkdirError, match="model.hidden: workdir"):
    checkpoints.check_workdir_config(str(tmp_path), config)
  # The predict/inference path reads the same file into the typed defaults: refused.
  with pytest.raises(errors.ConfigError, match="model.hidden"):
    inference.load_config(str(tmp_path))
  saved["model"]["hidden"] = 16
  (tmp_path / "config.json").write_text(json.dumps(saved))
  with pytest.raises(errors.ConfigError, match="unknown config key '__reduce__'"):
    inference.load_config(str(tmp_path))
  (tmp_path / "config.json").write_text("!!python/object/apply:os.system ['true']")
  with pytest.raises(errors.IncompatibleWorkdirError, match="unreadable"):
    checkpoints.check_workdir_config(str(tmp_path), config)
  assert not marker.exists()


def test_fault_points_are_inert_unless_set_and_validated(monkeypatch):
  from posemachine import faultpoints  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv(faultpoints.ENV, raising=False)
  for point in faultpoints.POINTS:
    faultpoints.reached(point)  # no variable: nothing happens.
  assert faultpoints.parse("checkpoint_commit:2") == ("checkpoint_commit", 2)
  assert faultpoints.parse("eval_batch") == ("eval_batch", 1)
  for bad in ("train_step", "eval_batch:0", "eval_batch:x", ""):
    with pytest.raises(errors.ConfigError, match="POSEMACHINE_KILL_AT"):
      faultpoints.parse(bad)
  monkeypatch.setenv(faultpoints.ENV, "eval_batch:3")
  faultpoints.reached("checkpoint_commit")  # another point: not counted, no kill.
