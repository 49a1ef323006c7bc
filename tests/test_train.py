"""End to end: train a few steps, evaluate, resume, checkpoints, 1 vs 8 devices."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from posemachine import checkpoints, config_defaults, train
from posemachine.data import pipeline
from posemachine.models import machine
import tiny_config as tiny_config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


tiny_config = tiny_config_lib.get_config


def params_of(workdir, config):
  mesh = train.create_mesh(config.train.num_devices)
  model = machine.from_config(config.model, config.data.num_joints)
  tx = train.make_optimizer(config.train)
  state = train.init_state(model, tx, jax.random.key(1), config.data.num_joints, 8)
  del mesh
  mgr = checkpoints.make_manager(workdir, config.train.checkpoint_keep)
  restored = checkpoints.restore(mgr, state)
  mgr.close()
  return restored


def test_train_evaluate_and_resume(tmp_path):
  config = tiny_config()
  full = str(tmp_path / "full")
  results = train.train_and_evaluate(config, full)
  for name in ("eval.json", "metrics.jsonl", "config.json", "per_joint_error.png",
               "skeletons.png", "training_curves.png"):
    assert os.path.getsize(os.path.join(full, name)) > 0, name
  assert os.listdir(os.path.join(full, "tensorboard"))
  with open(os.path.join(full, "eval.json")) as f:
    saved = json.load(f)
  assert saved["checkpoint_step"] == 6 and saved["split"] == "test"
  assert set(saved["per_action"]) == {"walk", "squat"}
  assert np.isfinite(saved["overall"]["mpjpe"]) and saved["overall"]["mpjpe"] > 0
  assert saved["num_frames"] == 2 * 24  # every test frame evaluated exactly once
  assert results["overall"] == saved["overall"]
  with open(os.path.join(full, "metrics.jsonl")) as f:
    lines = [json.loads(l) for l in f]
  assert [l["step"] for l in lines if "train/loss" in l] == [2, 4, 6]
  assert [l["step"] for l in lines if "val/mpjpe" in l] == [3, 6]

  # An interrupted run: the same run with its last checkpoint gone (as if killed after
  # step 3's checkpoint). Rerunning resumes at step 3 and ends at identical parameters.
  part = str(tmp_path / "part")
  shutil.copytree(full, part)
  shutil.rmtree(os.path.join(part, "checkpoints", "6"))
  assert params_of(part, config).step == 3
  train.train_and_evaluate(config, part)
  a, b = params_of(full, config), params_of(part, config)
  assert int(b.step) == 6
  jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
  jax.tree.map(np.testing.assert_array_equal, a.opt_state, b.opt_state)

  # --mode=eval on the finished workdir reproduces the figures.
  again = train.evaluate_workdir(config, part)
  assert again["overall"]["mpjpe"] == pytest.approx(saved["overall"]["mpjpe"], rel=1e-5)

  # A workdir holding a checkpoint from an incompatible config is refused, clearly.
  other = tiny_config()
  other.model.hidden = 24
  with pytest.raises(checkpoints.IncompatibleWorkdirError,
                     match=r"(?s)incompatible config.*model.hidden: workdir 16 vs config 24"):
    train.train_and_evaluate(other, full)


def test_checkpoint_round_trip_is_exact(tmp_path):
  config = tiny_config()
  model = machine.from_config(config.model, 17)
  tx = train.make_optimizer(config.train)
  state = train.init_state(model, tx, jax.random.key(7), 17, 8)
  mgr = checkpoints.make_manager(str(tmp_path), 2)
  checkpoints.save(mgr, 5, state, {checkpoints.BEST_METRIC: 1.0})
  mgr.wait_until_finished()
  blank = train.init_state(model, tx, jax.random.key(8), 17, 8)
  restored = checkpoints.restore(mgr, blank)
  mgr.close()
  jax.tree.map(np.testing.assert_array_equal, state, restored)
  assert type(restored.opt_state) is type(state.opt_state)


def test_one_and_eight_devices_agree():
  assert len(jax.devices()) == 8, "tests/conftest.py fakes 8 CPU devices"
  config = tiny_config()
  seqs = pipeline.load_split(config, "train")
  batch = pipeline.train_batch(seqs, config, step=1)
  model = machine.from_config(config.model, 17)
  tx = train.make_optimizer(config.train)
  results = []
  for n in (1, 8):
    mesh = train.create_mesh(n)
    state = jax.device_put(train.init_state(model, tx, jax.random.key(0), 17, 8),
                           jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    step = train.make_train_step(model, tx, config.loss, mesh)
    sharded = train.shard_batch(batch, mesh)
    assert len(sharded["pose_2d"].sharding.device_set) == n
    for _ in range(2):
      state, m = step(state, sharded)
    results.append(jax.device_get((state.params, m)))
  (p1, m1), (p8, m8) = results
  np.testing.assert_allclose(m1["loss"], m8["loss"], rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p1, p8)


def test_main_cli_rejects_unknown_key_and_missing_h36m(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-m", "posemachine.main", "--config=configs/synthetic.py",
         f"--workdir={tmp_path}", "--config.train.num_stepz=3"]
  r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert r.returncode != 0 and "Unknown config key 'train.num_stepz'" in r.stderr
  assert "Did you mean 'train.num_steps'?" in r.stderr and "Traceback" not in r.stderr
  cmd = [sys.executable, "-m", "posemachine.main", "--config=configs/h36m.py",
         f"--workdir={tmp_path}", f"--config.data.dir={tmp_path}"]
  r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert r.returncode != 0
  assert "data_3d_h36m.npz" in r.stderr and "prepare_data_h36m.py" in r.stderr


@pytest.mark.parametrize("max_norm", [0.5, 100.0])  # clipped, and left alone
def test_clip_reusing_the_step_norm_matches_optax(max_norm):
  import optax  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  g = {"a": rng.normal(size=(30, 7)).astype(np.float32),
       "b": rng.normal(size=(5,)).astype(np.float32)}
  ref, ref_state = optax.clip_by_global_norm(max_norm).update(g, optax.EmptyState())
  ours = train.clip_by_global_norm(max_norm)
  for kwargs in ({}, {"grad_norm": optax.tree.norm(g)}):
    got, state = ours.update(g, ours.init(g), **kwargs)
    for k in g:
      np.testing.assert_allclose(got[k], ref[k], rtol=1e-6, atol=1e-7)
    assert jax.tree.structure(state) == jax.tree.structure(ref_state)
  # Checkpoints keep their layout: the optimiser state has optax's structure.
  chain = lambda clip: optax.chain(clip, optax.adam(1e-3))
  assert (jax.tree.structure(chain(ours).init(g))
          == jax.tree.structure(chain(optax.clip_by_global_norm(max_norm)).init(g)))
