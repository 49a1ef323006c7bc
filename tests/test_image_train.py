"""The full machine from pixels: composed apply, staged training with frozen parts, resume,
evaluation files (PCK, per-stage results, the prediction sheet)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posemachine import errors, image_train, train
from posemachine.data import pipeline
from posemachine.models import image_machine

import tiny_image_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_machine_outputs_shapes():
  config = tiny_image_config.get_config()
  model = image_machine.from_config(config.model, 17)
  frames = jax.random.uniform(jax.random.key(0), (2, 3, 32, 32, 3))
  params = model.init(jax.random.key(1), frames)
  out = model.apply(params, frames)
  assert out["heatmaps"].shape == (2, 3, 2, 16, 16, 17)
  assert out["pose_2d"].shape == (2, 3, 17, 2)
  assert out["pose_3d_intermediate"].shape == out["pose_3d"].shape == (2, 3, 17, 3)
  assert out["proj_2d"].shape == (2, 3, 17, 2)
  np.testing.assert_allclose(out["pose_3d"][..., 0, :], 0.0, atol=1e-6)  # root-relative
  with pytest.raises(ValueError, match="B, T, S, S, 3"):
    model.apply(params, frames[0])


def test_stage_plan_counts_steps_globally():
  config = tiny_image_config.get_config()
  plan = image_train.stage_plan(config)
  assert plan == [("encoder", 1, 3), ("transformer", 4, 5), ("projector", 6, 7),
                  ("end_to_end", 8, 9)]
  assert [image_train.stage_of(plan, s) for s in (0, 3, 4, 9, 10)] == [0, 0, 1, 3, 3]
  for name in image_train.STAGES:
    config.stages[name].steps = 0
  with pytest.raises(errors.ConfigError, match="at least one training stage"):
    image_train.stage_plan(config)


@pytest.mark.parametrize("name", ["encoder", "transformer", "projector"])
def test_frozen_parts_do_not_change_in_a_stage(name):
  config = tiny_image_config.get_config()
  model = image_machine.from_config(config.model, 17)
  mesh = train.create_mesh(8)
  data = image_train.ClipData(pipeline.load_split(config, "train"))
  params = model.init(jax.random.key(0), jnp.zeros((1, 1, 32, 32, 3)))["params"]
  tx = image_train.make_stage_optimizer(config, name, params)
  state = train.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                           opt_state=tx.init(params))
  before = jax.device_get(params)
  step_fn = image_train.make_stage_step(model, tx, config, name, mesh, None)
  for step in (1, 2):
    batch = image_train.train_windows(data, config, name, step)
    state, metrics = step_fn(state, train.shard_batch(batch, mesh))
  after = jax.device_get(state.params)
  assert np.isfinite(float(metrics["loss"]))
  trained = image_train.TRAINED[name]
  for group in before:
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before[group]),
                                                     jax.tree.leaves(after[group])))
    assert same == (group not in trained), (name, group)


def test_end_to_end_staged_run_resumes_and_writes_results(tmp_path):
  workdir = str(tmp_path / "run")
  cmd = [sys.executable, "-m", "posemachine.main", f"--config={tiny_image_config.PATH}",
         f"--workdir={workdir}"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  # First only stages 1-2 (steps 1-5), then the whole schedule resumes from step 5.
  first = subprocess.run(cmd + ["--config.stages.projector.steps=0",
                                "--config.stages.end_to_end.steps=0"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert first.returncode == 0, first.stderr[-3000:]
  with open(os.path.join(workdir, "eval.json")) as f:
    partial = json.load(f)
  assert partial["checkpoint_step"] == 5
  os.remove(os.path.join(workdir, "config.json"))  # the schedule grew: same model shapes.
  second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "Resumed from checkpoint step 5 (stage transformer)" in second.stderr
  assert "Stage 3/4 'projector': steps 6-7" in second.stderr
  with open(os.path.join(workdir, "eval.json")) as f:
    results = json.load(f)
  o = results["overall"]
  assert 0.0 <= o["pck_2d"] <= 100.0 and o["error_2d_px"] > 0 and o["mpjpe"] > 0
  assert results["checkpoint_step"] == 9
  # 'transformer' was the last stage of the first run; 'projector' is in stages.eval_after.
  assert {"transformer", "projector", "end_to_end"} == set(results["per_stage"])
  assert "end_to_end_gain_mm" in results
  for f in ("image_predictions.png", "eval_table.md", "metrics.jsonl"):
    assert os.path.getsize(os.path.join(workdir, f)) > 0
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert any("train_encoder/heatmap" in r for r in rows)
  assert any("train_end_to_end/3d" in r for r in rows)


def test_nonfinite_step_is_never_checkpointed_between_log_points(tmp_path, monkeypatch):
  """Step 1 is non-finite (skipped); logs come only every 100 steps (and at a stage's last
  step, 3), the first checkpoint at step 2: the run stops there naming step 1, and writes no
  checkpoint."""
  real = image_train.make_stage_step
  calls = {"n": 0}

  def poisoned(*args, **kwargs):
    step_fn = real(*args, **kwargs)

    def step(state, batch):
      calls["n"] += 1
      state, m = step_fn(state, batch)
      return state, dict(m, **{train.SKIPPED: jnp.float32(calls["n"] == 1)})
    return step
  monkeypatch.setattr(image_train, "make_stage_step", poisoned)
  config = tiny_image_config.get_config()
  config.train.log_every, config.train.eval_every = 100, 2
  with pytest.raises(errors.NonFiniteError, match="at step 1"):
    image_train.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints", "2"))
