"""Evaluation: a jitted per-example evaluator with a padding mask, tables, eval.json, plots.

Every frame of every test sequence is covered once by non-overlapping windows of
`config.data.window` frames (the last one of a sequence edge-padded and masked); the
number of windows is padded to a multiple of the eval batch (masked too), so one compiled
function serves all batches. Errors are in millimetres. MPJVE is computed within windows
(velocities across window borders are left out).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from posemachine import faultpoints, io_utils, losses, metrics, refine, skeleton, tables
from posemachine.data import sequences as seq_lib

METRIC_NAMES = ("mpjpe", "pa_mpjpe", "n_mpjpe", "mpjve", "proj_2d")


def per_example_errors(pred_3d, gt_3d, proj_2d, pose_2d, mask):
  """Per-frame errors of one example (a window).

  Args:
    pred_3d, gt_3d: (T, K, 3) metres. proj_2d: (T, K, 2) projector output, pose_2d (T, K, 2)
    the observed normalised 2D. mask: (T,) 1 for real frames.
  Returns:
    dict of (T,) arrays, millimetres for 3D (mpjve: frame t is the velocity t-1 -> t,
    0 at t=0), normalised units x 1000 for proj_2d; masked entries are 0, and
    'mask'/'mask_vel' say which count.
  """
  mm = 1000.0
  vel_mask = jnp.concatenate([jnp.zeros((1,)), mask[1:] * mask[:-1]])
  vel = jnp.concatenate([jnp.zeros((1,)), metrics.mpjve(pred_3d, gt_3d)])
  proj = jnp.sqrt(((proj_2d - losses.normalize_2d(pose_2d)) ** 2).sum(-1)).mean(-1)
  return {
      "mpjpe": metrics.mpjpe(pred_3d, gt_3d) * mm * mask,
      "pa_mpjpe": metrics.pa_mpjpe(pred_3d, gt_3d) * mm * mask,
      "n_mpjpe": metrics.n_mpjpe(pred_3d, gt_3d) * mm * mask,
      "mpjve": vel * mm * vel_mask,
      "proj_2d": proj * mm * mask,
      "mask": mask, "mask_vel": vel_mask,
  }


def make_eval_step(model, mesh, refine_config=None):
  """jit((params, batch) -> (pose_3d (B, T, K, 3), per-frame error dict of (B, T))).

  With `refine_config.enabled`, the predictions and METRIC_NAMES are those after the
  test-time self-correction (refine.py), and '<name>_unrefined' hold the errors before it;
  'refine_discarded' and 'refine_steps' (per frame, from the frame's sample) say what the
  correction's rules did.
  """
  data = NamedSharding(mesh, P("data"))
  replicated = NamedSharding(mesh, P())
  refine_fn = None
  if refine_config is not None and refine_config.enabled:
    refine_fn = refine.make_refine(_model_config(model), refine_config, model.num_joints)
    if mesh.devices.size > 1:
      # Each device corrects its own rows: on the global batch, refine's lax.map over chunks
      # made XLA gather the batch and run every chunk on every device. check_vma=False keeps
      # each sample's weight gradients its own (no all-reduce over 'data').
      refine_fn = jax.shard_map(refine_fn, mesh=mesh, in_specs=(P(), P("data"), P("data"),
                                                                P("data")),
                                out_specs=P("data"), check_vma=False)

  def step(params, batch):
    out = model.apply({"params": params}, batch["pose_2d"], batch["confidence"], batch["mask"])
    errors = jax.vmap(per_example_errors)
    errs = errors(out["pose_3d"], batch["pose_3d"], out["proj_2d"], batch["pose_2d"],
                  batch["mask"])
    if refine_fn is None:
      return out["pose_3d"], errs
    ref = refine_fn(params["projector"], out["pose_3d_intermediate"],
                    refine.target_2d(refine_config, batch), batch["mask"])
    proj = model.apply({"params": params}, ref["pose_3d"],
                       method=lambda m, x: m.projector.projection(x))
    refined = errors(ref["pose_3d"], batch["pose_3d"], proj, batch["pose_2d"], batch["mask"])
    for k in METRIC_NAMES:
      refined[f"{k}_unrefined"] = errs[k]
    per_frame = lambda v: jnp.broadcast_to(v[:, None].astype(jnp.float32), batch["mask"].shape)
    refined["refine_discarded"] = per_frame(ref["discarded"]) * batch["mask"]
    refined["refine_steps"] = per_frame(ref["steps"]) * batch["mask"]
    return ref["pose_3d"], refined

  return jax.jit(step, in_shardings=(replicated, data), out_shardings=data)


def _model_config(model):
  """The model-config fields refine.py needs, read back from a PoseMachine."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict({"projector_hidden": model.projector_hidden,
                                    "residual_correction": model.residual_correction})


