"""Per-action and per-subject error tables in the layout papers use (Markdown, millimetres).

`format_report(results, seqs)` renders what evaluation writes to `eval_table.md`:
  - the per-action table: one row per metric (MPJPE = Human3.6M protocol #1, PA-MPJPE =
    protocol #2), one column per action (Human3.6M's 15 in the usual order with the usual
    abbreviations, HumanEva-I's Walk/Jog/Box, or whatever actions the data has) and Avg,
    the action-wise average (mean over actions of each action's frame mean);
  - the per-subject table: (subject, action) cells, each the frame-weighted mean of its
    sequences; Avg is the mean of the cells (HumanEva-I papers' convention).
`results` is the dict of `evaluate.summarize` (per_action, per_sequence, overall).
"""

from __future__ import annotations

import math

import numpy as np

# Human3.6M's 15 actions (VideoPose3D names) -> the column headers of the field's tables.
H36M_ABBREVIATIONS = {
    "Directions": "Dir.", "Discussion": "Disc.", "Eating": "Eat", "Greeting": "Greet",
    "Phoning": "Phone", "Photo": "Photo", "Posing": "Pose", "Purchases": "Purch.",
    "Sitting": "Sit", "SittingDown": "SitD.", "Smoking": "Smoke", "Waiting": "Wait",
    "WalkDog": "WalkD.", "Walking": "Walk", "WalkTogether": "WalkT.",
}
HUMANEVA_ACTIONS = ("Walk", "Jog", "Box", "ThrowCatch", "Gestures")
METRIC_LABELS = {"mpjpe": "MPJPE", "pa_mpjpe": "PA-MPJPE", "n_mpjpe": "N-MPJPE",
                 "mpjve": "MPJVE"}
DEFAULT_METRICS = ("mpjpe", "pa_mpjpe")


def order_actions(actions) -> list[str]:
  """Human3.6M order, then HumanEva-I order, then any other names sorted."""
  known = list(H36M_ABBREVIATIONS) + [a for a in HUMANEVA_ACTIONS if a not in H36M_ABBREVIATIONS]
  actions = list(dict.fromkeys(actions))
  rank = {a: i for i, a in enumerate(known)}
  return sorted(actions, key=lambda a: (rank.get(a, len(known)), a))


def action_header(action: str) -> str:
  """Column header of an action: the field's abbreviation for Human3.6M names."""
  return H36M_ABBREVIATIONS.get(action, action)


def _fmt(value) -> str:
  return "-" if value is None or not math.isfinite(value) else f"{value:.1f}"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
  lines += ["| " + " | ".join(r) + " |" for r in rows]
  return "\n".join(lines)


def action_table(per_action: dict, overall: dict | None = None,
                 metrics=DEFAULT_METRICS) -> str:
  """Markdown table: a row per metric, a column per action, then Avg.

  Args:
    per_action: action -> {metric: mm}.
    overall: {metric: mm} for the Avg column; None = mean of the action columns.
  """
  actions = order_actions(per_action)
  header = ["Metric (mm)"] + [action_header(a) for a in actions] + ["Avg"]
  rows = []
  for m in metrics:
    vals = [per_action[a].get(m) for a in actions]
    avg = overall.get(m) if overall is not None else (
        float(np.mean(vals)) if vals else float("nan"))
    rows.append([METRIC_LABELS.get(m, m)] + [_fmt(v) for v in vals] + [_fmt(avg)])
  return _markdown(header, rows)


def subject_action_errors(results: dict, seqs, metric: str) -> dict:
  """(subject, action) -> frame-weighted mean of `metric` over that cell's sequences.

  Uses results['per_sequence'] (keyed by `seqs.sequence_name(i)`) weighted by each
  sequence's length; sequences without a value are skipped.
  """
  per_seq = results.get("per_sequence", {})
  sums, counts = {}, {}
  for i in range(seqs.num_sequences):
    value = per_seq.get(seqs.sequence_name(i), {}).get(metric)
    if value is None or not math.isfinite(value):
      continue
    key = (seqs.subject[i], seqs.action[i])
    n = int(seqs.lengths[i])
    sums[key] = sums.get(key, 0.0) + value * n
    counts[key] = counts.get(key, 0) + n
  return {k: sums[k] / counts[k] for k in sums}


