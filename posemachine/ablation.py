"""Ablation report: the value of the projector, the test-time correction and 2D-only data.

python -m posemachine.ablation --config=configs/synthetic.py --workdir=runs/ablation \
    [--steps=3000] [--variants=supervised,consistency,...] [--config.x=y ...]

Trains each variant on the same data with the same seed and budget (its own workdir under
--workdir; a rerun resumes or reuses finished variants), evaluates all on the same test
split, and writes ablation.md, ablation.json and ablation.png into --workdir.
Variants:
  supervised           3D terms only (no 2D projection consistency).
  consistency          + the projector's 2D consistency terms (the paper's training).
  consistency+refine   the same checkpoint, + test-time self-correction in evaluation.
  labelled_10_only     only the 10 % labelled subjects/sequences, supervised.
  semi_10              10 % labelled + the other 90 % as 2D-only data with the priors;
                       half of each batch from the labelled part (SHARE).
  semi_10_multiview    semi_10 + cross-view consistency on the 2D-only data (synchronised
                       calibrated second views, data/views.py; half the batch, as each
                       window is lifted twice). Skipped when the data has no second views.
  semi_10_cycle        semi_10 + the monocular rotation cycle (losses.py: a virtual camera
                       orbiting the subject; no second camera; half the batch).
  labelled_1_only, semi_1   the same at 1 %.
  self_supervised      no 3D labels at all: 2D consistency, weak-perspective 2D term and the
                       bone-length / symmetry priors (losses.py).
  self_supervised_multiview  the same + cross-view consistency.
  semi_1_cycle, self_supervised_cycle  the same with the monocular rotation cycle.
The fraction is counted in `data.labelled_by` units ('sequence' by default here: with few
synthetic subjects, 10 % and 1 % of subjects would both round to one subject).
"""

from __future__ import annotations

import json
import os

from absl import app, flags, logging
from ml_collections import config_flags

from posemachine import config_defaults, host_memory, io_utils, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/synthetic.py", "Base configuration file.")
flags.DEFINE_string("workdir", None, "Output directory (one subdirectory per variant).")
flags.DEFINE_integer("steps", 0, "Training steps per variant (0: the config's).")
flags.DEFINE_string("labelled_by", "sequence", "'subject' or 'sequence'.")
flags.DEFINE_list("variants", None, "Subset of variants to run (default: all).")
flags.mark_flags_as_required(["workdir"])

# Semi-supervised batches: half the windows from the labelled sequences (as VideoPose3D's
# separate labelled and unlabelled batches); in proportion to frames, only 10 % (1 %) of
# each batch would carry 3D, far less 3D signal per step than the labelled-only baseline.
SHARE = 0.5
# Bone terms are in m^2 (a 2 cm deviation costs 4e-4): weight 10 lets them matter beside the
# 2D terms (about 0.05 in training); weight 1 left them idle (measured: 72.5 vs 71.9 mm).
PRIORS = {"w_2d_weak_perspective": 1.0, "w_bone_length_prior": 10.0, "w_symmetry": 10.0}
MULTIVIEW = {**PRIORS, "w_multiview": 1.0}
CYCLE = {**PRIORS, "w_rotation_cycle": 1.0}
VARIANTS = {
    "supervised": {"loss": {"w_2d": 0.0, "w_bone_2d": 0.0}},
    "consistency": {},
    "consistency+refine": {"_evaluate_only": "consistency", "refine": {"enabled": True}},
    "labelled_10_only": {"data": {"labelled_fraction": 0.1, "use_unlabelled": False}},
    "semi_10": {"data": {"labelled_fraction": 0.1, "labelled_share": SHARE}, "loss": PRIORS},
    # Each step lifts a second view of every window: half the batch keeps the compute equal.
    "semi_10_multiview": {"data": {"labelled_fraction": 0.1, "labelled_share": SHARE},
                          "loss": MULTIVIEW, "_batch_fraction": 0.5},
    # The monocular rotation cycle lifts a second (virtual) view too: half the batch.
    "semi_10_cycle": {"data": {"labelled_fraction": 0.1, "labelled_share": SHARE},
                      "loss": CYCLE, "_batch_fraction": 0.5},
    "labelled_1_only": {"data": {"labelled_fraction": 0.01, "use_unlabelled": False}},
    "semi_1": {"data": {"labelled_fraction": 0.01, "labelled_share": SHARE}, "loss": PRIORS},
    "self_supervised": {"data": {"labelled_fraction": 0.0}, "loss": PRIORS},
    "self_supervised_multiview": {"data": {"labelled_fraction": 0.0}, "loss": MULTIVIEW,
                                  "_batch_fraction": 0.5},
    "semi_1_cycle": {"data": {"labelled_fraction": 0.01, "labelled_share": SHARE},
                     "loss": CYCLE, "_batch_fraction": 0.5},
    "self_supervised_cycle": {"data": {"labelled_fraction": 0.0}, "loss": CYCLE,
                              "_batch_fraction": 0.5},
}


