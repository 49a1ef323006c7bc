"""SIGKILL at random moments, many times: every rerun resumes from the last complete
checkpoint, no checkpoint is ever unreadable, and the final parameters equal those of an
uninterrupted run with the same seed.

The victim logs every step and checkpoints every 2 steps (eval + save), so the kills land
in steps, evaluations and checkpoint writes. Restarts reuse a persistent compilation cache.
POSEMACHINE_KILLS sets the number of kills (default 8; 20 for the issue's acceptance run).
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from posemachine import checkpoints, train
from posemachine.models import machine
import tiny_config as tiny_config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Each kill costs a process start (about 4-5 s on 2 CPU cores): 8 by default keeps the test
# near a minute; POSEMACHINE_KILLS=20 (the acceptance figure) takes about 2 min 15 s.
KILLS = int(os.environ.get("POSEMACHINE_KILLS", "8"))
RUN = dict(num_steps=5 * KILLS, log_every=1, eval_every=2, schedule="constant",
           checkpoint_keep=2)


def _env(cache):
  return dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1",
              XLA_FLAGS="--xla_force_host_platform_device_count=8",
              JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


def _cmd(workdir):
  return [sys.executable, "-m", "posemachine.main", f"--config={tiny_config_lib.PATH}",
          *tiny_config_lib.overrides(**RUN), f"--workdir={workdir}"]


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


def _params(workdir):
  config = tiny_config_lib.get_config()
  model = machine.from_config(config.model, 17)
  tx = train.make_optimizer(config.train)
  mgr = checkpoints.make_manager(workdir, 2)
  state = checkpoints.restore(mgr, train.init_state(model, tx, jax.random.key(1), 17, 8))
  mgr.close()
  return state


def test_sigkill_anywhere_resumes_exactly(tmp_path):
  cache, part, ref = (str(tmp_path / n) for n in ("cache", "part", "ref"))
  popen = dict(cwd=REPO, env=_env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
               text=True)
  t0 = time.time()
  reference = subprocess.Popen(_cmd(ref), **popen)  # uninterrupted, alongside.
  rng = random.Random(0)
  kills, resumed_from = [], []
  while len(kills) < KILLS and (not kills or kills[-1][1] < RUN["num_steps"]):
    before = _committed(part)
    proc = subprocess.Popen(_cmd(part), **popen)
    start = _last_logged(part)
    # Wait until this run trains (past start-up), then kill at a random moment after.
    deadline = time.time() + 60
    while _last_logged(part) <= start and proc.poll() is None and time.time() < deadline:
      time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 0.4))
    if proc.poll() is not None:  # finished before the kill: the run is complete.
      break
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    found = re.search(r"Resumed from checkpoint step (\d+)\.", err)
    resumed_from.append((int(found.group(1)) if found else 0, max(before, default=0)))
    kills.append((time.time() - t0, _last_logged(part)))
    # Never an unreadable checkpoint: nothing was moved aside as corrupt.
    assert not os.path.exists(os.path.join(part, "corrupt_checkpoints")), err[-2000:]
  # Each rerun resumed from the newest checkpoint that was complete when it started.
  assert all(got == want for got, want in resumed_from), resumed_from
  r = subprocess.run(_cmd(part), cwd=REPO, env=_env(cache), capture_output=True, text=True,
                     timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  assert reference.wait(timeout=300) == 0, reference.stderr.read()[-3000:]
  assert not os.path.exists(os.path.join(part, "corrupt_checkpoints"))
  a, b = _params(ref), _params(part)
  assert int(a.step) == int(b.step) == RUN["num_steps"]
  jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
  jax.tree.map(np.testing.assert_array_equal, a.opt_state, b.opt_state)
  print(f"{len(kills)} SIGKILLs in {time.time() - t0:.0f} s at (s, last logged step): "
        f"{[(round(t, 1), s) for t, s in kills]}; resumed from {[g for g, _ in resumed_from]}")
  assert len(kills) >= min(KILLS, 10)
