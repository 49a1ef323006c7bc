"""SIGKILL a training run many times, at random moments and at named points inside a
checkpoint write and an evaluation: every rerun resumes from the newest complete checkpoint,
no checkpoint is ever unreadable or fails its digest, and the final parameters and optimizer
state equal those of an uninterrupted run with the same seed.

The victim (the real CLI) logs every step and evaluates + checkpoints every 2 steps. Most
kills come from this test at a random moment after the run has started training, at most
three logged steps later (so the kills, not the end of the run, decide the number of
restarts); the kills in FORCED are the run's own, at a fault point of posemachine/
faultpoints.py (POSEMACHINE_KILL_AT). The reference run logs, evaluates and checkpoints
only at the end: equal params also show that evaluation and checkpointing leave training
untouched. Restarts reuse a persistent compilation cache.
POSEMACHINE_KILLS sets the number of kills (default 20, the issue's acceptance figure).
"""

import glob
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import types

import jax
import numpy as np

from posemachine import checkpoints, faultpoints
import tiny_config as tiny_config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILLS = int(os.environ.get("POSEMACHINE_KILLS", "20"))
# Kill number -> fault point (POSEMACHINE_KILL_AT) of the run started for that kill.
FORCED = {2: "checkpoint_commit", 5: "eval_batch:2", 8: "checkpoint_digest",
          11: "checkpoint_commit:2", 14: "eval_batch"}
# A kill advances the newest checkpoint by at most 4 steps (typically 2): the run always
# outlasts the kills, and the last rerun has few steps left.
RUN = dict(num_steps=3 * KILLS + 8, log_every=1, eval_every=2, schedule="constant",
           checkpoint_keep=2)
REFERENCE = dict(RUN, log_every=RUN["num_steps"], eval_every=RUN["num_steps"])


def _env(cache, kill_at=None):
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1",
             # 2 fake devices: data-parallel, yet few enough threads that XLA's CPU all-reduce
             # rendezvous (40 s timeout) cannot starve when the 2 cores are oversubscribed.
             XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  env.pop(faultpoints.ENV, None)
  if kill_at:
    env[faultpoints.ENV] = kill_at
  return env


def _cmd(workdir, run=None):
  return [sys.executable, "-m", "posemachine.main", f"--config={tiny_config_lib.PATH}",
          *tiny_config_lib.overrides(**(run or RUN)), f"--workdir={workdir}"]


def _last_logged(workdir):
  steps = [0]
  try:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      for line in f:
        try:
          steps.append(json.loads(line)["step"])
        except (ValueError, KeyError):
          pass  # a line cut by a kill.
  except OSError:
    pass
  return max(steps)


def _committed(workdir):
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def _has_digest(workdir, step):
  return os.path.exists(os.path.join(workdir, "checkpoints", str(step), checkpoints.DIGEST))


def _check_committed(workdir, err):
  """Every committed step with a digest matches it; nothing was moved aside as corrupt."""
  assert not os.path.exists(os.path.join(workdir, "corrupt_checkpoints")), err[-2000:]
  fake = types.SimpleNamespace(directory=os.path.join(workdir, "checkpoints"))
  for step in _committed(workdir):
    checkpoints._verify(fake, step)  # pylint: disable=protected-access


def _params(workdir):
  return tiny_config_lib.restore_state(workdir)


def _random_kill(proc, part, start, rng):
  """Kills proc at a random moment once it trains, at most 3 logged steps after its start."""
  deadline = time.time() + 60
  while _last_logged(part) <= start and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  until = time.time() + rng.uniform(0.0, 0.8)
  while time.time() < until and _last_logged(part) < start + 3 and proc.poll() is None:
    time.sleep(0.01)
  assert proc.poll() is None, "the run ended before its kill"
  proc.send_signal(signal.SIGKILL)


def _forced_kill(proc, part, before, point):
  """Waits for proc to kill itself at `point`; checks what the kill left on disk."""
  try:
    _, err = proc.communicate(timeout=120)
  except subprocess.TimeoutExpired:
    proc.kill()
    raise
  assert proc.returncode == -signal.SIGKILL, (point, proc.returncode, err[-3000:])
  name, n = faultpoints.parse(point)
  assert f"fault point {name} #{n}" in err, err[-3000:]
  after = _committed(part)
  if name == "checkpoint_commit":  # its files are written, uncommitted; older steps stay.
    step = max(before, default=0) + n * RUN["eval_every"]  # this run's n-th save.
    tmp = glob.glob(os.path.join(part, "checkpoints", f"{step}.orbax-checkpoint-tmp*"))
    assert tmp and os.listdir(tmp[0]), (step, os.listdir(os.path.join(part, "checkpoints")))
    assert len(set(after) - set(before)) == n - 1, (before, after)
  elif name == "checkpoint_digest":  # committed, no digest: the rerun must still take it.
    assert max(after) not in before and not _has_digest(part, max(after)), (before, after)
  return err


def test_sigkill_anywhere_resumes_exactly(tmp_path):
  cache, part, ref = (str(tmp_path / n) for n in ("cache", "part", "ref"))
  popen = dict(cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  t0 = time.time()
  reference = None  # started after the first kill, which fills the compilation cache.
  rng = random.Random(0)
  kills, resumed_from = [], []
  for k in range(KILLS):
    before = _committed(part)
    start = _last_logged(part)
    point = FORCED.get(k)
    proc = subprocess.Popen(_cmd(part), env=_env(cache, point), **popen)
    if point:
      err = _forced_kill(proc, part, before, point)
    else:
      _random_kill(proc, part, start, rng)
      _, err = proc.communicate()
    found = re.search(r"Resumed from checkpoint step (\d+)\.", err)
    resumed_from.append((int(found.group(1)) if found else 0, max(before, default=0)))
    kills.append((round(time.time() - t0, 1), point or "random", _last_logged(part)))
    _check_committed(part, err)
    if reference is None:
      reference = subprocess.Popen(_cmd(ref, REFERENCE), env=_env(cache), **popen)
  t_kills = time.time() - t0
  # Each rerun resumed from the newest checkpoint that was complete when it started.
  assert all(got == want for got, want in resumed_from), resumed_from
  r = subprocess.run(_cmd(part), cwd=REPO, env=_env(cache), capture_output=True, text=True,
                     timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  assert reference.wait(timeout=300) == 0, reference.stderr.read()[-3000:]
  _check_committed(part, r.stderr)
  assert all(_has_digest(part, s) for s in _committed(part)), _committed(part)
  a, b = _params(ref), _params(part)
  assert int(a.step) == int(b.step) == RUN["num_steps"]
  jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
  jax.tree.map(np.testing.assert_array_equal, a.opt_state, b.opt_state)
  print(f"{len(kills)} SIGKILLs in {t_kills:.0f} s ({time.time() - t0:.0f} s in all) at "
        f"(s, kind, last logged step): {kills}; resumed from {[g for g, _ in resumed_from]}")
  assert len(kills) == KILLS
