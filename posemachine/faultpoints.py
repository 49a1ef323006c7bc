"""Test-only fault points: a run SIGKILLs itself at a named point (tests/test_kill_anywhere.py).

Inert unless the environment variable POSEMACHINE_KILL_AT is set (a dict lookup per call).
Its value is `<point>` or `<point>:<n>`: the process kills itself with SIGKILL the n-th time
(default: the first) it reaches <point>, after writing one line naming it to stderr. Points:

  checkpoint_commit  all files of a checkpoint step are written into Orbax's temporary
                     directory, which is not yet renamed (committed);
  checkpoint_digest  the step is committed, its digest (checkpoints.DIGEST) not yet written;
  eval_batch         mid-evaluation: an evaluation batch's outputs were fetched, its errors
                     (and the step's metrics and checkpoint) not yet recorded.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from posemachine.errors import ConfigError

ENV = "POSEMACHINE_KILL_AT"
POINTS = ("checkpoint_commit", "checkpoint_digest", "eval_batch")

_counts: dict = {}
_lock = threading.Lock()


def parse(spec: str) -> tuple:
  """'<point>[:<n>]' -> (point, n). ConfigError naming the variable and value if malformed."""
  point, _, n = spec.partition(":")
  if point not in POINTS or not (n == "" or n.isdigit() and int(n) >= 1):
    raise ConfigError(f"{ENV}={spec!r}: expected '<point>' or '<point>:<n>' with <point> one "
                      f"of {list(POINTS)} and n >= 1.")
  return point, int(n or 1)


def reached(point: str) -> None:
  """Kills this process if POSEMACHINE_KILL_AT names `point` and this is its n-th arrival."""
  spec = os.environ.get(ENV)
  if not spec:
    return
  want, n = parse(spec)
  if point != want:
    return
  with _lock:
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] != n:
      return
  sys.stderr.write(f"posemachine: fault point {point} #{n} ({ENV}): SIGKILL\n")
  sys.stderr.flush()
  os.kill(os.getpid(), signal.SIGKILL)