def run_evaluator(eval_step, params, seqs: seq_lib.Sequences, window: int, batch_size: int,
                  mesh, max_windows: int | None = None):
  """Runs the evaluator over all (or the first max_windows) windows of seqs.

  Returns (pred (N, K, 3) per frame, NaN for frames not evaluated;
  per-frame errors dict name -> (N,) with NaN where not evaluated).
  """
  seq_ids, offsets = seq_lib.tile_windows(seqs, window)
  if max_windows is not None and len(seq_ids) > max_windows:
    pick = np.random.default_rng(0).choice(len(seq_ids), max_windows, replace=False)
    pick.sort()
    seq_ids, offsets = seq_ids[pick], offsets[pick]
  n_win = len(seq_ids)
  n_pad = -n_win % batch_size
  pad = np.zeros(n_pad, np.int64)  # extra windows (sequence 0, offset 0), masked out
  seq_all, off_all = np.concatenate([seq_ids, pad]), np.concatenate([offsets, pad])
  idx, mask = seq_lib.window_indices(seqs.starts, seqs.lengths, seq_all, off_all, window)
  mask[n_win:] = False
  pred = np.full(seqs.pose_3d.shape, np.nan, np.float32)
  errs = {}
  data = NamedSharding(mesh, P("data"))
  for b0 in range(0, len(idx), batch_size):
    sl = slice(b0, b0 + batch_size)
    batch = seq_lib.gather_windows(seqs, idx[sl], mask[sl], seq_all[sl])
    batch = jax.device_put(batch, data)
    p, e = jax.device_get(eval_step(params, batch))
    faultpoints.reached("eval_batch")  # test-only; inert unless POSEMACHINE_KILL_AT is set.
    m, mv = e["mask"] > 0, e["mask_vel"] > 0
    frames = idx[sl]
    pred[frames[m]] = p[m]
    for k, v in e.items():
      if k in ("mask", "mask_vel"):
        continue
      sel = mv if k.startswith("mpjve") else m
      errs.setdefault(k, np.full((seqs.num_frames,), np.nan, np.float32))[frames[sel]] = v[sel]
  return pred, errs


def summarize(seqs: seq_lib.Sequences, errs: dict) -> dict:
  """Overall, per-action and per-sequence means (mm); overall is action-wise (H36M style)."""
  frame_action = np.repeat(np.asarray(seqs.action), seqs.lengths)
  frame_seq = np.repeat(np.arange(seqs.num_sequences), seqs.lengths)
  out = {"overall": {}, "overall_frame_wise": {}, "per_action": {}, "per_sequence": {}}
  for k, v in errs.items():
    ok = np.isfinite(v)
    per_action, action_mean, frame_mean = metrics.action_wise_average(v[ok], frame_action[ok])
    out["overall"][k] = float(action_mean)
    out["overall_frame_wise"][k] = float(frame_mean)
    for a, val in per_action.items():
      out["per_action"].setdefault(a, {})[k] = float(val)
    for s in np.unique(frame_seq[ok]):
      sel = ok & (frame_seq == s)
      out["per_sequence"].setdefault(seqs.sequence_name(int(s)), {})[k] = float(v[sel].mean())
  out["num_frames"] = int(np.isfinite(errs["mpjpe"]).sum())
  out["averaging"] = ("overall: mean per action, then mean over actions (action-wise, as "
                      "Human3.6M tables); overall_frame_wise: mean over all frames")
  out["units"] = ("millimetres for 3D metrics; proj_2d in thousandths of the root-centred, "
                  "scale-normalised 2D pose (losses.normalize_2d)")
  return out


