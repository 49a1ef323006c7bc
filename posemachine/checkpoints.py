"""Orbax checkpoints of the train state: the last N plus the best by validation MPJPE.

Orbax writes each step into a temporary directory and renames it when complete, so a
run killed at any moment leaves only complete checkpoints; a rerun resumes from the
latest. The run's config is kept beside them (`config.json`) to refuse resuming a workdir
with a model of a different shape.

Integrity: as soon as a step is committed (in Orbax's background save thread), `DIGEST` in
its directory records each file's size and CRC-32 (Orbax's array files carry no checksum:
a flipped bit restores silently); a step whose run died between commit and digest gets it
at the next save.
`restore` checks it, restores, and checks the params are finite; a step failing any of
these is reported (warning naming the step and the error), moved to
`<workdir>/corrupt_checkpoints/` and the previous step is tried. With no good step left
it raises CheckpointError (it never starts afresh over a corrupt run). A failed write
(e.g. a full disk) raises CheckpointError; the complete steps stay as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
import zlib

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers
from orbax.checkpoint.path import atomicity

from posemachine import faultpoints, io_utils
from posemachine.errors import CheckpointError

BEST_METRIC = "val_mpjpe_mm"
# Config groups that must match to restore a checkpoint into this run's model.
COMPATIBILITY_KEYS = ("model", "data.num_joints")


from posemachine.errors import IncompatibleWorkdirError  # pylint: disable=unused-import


def _lookup(config_dict: dict, dotted: str):
  for part in dotted.split("."):
    config_dict = config_dict.get(part, {}) if isinstance(config_dict, dict) else None
  return config_dict


def check_workdir_config(workdir: str, config: ml_collections.ConfigDict,
                         record: bool = True) -> None:
  """Refuses a config incompatible with workdir/config.json; with `record` (training), then
  writes this config there. Evaluation passes record=False: the file keeps recording the
  training run, whatever config evaluates it."""
  path = os.path.join(workdir, "config.json")
  current = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    try:
      with open(path) as f:
        saved = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise IncompatibleWorkdirError(f"{path} is unreadable ({e}); use a new --workdir.") from e
    diffs = []
    for key in COMPATIBILITY_KEYS:
      old, new = _lookup(saved, key), _lookup(current, key)
      if isinstance(old, dict) and isinstance(new, dict):
        diffs += [f"{key}.{k}: workdir {old.get(k)!r} vs config {new.get(k)!r}"
                  for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
      elif old != new:
        diffs.append(f"{key}: workdir {old!r} vs config {new!r}")
    if diffs:
      raise IncompatibleWorkdirError(
          f"The workdir {workdir} holds checkpoints of an incompatible config:\n  "
          + "\n  ".join(diffs)
          + "\nUse a new --workdir, or the settings the workdir was trained with "
          f"(see {path}).")
  if record and jax.process_index() == 0:
    io_utils.atomic_write_json(path, current)


def make_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  policy = checkpoint_managers.AnyPreservationPolicy([
      checkpoint_managers.LatestN(n=keep),
      checkpoint_managers.BestN(get_metric_fn=lambda m: m[BEST_METRIC], reverse=True, n=1,
                                keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      create=True, best_fn=lambda m: m[BEST_METRIC], best_mode="min",
      preservation_policy=policy,
      temporary_path_class=None if "://" in workdir else _DigestOnCommit)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                               options=options)


DIGEST = "posemachine_digest.json"


class _DigestOnCommit(atomicity.AtomicRenameTemporaryPath):
  """Orbax's atomic rename (local disks), then the step's DIGEST at once.

  Runs in Orbax's background save thread: the digest is there as soon as the step is
  committed, with no wait in the training loop. Item subdirectories ('default') commit
  through it too; only step directories (named by their number) get a digest.
  """

  async def finalize(self, *args, **kwargs):
    final = self.get_final()
    is_step = final.name.isdigit()
    if is_step:
      faultpoints.reached("checkpoint_commit")
    await super().finalize(*args, **kwargs)
    if is_step and jax.process_index() == 0:
      faultpoints.reached("checkpoint_digest")
      await asyncio.to_thread(_write_digest, os.fspath(final))


def _step_dir(manager, step: int) -> str:
  return os.path.join(os.fspath(manager.directory), str(step))


def _file_digests(step_dir: str) -> dict:
  """relative path -> [size, crc32] of every file in step_dir (but the digest)."""
  out = {}
  for root, _, files in os.walk(step_dir):
    for name in files:
      path = os.path.join(root, name)
      rel = os.path.relpath(path, step_dir)
      if rel == DIGEST:
        continue
      crc = 0
      with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
          crc = zlib.crc32(chunk, crc)
      out[rel] = [os.path.getsize(path), crc]
  return out


def _write_digest(step_dir: str) -> None:
  if os.path.isdir(step_dir) and not os.path.exists(os.path.join(step_dir, DIGEST)):
    io_utils.atomic_write_json(os.path.join(step_dir, DIGEST), _file_digests(step_dir))


def _write_digests(manager) -> None:
  """Writes DIGEST into each complete step directory lacking one (process 0).

  A fallback: _DigestOnCommit writes it at the commit, unless the run died in between.
  """
  if jax.process_index() != 0:
    return
  for step in manager.all_steps():
    _write_digest(_step_dir(manager, step))


def _verify(manager, step: int) -> None:
  """Raises CheckpointError if a file of `step` differs from its DIGEST (if it has one)."""
  d = _step_dir(manager, step)
  path = os.path.join(d, DIGEST)
  if not os.path.exists(path):
    return  # killed between the commit and the digest: the restore itself must succeed.
  try:
    with open(path) as f:
      want = json.load(f)
  except (OSError, ValueError) as e:
    raise CheckpointError(f"its digest {DIGEST} is unreadable ({e})") from None
  got = _file_digests(d)
  for rel in sorted(set(want) | set(got)):
    if rel not in got:
      raise CheckpointError(f"file {rel} is missing")
    if rel not in want:
      raise CheckpointError(f"unexpected file {rel}")
    if got[rel][0] != want[rel][0]:
      raise CheckpointError(f"file {rel} has {got[rel][0]} bytes, {want[rel][0]} were "
                            "written (truncated?)")
    if got[rel][1] != want[rel][1]:
      raise CheckpointError(f"file {rel} fails its CRC-32 check (bit rot or overwritten)")


def _complete_steps(manager) -> list:
  return sorted(manager.all_steps())


def _write_error(manager, step, e) -> CheckpointError:
  """The error for a failed write; moves the failed step aside if Orbax committed it."""
  reason = f"{type(e).__name__}: {e}"
  if isinstance(e, OSError) and e.errno is not None:
    reason += f" [errno {e.errno}: {os.strerror(e.errno)}]"
  moved = ""
  try:
    # The failed step's files (still a temporary directory, or committed by Orbax despite
    # a failed metadata write) are not trusted: out of the way, kept for inspection.
    root = os.fspath(manager.directory)
    names = [n for n in os.listdir(root) if step is not None and (
        n == str(step) and not os.path.exists(os.path.join(root, n, DIGEST))
        or n.startswith(f"{step}.orbax-checkpoint-tmp"))]
    for n in names:
      moved = f" Its partial files were moved to {_move_aside(manager, n)}."
    manager.reload()
  except Exception:  # pylint: disable=broad-except  (report the write error, not this)
    pass
  return CheckpointError(
      f"Writing checkpoint step {step} in {manager.directory} failed ({reason[:800]}). "
      f"{_hint(reason)}{moved} The complete checkpoints {_complete_steps(manager)} are "
      "unchanged; free space and rerun the same command to resume from the latest.")


def _hint(reason: str) -> str:
  """The likely cause of a failed write, from its OS error (tensorstore gives text only)."""
  for marks, hint in (
      (("No space left", "errno 28", "code='28'"), "The disk is full."),
      (("quota", "errno 122", "code='122'"), "The disk quota is exhausted."),
      (("File too large", "errno 27", "code='27'"),
       "A file size limit (ulimit -f) or the filesystem's largest file size was reached."),
      (("Read-only file system", "errno 30", "code='30'"), "The filesystem is read-only.")):
    if any(m.lower() in reason.lower() for m in marks):
      return hint
  return "Is the disk full?"


def save(manager: ocp.CheckpointManager, step: int, state, metrics: dict | None = None):
  """Saves asynchronously; call `wait(manager)` before exiting.

  Raises CheckpointError if this or the previous (asynchronous) write failed.
  """
  previous = manager.latest_step()  # the step of a save still in flight, if any.
  try:
    manager.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except  (the previous save's error)
    raise _write_error(manager, previous, e) from e
  try:
    _write_digests(manager)
    manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)
  except Exception as e:  # pylint: disable=broad-except
    raise _write_error(manager, step, e) from e


def wait(manager: ocp.CheckpointManager) -> None:
  """Waits for pending saves and records their digests; CheckpointError if a write failed."""
  step = manager.latest_step()
  try:
    manager.wait_until_finished()
    _write_digests(manager)
  except Exception as e:  # pylint: disable=broad-except
    raise _write_error(manager, step, e) from e


@contextlib.contextmanager
def finishing(manager: ocp.CheckpointManager):
  """Closes `manager` when the block ends. When an error ends it (a non-finite step, a
  data error, Ctrl-C), a save still in flight is completed first, so the last checkpoint
  is not lost; the error then propagates."""
  try:
    yield manager
  except BaseException:
    try:
      wait(manager)
    except Exception as e:  # pylint: disable=broad-except  (the first error is the one to show)
      logging.warning("While stopping on an error, the checkpoint in flight failed: %s", e)
    raise
  finally:
    manager.close()


def _move_aside(manager, step) -> str:
  """Moves a corrupt step out of the checkpoint directory; returns where it went."""
  d = _step_dir(manager, step)
  dest_root = os.path.join(os.path.dirname(os.fspath(manager.directory)),
                           "corrupt_checkpoints")
  dest = os.path.join(dest_root, str(step))
  if os.path.exists(dest):
    dest += f".{int(time.time())}"
  if jax.process_index() == 0:
    os.makedirs(dest_root, exist_ok=True)
    shutil.move(d, dest)
  return dest


@jax.jit
def _finite_flags(params):
  return jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(params)])


def _nonfinite_leaf(state) -> str | None:
  """The path of the first param holding a NaN/Inf (works on sharded arrays), or None."""
  flags = np.asarray(_finite_flags(state.params))
  if flags.all():
    return None
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(state.params)]
  return paths[int(np.argmin(flags))]


def restore(manager: ocp.CheckpointManager, abstract_state, step: int | None = None):
  """Restores `step` (default: the latest good one) into abstract_state's structure.

  With step=None, a step that fails its digest, its restore or a finiteness check of its
  params is reported with a warning, moved to <workdir>/corrupt_checkpoints/, and the
  previous step is tried. Returns the state, or None when there is no checkpoint.
  Raises IncompatibleWorkdirError when every step fails to match this model,
  CheckpointError when none is readable (or the requested step is corrupt).
  """
  steps = [step] if step is not None else sorted(manager.all_steps(), reverse=True)
  if not steps or steps[0] is None:
    return None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
  failures = []  # (step, exception, corrupt: bool)
  for s in steps:
    try:
      _verify(manager, s)
      try:
        state = manager.restore(s, args=ocp.args.StandardRestore(abstract))
      except (ValueError, KeyError, TypeError) as e:
        failures.append((s, e, False))  # shape/structure mismatch (or a corrupt header).
        logging.warning("Checkpoint step %d in %s cannot be restored (%s: %s).", s,
                        manager.directory, type(e).__name__, str(e)[:300])
        continue
      bad = _nonfinite_leaf(state)
      if bad is not None:
        raise CheckpointError(f"its params hold NaN/Inf (in {bad})")
    except Exception as e:  # pylint: disable=broad-except  (tensorstore: bare Exception)
      failures.append((s, e, True))
      logging.warning("Checkpoint step %d in %s is corrupt (%s: %s)%s", s, manager.directory,
                      type(e).__name__, str(e)[:300],
                      "." if step is not None else "; trying the previous one.")
      continue
    if failures:  # an older step restores: the newer ones are damaged, not incompatible.
      moved = [_move_aside(manager, f[0]) for f in failures]
      if jax.process_count() > 1:  # process 0 moved them; all list the steps again after.
        multihost_utils.sync_global_devices("posemachine_corrupt_checkpoints_moved")
      manager.reload()
      logging.warning("Restored checkpoint step %d of %s after skipping unreadable step(s) "
                      "%s, moved to %s.", s, manager.directory, [f[0] for f in failures],
                      os.path.dirname(moved[0]))
    return state
  detail = "; ".join(f"step {s}: {type(e).__name__}: {str(e)[:300]}" for s, e, _ in failures)
  if not any(c for _, _, c in failures):
    raise IncompatibleWorkdirError(
        f"Checkpoint step(s) {[s for s, _, _ in failures]} in {manager.directory} do not match "
        f"this model ({detail}). Use a new --workdir (or, if these files are damaged rather "
        "than from another model, delete them to start over).")
  if step is not None:  # the caller asked for this step: it decides what to say.
    raise CheckpointError(f"checkpoint step {step} in {manager.directory} is unreadable "
                          f"({detail}).")
  raise CheckpointError(
      f"No readable checkpoint in {manager.directory} ({detail}). Refusing to start over a "
      "corrupt run: restore the files from a backup, or delete the checkpoints directory "
      "(or use a new --workdir) to train from scratch.")
