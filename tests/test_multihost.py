"""Multi-process training (2 processes x 4 CPU devices) against 1 x 8; the mesh's 'model' axis."""

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from posemachine import checkpoints, config_defaults, distributed, train
from posemachine.data import pipeline
from posemachine.models import machine
import tiny_config as tiny_config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MULTIHOST_TRAIN = dict(num_steps=4, log_every=1, eval_every=4)


def tiny_config():
  return tiny_config_lib.get_config(**MULTIHOST_TRAIN)


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return {d["step"]: d["train/loss"] for d in map(json.loads, f) if "train/loss" in d}


def reference_run(config, mesh):
  """What train.train_and_evaluate computes for steps 1..num_steps, on one process."""
  seqs = pipeline.load_split(config, "train")
  model = machine.from_config(config.model, 17)
  tx = train.make_optimizer(config.train)
  init = lambda: train.init_state(model, tx, jax.random.key(config.seed), 17, config.data.window)
  sharding = distributed.state_shardings(jax.eval_shape(init), mesh)
  state = jax.jit(init, out_shardings=sharding)()
  run_step = train._make_step_runner(config, seqs, model, tx, mesh, sharding)  # pylint: disable=protected-access
  losses_by_step = {}
  for step in range(1, config.train.num_steps + 1):
    state, m = run_step(state, step)
    losses_by_step[step] = float(m["loss"])
  return jax.device_get(state), losses_by_step


def restore(workdir, config, mesh):
  model = machine.from_config(config.model, 17)
  tx = train.make_optimizer(config.train)
  abstract = jax.eval_shape(lambda: train.init_state(model, tx, jax.random.key(0), 17, 8))
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                         sharding=NamedSharding(mesh, P())),
                          abstract)
  mgr = checkpoints.make_manager(workdir, 3)
  state = checkpoints.restore(mgr, abstract)
  mgr.close()
  return jax.device_get(state)


def test_two_processes_match_one(tmp_path):
  multi = str(tmp_path / "multi")
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1",
             XLA_FLAGS="--xla_force_host_platform_device_count=4")
  port = free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-m", "posemachine.main", f"--config={tiny_config_lib.PATH}",
       *tiny_config_lib.overrides(**MULTIHOST_TRAIN), f"--workdir={multi}", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
       f"--process_id={i}"], cwd=REPO, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]
  try:
    # The 1-process, 8-device reference, in this process while the two run.
    config = tiny_config()
    mesh = train.create_mesh()
    ref_state, want = reference_run(config, mesh)
    logs = [p.communicate(timeout=240)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-4000:]
  assert "2 process(es)" in logs[0] and "process 1 of 2, 4 local / 8 global devices" in logs[1]

  # Same losses, every step (process 0 alone wrote the metrics: one line per step).
  got = losses(multi)
  assert sorted(got) == [1, 2, 3, 4]
  np.testing.assert_allclose([got[s] for s in sorted(got)], [want[s] for s in sorted(got)],
                             rtol=1e-5, atol=1e-6)
  print("1x8 losses", [want[s] for s in sorted(want)], "\n2x4 losses",
        [got[s] for s in sorted(got)])
  # The checkpoint the two processes wrote together restores in one process.
  restored = restore(multi, config, mesh)
  assert int(restored.step) == 4
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6),
               ref_state, restored)
  with open(os.path.join(multi, "eval.json")) as f:
    assert json.load(f)["checkpoint_step"] == 4


def _steps(config, mesh, batch, n=3):
  model = machine.from_config(config.model, 17)
  tx = train.make_optimizer(config.train)
  init = lambda: train.init_state(model, tx, jax.random.key(0), 17, config.data.window)
  sharding = distributed.state_shardings(jax.eval_shape(init), mesh)
  state = jax.jit(init, out_shardings=sharding)()
  step = train.make_train_step(model, tx, config.loss, mesh, sharding)
  for _ in range(n):
    state, m = step(state, train.shard_batch(batch, mesh))
  return state, jax.device_get(m)


def test_model_axis_4x2_matches_8x1():
  assert len(jax.devices()) == 8, "tests/conftest.py fakes 8 CPU devices"
  config = tiny_config()
  batch = pipeline.train_batch(pipeline.load_split(config, "train"), config, step=1)
  s81, m81 = _steps(config, train.create_mesh(8, 1), batch)
  s42, m42 = _steps(config, train.create_mesh(8, 2), batch)
  stem = s42.params["transformer"]["stem"]["kernel"]
  assert stem.sharding.spec == P(None, "model")
  assert stem.addressable_shards[0].data.shape == (stem.shape[0], 8)  # 16 wide, split in 2
  assert s42.opt_state[1][0].mu["transformer"]["stem"]["kernel"].sharding.spec == P(None, "model")
  np.testing.assert_allclose(m42["loss"], m81["loss"], rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6),
               jax.device_get(s81.params), jax.device_get(s42.params))
  print(f"loss of step 3: 8x1 {float(m81['loss'])!r}, 4x2 {float(m42['loss'])!r}")


def test_param_rules_for_paper_sized_model():
  model = machine.PoseMachine(hidden=1024, projector_hidden=1024)
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 4, 17, 2)))["params"]
  specs = {"/".join(str(k.key) for k in path): distributed.param_spec(
      "/".join(str(k.key) for k in path), x.shape, 4)
           for path, x in jax.tree_util.tree_flatten_with_path(params)[0]}
  assert specs["transformer/lstm_0/w_in"] == P(None, "model")
  assert specs["transformer/lstm_1/w_rec"] == P(None, "model")
  assert specs["transformer/head/kernel"] == P("model", None)
  assert specs["projector/projection/fc2/kernel"] == P("model", None)
  assert specs["transformer/head/bias"] == P()  # 51 outputs: replicated
  split = sum(v != P() for v in specs.values())
  assert split >= 12, specs
  # model axis 1, or a dimension the axis does not divide: replicated.
  assert distributed.param_spec("transformer/stem/kernel", (53, 1024), 1) == P()
  assert distributed.param_spec("transformer/stem/kernel", (53, 1000), 3) == P()
  config = config_defaults.get_config()
  config.mesh.model = 0
  with pytest.raises(config_defaults.ConfigError, match="mesh.model"):
    config_defaults.validate(config)
  with pytest.raises(ValueError, match="mesh.model=3 must divide"):
    train.create_mesh(8, 3)


CLUSTER_VARS = ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "SLURM_STEP_NODELIST",
                "SLURM_NTASKS", "OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE",
                "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES")


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "16"}, "slurm"),
    ({"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "1"}, None),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16"}, None),  # sbatch shell, outside srun
    ({"OMPI_MCA_orte_hnp_uri": "1.2.3.4:5", "OMPI_COMM_WORLD_SIZE": "4"}, "openmpi"),
    ({"TPU_WORKER_HOSTNAMES": "t-0,t-1,t-2,t-3"}, "tpu-gke"),
    ({"TPU_WORKER_HOSTNAMES": "t-0"}, None),
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, "explicit"),
])
def test_cluster_environment(monkeypatch, env, expected):
  for k in CLUSTER_VARS:
    monkeypatch.delenv(k, raising=False)
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  assert distributed.cluster_environment() == expected
  if expected is None:  # alone: 'auto' does not start jax.distributed.
    assert not distributed.initialize("auto")
  assert not distributed.initialize("off")
