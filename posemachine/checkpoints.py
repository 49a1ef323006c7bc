"""Orbax checkpoints of the train state: the last N plus the best by validation MPJPE.

Orbax writes each step into a temporary directory and renames it when complete, so a
run killed at any moment leaves only complete checkpoints; a rerun resumes from the
latest. The run's config is kept beside them (`config.json`) to refuse resuming a workdir
with a model of a different shape.
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from posemachine import io_utils

BEST_METRIC = "val_mpjpe_mm"
# Config groups that must match to restore a checkpoint into this run's model.
COMPATIBILITY_KEYS = ("model", "data.num_joints")


from posemachine.errors import IncompatibleWorkdirError  # pylint: disable=unused-import


def _lookup(config_dict: dict, dotted: str):
  for part in dotted.split("."):
    config_dict = config_dict.get(part, {}) if isinstance(config_dict, dict) else None
  return config_dict


def check_workdir_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Writes workdir/config.json on first use; later refuses an incompatible config."""
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
  if jax.process_index() == 0:
    io_utils.atomic_write_json(path, current)


def make_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  policy = checkpoint_managers.AnyPreservationPolicy([
      checkpoint_managers.LatestN(n=keep),
      checkpoint_managers.BestN(get_metric_fn=lambda m: m[BEST_METRIC], reverse=True, n=1,
                                keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      create=True, best_fn=lambda m: m[BEST_METRIC], best_mode="min",
      preservation_policy=policy)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                               options=options)


def save(manager: ocp.CheckpointManager, step: int, state, metrics: dict | None = None):
  """Saves asynchronously; call manager.wait_until_finished() before exiting."""
  manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)


def restore(manager: ocp.CheckpointManager, abstract_state, step: int | None = None):
  """Restores `step` (default: latest) into the structure/shardings of abstract_state.

  Returns the state, or None when there is no checkpoint.
  """
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
  try:
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))
  except (ValueError, KeyError, TypeError) as e:
    raise IncompatibleWorkdirError(
        f"Checkpoint step {step} in {manager.directory} does not match this model "
        f"({type(e).__name__}: {str(e)[:500]}). Use a new --workdir.") from e
