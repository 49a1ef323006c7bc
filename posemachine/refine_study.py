"""Why the test-time correction does or does not lower MPJPE: one checkpoint, many settings.

python -m posemachine.refine_study --config=configs/synthetic.py --workdir=RUN \
    [--split=val] [--out=DIR] [--settings=reference,strong,...] [--max_windows=N]

Evaluates the latest checkpoint of RUN on one split without the correction and with each
setting below, and splits every error into its image-plane part (X, Y: what a 2D
consistency objective can see) and its depth part (Z: what it cannot). Writes
refine_study.md, refine_study.json and refine_study.png into --out (default RUN/refine_study).

Settings (the paper's convergence rule stays on: 5 mm):
  reference          2 Adam steps at 1.5e-4 on the observed 2D, learned projection, discard
                     rule on (20 mm of torso movement): the paper.
  strong             10 steps at 1e-3, same objective and rules.
  strong_no_discard  the same without the discard rule (all below too): what the objective
                     itself does to the pose.
  weak_perspective   the pose's own normalised (X, Y) as the projection.
  smoothed           against the observed 2D averaged over 5 frames.
  oracle             against the clean ground-truth 2D (synthetic sources only): what the
                     mechanism can do when the 2D it fits carries no noise.
  oracle_weak        the same with the weak-perspective projection.
  *_keep_depth       the correction changes X, Y only (refine.keep_depth): the 2D objective
                     carries no depth information, so depth keeps the network's estimate.
Choose settings on the validation split; the test split is for the final figure.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags
import jax
import numpy as np
from ml_collections import config_flags

from posemachine import config_defaults, errors, evaluate, host_memory, io_utils, train
from posemachine.data import pipeline
from posemachine.models import machine

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/synthetic.py", "The run's configuration file.")
flags.DEFINE_string("workdir", None, "The trained run (its latest checkpoint is used).")
flags.DEFINE_string("split", "val", "Split to evaluate (val to choose settings, test to report).")
flags.DEFINE_string("out", None, "Output directory (default: <workdir>/refine_study).")
flags.DEFINE_list("settings", None, "Subset of settings (default: all that apply; 'none': "
                  "only the uncorrected row).")
flags.DEFINE_integer("max_windows", 0, "Evaluate at most this many windows (0: all).")
flags.mark_flags_as_required(["workdir"])

STRONG = {"steps": 10, "learning_rate": 1e-3}
FREE = {**STRONG, "discard_mm": 1e9}  # no discard rule: what the objective itself does
SETTINGS = {
    "reference": {},
    "strong": STRONG,
    "strong_no_discard": FREE,
    "weak_perspective": {**FREE, "projection": "weak_perspective"},
    "smoothed": {**FREE, "target": "smoothed"},
    "oracle": {**FREE, "target": "ground_truth"},
    "oracle_weak": {**FREE, "target": "ground_truth", "projection": "weak_perspective"},
    "weak_keep_depth": {**FREE, "projection": "weak_perspective", "keep_depth": True},
    "smoothed_weak_keep_depth": {**FREE, "projection": "weak_perspective", "keep_depth": True,
                                 "target": "smoothed"},
    "oracle_weak_keep_depth": {**FREE, "target": "ground_truth",
                               "projection": "weak_perspective", "keep_depth": True},
}


def plane_depth_errors(pred, gt):
  """Mean per-joint image-plane (X, Y) and depth (|Z|) errors in mm over the frames where
  pred is finite. pred, gt (N, K, 3) root-relative metres, camera frame."""
  ok = np.isfinite(pred).all(axis=(1, 2))
  d = (pred[ok] - gt[ok]) * 1000
  return float(np.linalg.norm(d[..., :2], axis=-1).mean()), float(np.abs(d[..., 2]).mean())


def run_setting(config, state, seqs, mesh, overrides, max_windows):
  """Evaluates with refine overrides (None: no correction). Returns the overall row."""
  c = config.copy_and_resolve_references()
  c.refine.enabled = overrides is not None
  for k, v in (overrides or {}).items():
    c.refine[k] = v
  model = machine.from_config(c.model, c.data.num_joints)
  step = evaluate.make_eval_step(model, mesh, c.refine)
  pred, errs = evaluate.run_evaluator(step, state.params, seqs, c.data.window,
                                      c.eval.batch_size, mesh, max_windows or None)
  o = evaluate.summarize(seqs, errs)["overall"]
  plane, depth = plane_depth_errors(pred, seqs.pose_3d)
  row = {"mpjpe": o["mpjpe"], "pa_mpjpe": o["pa_mpjpe"], "proj_2d": o["proj_2d"],
         "plane_mm": plane, "depth_mm": depth}
  if overrides is not None:
    row.update(refine_discarded=o["refine_discarded"], refine_steps=o["refine_steps"])
  return row


def write_report(out, rows, split, step):
  base = rows[0]
  lines = [f"Test-time correction study: split {split}, checkpoint step {step}.", "",
           "| setting | MPJPE | change | PA-MPJPE | image-plane X,Y | depth Z | "
           "2D reproj. (x1e-3) | discarded | steps |", "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    extra = (f"{100 * r['refine_discarded']:.1f} % | {r['refine_steps']:.2f}"
             if "refine_steps" in r else "- | -")
    lines.append(f"| {r['setting']} | {r['mpjpe']:.2f} | {r['mpjpe'] - base['mpjpe']:+.2f} | "
                 f"{r['pa_mpjpe']:.2f} | {r['plane_mm']:.2f} | {r['depth_mm']:.2f} | "
                 f"{r['proj_2d']:.2f} | {extra} |")
  lines.append("\nErrors in mm; MPJPE and PA-MPJPE action-wise, the image-plane (mean "
               "per-joint X,Y distance) and depth (mean |Z| difference) parts frame-wise; all "
               "root-relative, camera frame. 2D reprojection: the learned "
               "projection half's output against the observed 2D, normalised units x1e-3.")
  io_utils.atomic_write_text(os.path.join(out, "refine_study.md"), "\n".join(lines) + "\n")
  io_utils.atomic_write_json(os.path.join(out, "refine_study.json"),
                             {"split": split, "checkpoint_step": step, "rows": rows})
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(1.4 * len(rows) + 2, 4))
  x = np.arange(len(rows))
  ax.bar(x - 0.27, [r["mpjpe"] for r in rows], 0.27, label="MPJPE")
  ax.bar(x, [r["plane_mm"] for r in rows], 0.27, label="image-plane X,Y")
  ax.bar(x + 0.27, [r["depth_mm"] for r in rows], 0.27, label="depth Z")
  ax.set_xticks(x, [r["setting"] for r in rows], rotation=20)
  ax.set_ylabel("mm")
  ax.set_title(f"Test-time correction, {split} split")
  ax.legend()
  fig.tight_layout()
  tmp = os.path.join(out, ".refine_study.png.tmp")
  fig.savefig(tmp, format="png", dpi=110)
  plt.close(fig)
  os.replace(tmp, os.path.join(out, "refine_study.png"))


def main(argv):
  del argv
  host_memory.keep_freed_memory()  # before JAX starts its backend
  try:
    study(FLAGS.config)
  except errors.PoseMachineError as e:
    sys.exit(f"posemachine.refine_study: error: {e}")


def study(config):
  """Runs the settings on FLAGS.workdir's latest checkpoint; writes the report."""
  names = FLAGS.settings or list(SETTINGS)
  names = [n for n in names if n != "none"]  # --settings=none: the uncorrected row only.
  unknown = sorted(set(names) - set(SETTINGS))
  if unknown:
    raise app.UsageError(f"Unknown --settings {unknown}; expected some of {list(SETTINGS)}.")
  mesh = train.create_mesh(config.train.num_devices, config.mesh.model)
  state, manager = train.load_state(config, FLAGS.workdir, mesh)
  manager.close()
  seqs = pipeline.load_split(config, FLAGS.split)
  out = FLAGS.out or os.path.join(FLAGS.workdir, "refine_study")
  os.makedirs(out, exist_ok=True)
  if "pose_2d_clean" not in seqs.extras:
    names = [n for n in names if SETTINGS[n].get("target") != "ground_truth"]
  rows = []
  for name in ["none"] + names:
    row = run_setting(config, state, seqs, mesh, None if name == "none" else SETTINGS[name],
                      FLAGS.max_windows)
    rows.append({"setting": name, **row})
    print(f"{name}: MPJPE {row['mpjpe']:.2f} mm, image-plane {row['plane_mm']:.2f}, "
          f"depth {row['depth_mm']:.2f}, 2D {row['proj_2d']:.2f}", flush=True)
    if jax.process_index() == 0:
      write_report(out, rows, FLAGS.split, int(state.step))
  print(json.dumps(rows, indent=1))


if __name__ == "__main__":
  app.run(main, flags_parser=config_defaults.parse_flags_or_exit)
