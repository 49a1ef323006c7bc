"""SIGTERM during training: a complete checkpoint, a clean exit, an exact continuation."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import jax

from posemachine import checkpoints, config_defaults, distributed, train
from posemachine.models import machine
import tiny_config as tiny_config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The tests' tiny config, logging every step, with a constant learning rate so that runs of
# different num_steps follow the same trajectory.
PREEMPT_TRAIN = dict(num_steps=1000, log_every=1, eval_every=1000, schedule="constant")


def model_config():
  c = config_defaults.get_config()
  c.model.hidden = c.model.projector_hidden = 16
  return c


def _env():
  # Same devices and compile options as the test process (tests/conftest.py).
  return dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1",
              XLA_FLAGS="--xla_force_host_platform_device_count=8")


def _cmd(workdir, *extra):
  return [sys.executable, "-m", "posemachine.main", f"--config={tiny_config_lib.PATH}",
          *tiny_config_lib.overrides(**PREEMPT_TRAIN), f"--workdir={workdir}", *extra]


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return {d["step"]: d["train/loss"] for d in map(json.loads, f) if "train/loss" in d}


def _wait_for_step(proc, workdir, step, timeout=150):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if proc.poll() is not None:
      raise AssertionError(f"training exited early ({proc.returncode})")
    try:
      if max(_losses(workdir), default=0) >= step:
        return
    except (OSError, ValueError):
      pass
    time.sleep(0.2)
  raise AssertionError(f"{workdir}: step {step} not reached in {timeout} s")


def _stop(proc, timeout=60):
  proc.send_signal(signal.SIGTERM)
  try:
    out, err = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    raise
  return proc.returncode, out + err


def test_sigterm_saves_and_resumes_exactly(tmp_path):
  part, ref = str(tmp_path / "part"), str(tmp_path / "ref")
  popen = dict(cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  # The run to preempt and an uninterrupted reference, side by side (1000 steps each).
  a = subprocess.Popen(_cmd(part), **popen)
  c = subprocess.Popen(_cmd(ref), **popen)
  try:
    _wait_for_step(a, part, 3)
    rc, log = _stop(a)
    assert rc == 0, log[-3000:]
    found = re.search(r"Preempted \(SIGTERM\): stopped after step (\d+) of 1000 and saved "
                      r"checkpoint \1", log)
    assert found, log[-3000:]
    s = int(found.group(1))
    # The checkpoint of step s is complete (finalised) and restores.
    ckpt_dir = os.path.join(part, "checkpoints")
    assert sorted(os.listdir(ckpt_dir)) == [str(s)]
    assert os.path.exists(os.path.join(ckpt_dir, str(s), "commit_success.txt"))
    config = model_config()
    model = machine.from_config(config.model, 17)
    tx = train.make_optimizer(config.train)
    blank = train.init_state(model, tx, jax.random.key(1), 17, 8)
    mgr = checkpoints.make_manager(part, 3)
    assert int(checkpoints.restore(mgr, blank).step) == s
    mgr.close()
    assert max(_losses(part)) == s
    _wait_for_step(c, ref, s + 2)
  finally:
    for p in (a, c):
      if p.poll() is None:
        p.kill()
        p.wait()

  # Rerun (to step s + 2): it resumes at s and logs the losses the reference logged.
  r = subprocess.run(_cmd(part, f"--config.train.num_steps={s + 2}"), cwd=REPO,
                     env=_env(), capture_output=True, text=True, timeout=150)
  assert r.returncode == 0, r.stderr[-3000:]
  assert f"Resumed from checkpoint step {s}." in r.stderr
  got, want = _losses(part), _losses(ref)
  assert sorted(got) == list(range(1, s + 3))
  for step in range(1, s + 3):
    assert got[step] == want[step], (step, got[step], want[step])
  assert os.path.exists(os.path.join(part, "eval.json"))
  print(f"SIGTERM: checkpoint at step {s}; resumed step {s + 1} loss {got[s + 1]!r} "
        f"(uninterrupted {want[s + 1]!r})")


def test_watcher_flag_and_handler_restored():
  before = signal.getsignal(signal.SIGTERM)
  with distributed.PreemptionWatcher() as w:
    assert not w.should_stop(1)
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(100):  # the handler runs between bytecodes of the main thread.
      if w.signalled:
        break
      time.sleep(0.01)
    assert w.should_stop(2)
  assert signal.getsignal(signal.SIGTERM) == before