def mean_pose_baseline(train: seq_lib.Sequences, test: seq_lib.Sequences) -> dict:
  """Errors (mm) of predicting the training-set mean pose for every test frame."""
  labelled = np.repeat(train.has_3d, train.lengths)
  if not labelled.any():
    return {"mpjpe": None, "pa_mpjpe": None,
            "note": "no 3D labels in the training data (self-supervised run)"}
  mean_pose = train.pose_3d[labelled].mean(0)
  pred = jnp.broadcast_to(mean_pose, test.pose_3d.shape)
  gt = jnp.asarray(test.pose_3d)
  return {"mpjpe": float(metrics.mpjpe(pred, gt).mean() * 1000),
          "pa_mpjpe": float(metrics.pa_mpjpe(pred, gt).mean() * 1000),
          "averaging": "frame-wise"}


def per_joint_errors(pred, gt):
  """(N, K, 3) -> per-joint MPJPE and PA-MPJPE (K,) in mm over frames with a prediction."""
  ok = np.isfinite(pred).all((1, 2))
  p, g = jnp.asarray(pred[ok]), jnp.asarray(gt[ok])
  rel = lambda x: x - x[:, :1]
  mpjpe_j = jnp.linalg.norm(rel(p) - rel(g), axis=-1).mean(0)
  pa_j = jnp.linalg.norm(metrics.procrustes_align(p, g) - g, axis=-1).mean(0)
  return np.asarray(mpjpe_j) * 1000, np.asarray(pa_j) * 1000


def write_report(workdir: str, results: dict, seqs: seq_lib.Sequences, pred: np.ndarray,
                 num_plot_frames: int = 4) -> list[str]:
  """Writes eval.json, eval_table.md and PNG plots into workdir; returns the written paths."""
  from posemachine import plots  # pylint: disable=g-import-not-at-top  (matplotlib is slow to import)
  paths = [os.path.join(workdir, "eval.json")]
  layout = skeleton.for_num_joints(seqs.num_joints)
  mpjpe_j, pa_j = per_joint_errors(pred, seqs.pose_3d)
  results = dict(results)
  results["per_joint"] = {name: {"mpjpe": float(a), "pa_mpjpe": float(b)}
                          for name, a, b in zip(layout.joint_names, mpjpe_j, pa_j)}
  io_utils.atomic_write_json(paths[0], results)
  # The per-action (and per-subject) table in the papers' layout, written and printed.
  table = tables.format_report(results, seqs)
  p = os.path.join(workdir, "eval_table.md")
  io_utils.atomic_write_text(p, table)
  print(table, flush=True)
  paths.append(p)
  p = os.path.join(workdir, "per_joint_error.png")
  plots.plot_per_joint_error({"MPJPE": mpjpe_j, "PA-MPJPE": pa_j}, layout.joint_names, p,
                             title=f"Per-joint error, {results.get('split', 'test')} split (mm)")
  paths.append(p)
  # A few frames spread over the test set, one per sequence of different actions.
  ok = np.flatnonzero(np.isfinite(pred).all((1, 2)))
  if len(ok) and num_plot_frames > 0:
    pick = ok[np.linspace(0, len(ok) - 1, num_plot_frames + 2)[1:-1].astype(int)]
    seq_of = np.searchsorted(seqs.starts, pick, side="right") - 1
    titles = [seqs.sequence_name(int(s)) for s in seq_of]
    p = os.path.join(workdir, "skeletons.png")
    plots.plot_skeletons(pred[pick], seqs.pose_3d[pick], layout.parents, p, titles=titles,
                         left=layout.left, right=layout.right)
    paths.append(p)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(metrics_path):
    p = os.path.join(workdir, "training_curves.png")
    plots.plot_training_curves(metrics_path, p)
    paths.append(p)
  return paths