def _subject_label(subject: str) -> str:
  return subject.rsplit("/", 1)[-1]  # 'Validate/S1' -> 'S1'


def subject_action_table(results: dict, seqs, metrics=DEFAULT_METRICS,
                         max_wide_columns: int = 12) -> str:
  """Markdown per-subject table.

  With at most `max_wide_columns` (action, subject) cells it is one row per metric with
  columns 'Walk S1', 'Walk S2', ... (HumanEva-I papers' layout); otherwise one row per
  (metric, subject) with a column per action. Avg: the mean of the cells.
  """
  cells = {m: subject_action_errors(results, seqs, m) for m in metrics}
  keys = set().union(*[set(c) for c in cells.values()]) if cells else set()
  subjects = sorted({s for s, _ in keys}, key=lambda s: (len(_subject_label(s)),
                                                         _subject_label(s), s))
  actions = order_actions([a for _, a in keys])
  if len(keys) <= max_wide_columns:
    cols = [(a, s) for a in actions for s in subjects if (s, a) in keys]
    header = ["Metric (mm)"] + [f"{action_header(a)} {_subject_label(s)}" for a, s in cols]
    header.append("Avg")
    rows = []
    for m in metrics:
      vals = [cells[m].get((s, a)) for a, s in cols]
      ok = [v for v in vals if v is not None]
      rows.append([METRIC_LABELS.get(m, m)] + [_fmt(v) for v in vals]
                  + [_fmt(float(np.mean(ok)) if ok else None)])
    return _markdown(header, rows)
  header = ["Metric (mm)", "Subject"] + [action_header(a) for a in actions] + ["Avg"]
  rows = []
  for m in metrics:
    for s in subjects:
      vals = [cells[m].get((s, a)) for a in actions]
      ok = [v for v in vals if v is not None]
      rows.append([METRIC_LABELS.get(m, m), _subject_label(s)] + [_fmt(v) for v in vals]
                  + [_fmt(float(np.mean(ok)) if ok else None)])
  return _markdown(header, rows)


def format_report(results: dict, seqs=None, metrics=DEFAULT_METRICS) -> str:
  """The Markdown of eval_table.md: the per-action table, then the per-subject table."""
  source = results.get("source", "?")
  split = results.get("split", "test")
  lines = [f"## Per-action errors: {source}, {split} split, checkpoint step "
           f"{results.get('checkpoint_step', '?')}", ""]
  lines.append(action_table(results["per_action"], results.get("overall"), metrics))
  lines += ["", "Avg: action-wise (each action's mean over its frames, then the mean over "
                "actions), as Human3.6M tables. MPJPE = protocol #1 (root-aligned), "
                "PA-MPJPE = protocol #2 (per-frame similarity Procrustes)."]
  fw = results.get("overall_frame_wise")
  if fw:
    lines.append("Frame-wise averages (mean over all frames): " + ", ".join(
        f"{METRIC_LABELS.get(m, m)} {_fmt(fw.get(m))}" for m in metrics) + " mm.")
  base = results.get("baseline_mean_pose")
  if base:
    lines.append(f"Training-set mean pose baseline ({base.get('averaging', 'frame-wise')}): "
                 f"MPJPE {_fmt(base.get('mpjpe'))}, PA-MPJPE {_fmt(base.get('pa_mpjpe'))} mm.")
  if seqs is not None and len(set(seqs.subject)) > 0:
    lines += ["", "## Per-subject errors", "",
              subject_action_table(results, seqs, metrics), "",
              "Cells: the frame-weighted mean of each (action, subject); Avg: the mean of "
              "the cells."]
  return "\n".join(lines) + "\n"
