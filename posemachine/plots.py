"""Evaluation and training figures (matplotlib, headless Agg backend).

Every figure is written atomically (a reader never sees a half-written PNG)
and closed after saving.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
from matplotlib import ticker  # pylint: disable=g-import-not-at-top
import numpy as np

from posemachine import io_utils  # pylint: disable=g-import-not-at-top
from posemachine import skeleton  # pylint: disable=g-import-not-at-top

# Colours per pose source and body side (centre, left, right).
_GT_COLOURS = ("#333333", "#1f77b4", "#2ca02c")       # grey, blue, green
_PRED_COLOURS = ("#9467bd", "#d62728", "#ff7f0e")     # purple, red, orange


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> None:
  """Saves `fig` atomically (format from the suffix, PNG if none) and closes it."""
  fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
  try:
    with io_utils.atomic_open(path, "wb") as f:
      fig.savefig(f, format=fmt, dpi=dpi, bbox_inches="tight")
  finally:
    plt.close(fig)


def plot_per_joint_error(errors_mm: Mapping[str, np.ndarray],
                         joint_names: Sequence[str], path: str | os.PathLike,
                         title: str = "Per-joint error") -> None:
  """Grouped bar chart of per-joint errors, one bar colour per metric.

  Args:
    errors_mm: metric name -> (K,) mean error per joint in millimetres, e.g.
      {"MPJPE": ..., "PA-MPJPE": ...}.
    joint_names: K joint names for the x axis.
    path: output image file.
    title: figure title.
  """
  names = list(errors_mm)
  num_joints = len(joint_names)
  width = 0.8 / max(len(names), 1)
  x = np.arange(num_joints)
  fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * num_joints + 2), 4.2))
  for i, name in enumerate(names):
    err = np.asarray(errors_mm[name], dtype=np.float64).reshape(-1)
    if err.shape != (num_joints,):
      raise ValueError(f"errors_mm[{name!r}] has shape {err.shape}; "
                       f"expected ({num_joints},).")
    colour = f"C{i}"
    ax.bar(x + (i - (len(names) - 1) / 2) * width, err, width,
           color=colour, label=f"{name} (mean {np.nanmean(err):.1f})")
    ax.axhline(np.nanmean(err), color=colour, linestyle="--", linewidth=1)
  ax.set_xticks(x)
  ax.set_xticklabels(joint_names, rotation=45, ha="right", rotation_mode="anchor")
  ax.set_xlim(-0.6, num_joints - 0.4)
  ax.set_ylabel("error (mm)")
  ax.set_title(title)
  ax.grid(axis="y", alpha=0.3)
  ax.set_axisbelow(True)
  ax.legend(loc="upper left", fontsize="small")
  save_figure(fig, path)


def _draw_pose(ax, pose, parents, left, right, colours, style, label) -> None:
  """Draws bones of one (K, 3) camera-frame pose on a 3D axis, y up."""
  # Camera x right, y down, z forward -> plot (x, z, -y): depth into the page.
  px, py, pz = pose[:, 0], pose[:, 2], -pose[:, 1]
  width = 2.4 if style == "-" else 1.6
  for child, parent in enumerate(parents):
    if parent < 0:
      continue
    side = 1 if child in left else 2 if child in right else 0
    ax.plot([px[parent], px[child]], [py[parent], py[child]], [pz[parent], pz[child]],
            color=colours[side], linestyle=style, linewidth=width,
            solid_capstyle="round")
  ax.scatter(px, py, pz, color=colours[0], s=5, depthshade=False)
  # Invisible lines give the legend entries.
  for side, name in ((1, "left"), (2, "right")):
    ax.plot([], [], color=colours[side], linestyle=style, linewidth=width,
            label=f"{label} {name}")


def plot_skeletons(pred, gt, parents: Sequence[int], path: str | os.PathLike,
                   titles: Sequence[str] | None = None,
                   left: Sequence[int] = skeleton.LEFT,
                   right: Sequence[int] = skeleton.RIGHT) -> None:
  """A row of 3D plots comparing predicted and ground-truth poses.

  Args:
    pred: (N, K, 3) or (K, 3) predicted root-relative camera-frame poses in
      metres (camera axes: x right, y down, z forward).
    gt: ground truth of the same shape and convention.
    parents: (K,) parent index of each joint, -1 for the root.
    path: output image file.
    titles: optional N per-frame titles; each gets that frame's MPJPE in mm.
    left: joints of the left side (drawn blue for gt, red for the prediction).
    right: joints of the right side (green for gt, orange for the prediction).
  """
  pred = np.asarray(pred, dtype=np.float64)
  gt = np.asarray(gt, dtype=np.float64)
  if pred.ndim == 2:
    pred, gt = pred[None], gt[None]
  if pred.shape != gt.shape or pred.shape[-1] != 3:
    raise ValueError(f"pred {pred.shape} and gt {gt.shape} must both be (N, K, 3).")
  num = pred.shape[0]
  if titles is not None and len(titles) != num:
    raise ValueError(f"{len(titles)} titles for {num} poses.")
  left, right = set(left), set(right)
  # Root-aligned MPJPE per frame (mm).
  rel_pred = pred - pred[:, :1]
  rel_gt = gt - gt[:, :1]
  errors = np.linalg.norm(rel_pred - rel_gt, axis=-1).mean(-1) * 1000.0
  # One cube half-size for all frames so that sizes are comparable.
  both = np.concatenate([pred, gt], axis=1)  # (N, 2K, 3)
  centres = (both.max(1) + both.min(1)) / 2
  radius = np.nanmax(np.abs(both - centres[:, None])) * 1.05
  radius = radius if np.isfinite(radius) and radius > 0 else 1.0

  fig = plt.figure(figsize=(3.2 * num, 3.8))
  for i in range(num):
    ax = fig.add_subplot(1, num, i + 1, projection="3d")
    _draw_pose(ax, gt[i], parents, left, right, _GT_COLOURS, "-", "ground truth")
    _draw_pose(ax, pred[i], parents, left, right, _PRED_COLOURS, "--", "prediction")
    cx, cy, cz = centres[i]
    ax.set_xlim(cx - radius, cx + radius)
    ax.set_ylim(cz - radius, cz + radius)
    ax.set_zlim(-cy - radius, -cy + radius)
    ax.set_box_aspect((1, 1, 1), zoom=1.1)
    # Seen from slightly above and to the side of the camera.
    ax.view_init(elev=12, azim=-70)
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
      axis.set_major_locator(ticker.MaxNLocator(3))
    ax.tick_params(labelsize=6, pad=0)
    ax.set_xlabel("x (m)", fontsize=7, labelpad=-4)
    ax.set_ylabel("z (m)", fontsize=7, labelpad=-4)
    ax.set_zlabel("-y (m)", fontsize=7, labelpad=-4)
    head = titles[i] + "\n" if titles is not None else ""
    ax.set_title(f"{head}MPJPE {errors[i]:.1f} mm", fontsize=10, pad=0)
  handles, labels = fig.axes[0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="lower center", ncol=4, fontsize="small",
             frameon=False)
  fig.subplots_adjust(left=0.0, right=0.97, bottom=0.1, top=0.92, wspace=0.08)
  save_figure(fig, path)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  """Reads a JSON-lines file, skipping blank or malformed (partial) lines."""
  rows = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue
      if isinstance(row, dict):
        rows.append(row)
  return rows


def _family(key: str) -> str:
  """Groups metric keys into subplots: losses, pose errors, or the key alone."""
  prefix, _, name = key.rpartition("/")
  lower = name.lower()
  if "loss" in lower:
    kind = "loss"
  elif any(m in lower for m in ("mpjpe", "mpjve")):
    kind = "pose error"
  else:
    return key
  return f"{prefix} {kind}" if prefix else kind


def plot_training_curves(jsonl_path: str | os.PathLike,
                         path: str | os.PathLike) -> None:
  """Plots every numeric metric of a `metrics.jsonl` against the step.

  One subplot per family ("train loss": all train loss terms, "val pose error":
  MPJPE/PA-MPJPE/..., other keys alone). Losses use a log y axis when positive.
  Non-numeric values are skipped; when a step repeats (a resumed run), the
  last value logged for it wins.

  Args:
    jsonl_path: file written by `MetricWriter`.
    path: output image file.
  """
  series: dict[str, dict[int, float]] = {}
  for row in read_jsonl(jsonl_path):
    step = row.get("step")
    if not isinstance(step, (int, float)) or isinstance(step, bool):
      continue
    for key, value in row.items():
      if key in ("step", "time") or isinstance(value, bool):
        continue
      if isinstance(value, (int, float)) and math.isfinite(value):
        series.setdefault(key, {})[int(step)] = float(value)

  families: dict[str, list[str]] = {}
  for key in sorted(series):
    families.setdefault(_family(key), []).append(key)

  num = max(len(families), 1)
  cols = min(num, 3)
  rows = math.ceil(num / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.3 * rows),
                           squeeze=False)
  for ax in axes.flat[num:]:
    ax.set_visible(False)
  if not families:
    axes[0, 0].text(0.5, 0.5, "no numeric metrics", ha="center", va="center",
                    transform=axes[0, 0].transAxes)
  for ax, (family, keys) in zip(axes.flat, sorted(families.items())):
    for key in keys:
      steps = np.array(sorted(series[key]))
      values = np.array([series[key][s] for s in steps])
      ax.plot(steps, values, label=key, marker="." if len(steps) < 30 else None)
    all_values = np.concatenate([list(series[k].values()) for k in keys])
    if "loss" in family and np.all(all_values > 0):
      ax.set_yscale("log")
    ax.set_title(family, fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3, which="both")
    if len(keys) > 1:
      ax.legend(fontsize="x-small")
  fig.tight_layout()
  save_figure(fig, path)


def _draw_pose_2d(ax, uv, parents, left, right, colours, style, label) -> None:
  """Bones of one (K, 2) pose in image pixels on a 2D axis."""
  for child, parent in enumerate(parents):
    if parent < 0:
      continue
    side = 1 if child in left else 2 if child in right else 0
    ax.plot([uv[parent, 0], uv[child, 0]], [uv[parent, 1], uv[child, 1]],
            color=colours[side], linestyle=style, linewidth=1.6 if style == "-" else 1.2)
  for side, name in ((1, "left"), (2, "right")):
    ax.plot([], [], color=colours[side], linestyle=style, label=f"{label} {name}")


def plot_image_predictions(images, pred_2d, true_2d, pred_3d, gt_3d, path: str | os.PathLike,
                           parents: Sequence[int] = skeleton.PARENTS,
                           left: Sequence[int] = skeleton.LEFT,
                           right: Sequence[int] = skeleton.RIGHT) -> None:
  """A sheet: each column one input frame with its predicted and true 2D poses, and below
  it the predicted and true 3D poses.

  Args:
    images: (N, S, S, 3) RGB crops in [0, 1].
    pred_2d, true_2d: (N, K, 2) crop coordinates in [-1, 1].
    pred_3d, gt_3d: (N, K, 3) root-relative camera-frame metres (NaN rows are skipped).
    path: output PNG.
  """
  images = np.asarray(images)
  n, size = images.shape[0], images.shape[1]
  to_px = lambda uv: (np.asarray(uv, np.float64) + 1.0) / 2.0 * size - 0.5
  left, right = set(left), set(right)
  fig = plt.figure(figsize=(2.4 * n, 5.0))
  for i in range(n):
    ax = fig.add_subplot(2, n, i + 1)
    ax.imshow(np.clip(images[i], 0, 1), interpolation="nearest")
    _draw_pose_2d(ax, to_px(true_2d[i]), parents, left, right, _GT_COLOURS, "--", "true")
    _draw_pose_2d(ax, to_px(pred_2d[i]), parents, left, right, _PRED_COLOURS, "-", "predicted")
    err = np.linalg.norm(to_px(pred_2d[i]) - to_px(true_2d[i]), axis=-1).mean()
    ax.set_title(f"2D error {err:.1f} px", fontsize=8)
    ax.set_xlim(-0.5, size - 0.5)
    ax.set_ylim(size - 0.5, -0.5)
    ax.axis("off")
    ax3 = fig.add_subplot(2, n, n + i + 1, projection="3d")
    if np.isfinite(pred_3d[i]).all():
      _draw_pose(ax3, np.asarray(gt_3d[i]), parents, left, right, _GT_COLOURS, "-",
                 "ground truth")
      _draw_pose(ax3, np.asarray(pred_3d[i]), parents, left, right, _PRED_COLOURS, "--",
                 "prediction")
      e3 = np.linalg.norm(np.asarray(pred_3d[i]) - np.asarray(gt_3d[i]), axis=-1).mean() * 1000
      ax3.set_title(f"MPJPE {e3:.0f} mm", fontsize=8, pad=0)
    ax3.set_xlim(-1, 1)
    ax3.set_ylim(-1, 1)
    ax3.set_zlim(-1, 1)
    ax3.view_init(elev=12, azim=-70)
    ax3.tick_params(labelsize=5, pad=0)
  handles, labels = [], []
  for ax in fig.axes[:2]:
    h, l = ax.get_legend_handles_labels()
    handles += h
    labels += l
  fig.legend(handles, labels, loc="lower center", ncol=4, fontsize="small", frameon=False)
  fig.subplots_adjust(left=0.01, right=0.99, bottom=0.08, top=0.95, wspace=0.05, hspace=0.1)
  save_figure(fig, path)