def variant_config(base, name):
  config = base.copy_and_resolve_references()
  for group, values in VARIANTS[name].items():
    if group == "_batch_fraction":
      config.train.batch_size = max(1, int(config.train.batch_size * values))
    if group.startswith("_"):
      continue
    for k, v in values.items():
      config[group][k] = v
  return config


def _has_views(config) -> bool:
  from posemachine.data import pipeline, sequences, views  # pylint: disable=g-import-not-at-top
  try:
    views.attach(pipeline.load_split(config, "train"))
  except sequences.DataError:
    return False
  return True


def _row(name, results):
  o = results["overall"]
  row = {"variant": name, "mpjpe": o["mpjpe"], "pa_mpjpe": o["pa_mpjpe"],
         "n_mpjpe": o["n_mpjpe"], "proj_2d": o["proj_2d"]}
  if "mpjpe_unrefined" in o:
    row.update(mpjpe_unrefined=o["mpjpe_unrefined"], proj_2d_unrefined=o["proj_2d_unrefined"],
               refine_discarded=o["refine_discarded"])
  return row


def write_report(workdir, rows, base):
  io_utils.atomic_write_json(os.path.join(workdir, "ablation.json"),
                             {"rows": rows, "config": json.loads(base.to_json_best_effort())})
  lines = ["| variant | MPJPE (mm) | PA-MPJPE (mm) | N-MPJPE (mm) | 2D reprojection (x1e-3) |",
           "|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['variant']} | {r['mpjpe']:.1f} | {r['pa_mpjpe']:.1f} | "
                 f"{r['n_mpjpe']:.1f} | {r['proj_2d']:.1f} |")
  refined = [r for r in rows if "mpjpe_unrefined" in r]
  for r in refined:
    lines.append(f"\n{r['variant']}: MPJPE {r['mpjpe_unrefined']:.2f} -> {r['mpjpe']:.2f} mm, "
                 f"2D reprojection {r['proj_2d_unrefined']:.2f} -> {r['proj_2d']:.2f}, "
                 f"{100 * r['refine_discarded']:.1f} % of corrections discarded.")
  lines.append("\nAveraging: action-wise (mean per action, then over actions); test split; "
               f"{base.train.num_steps} steps per variant, seed {base.seed}.")
  io_utils.atomic_write_text(os.path.join(workdir, "ablation.md"), "\n".join(lines) + "\n")
  from posemachine import plots  # pylint: disable=g-import-not-at-top
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(1.3 * len(rows) + 3, 4))
  x = range(len(rows))
  ax.bar([i - 0.2 for i in x], [r["mpjpe"] for r in rows], 0.4, label="MPJPE")
  ax.bar([i + 0.2 for i in x], [r["pa_mpjpe"] for r in rows], 0.4, label="PA-MPJPE")
  ax.set_xticks(list(x), [r["variant"] for r in rows], rotation=20, ha="right")
  ax.set_ylabel("error (mm)")
  ax.set_title("Ablation on the test split")
  ax.legend()
  ax.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  plots.save_figure(fig, os.path.join(workdir, "ablation.png"))


def main(argv):
  del argv
  host_memory.keep_freed_memory()  # before JAX starts its backend
  base = FLAGS.config
  base.data.labelled_by = FLAGS.labelled_by
  if FLAGS.steps:
    base.train.num_steps = FLAGS.steps
    base.train.eval_every = max(1, min(base.train.eval_every, FLAGS.steps))
  names = FLAGS.variants or list(VARIANTS)
  unknown = [n for n in names if n not in VARIANTS]
  if unknown:
    raise app.UsageError(f"Unknown variants {unknown}; expected some of {list(VARIANTS)}.")
  rows = []
  for name in names:
    config = variant_config(base, name)
    if config.loss.w_multiview and not _has_views(config):
      logging.warning("Variant %s skipped: the training data has no synchronised second "
                      "views (data/views.py).", name)
      continue
    source = VARIANTS[name].get("_evaluate_only")
    logging.info("Ablation variant %s", name)
    if source:
      src_dir = os.path.join(FLAGS.workdir, source)
      if not os.path.isdir(os.path.join(src_dir, "checkpoints")):
        train.train_and_evaluate(variant_config(base, source), src_dir)
      results = train.evaluate_workdir(config, src_dir, out_dir=os.path.join(FLAGS.workdir, name))
    else:
      results = train.train_and_evaluate(config, os.path.join(FLAGS.workdir, name))
    if "overall" not in results:  # preempted (SIGTERM): checkpoint saved, rerun resumes.
      logging.warning("Variant %s stopped early (%s); rerun the same command to resume.",
                      name, results)
      return
    rows.append(_row(name, results))
    write_report(FLAGS.workdir, rows, base)  # after each variant: partial results survive.
  print(open(os.path.join(FLAGS.workdir, "ablation.md")).read())


if __name__ == "__main__":
  app.run(main, flags_parser=config_defaults.parse_flags_or_exit)
