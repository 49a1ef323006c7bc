"""Tests for posemachine.plots: valid PNGs written atomically."""

import json
import os

import matplotlib.pyplot as plt
import numpy as np

from posemachine import plots
from posemachine import skeleton

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def standing_pose():
  """(17, 3) root-relative standing pose in camera axes (metres, y down)."""
  x = {"c": 0.0, "l": 0.15, "r": -0.15}  # subject's left on camera's right
  joints = [
      (0.0, 0.0), (x["r"] * 0.8, 0.0), (x["r"] * 0.8, 0.45), (x["r"] * 0.8, 0.88),
      (x["l"] * 0.8, 0.0), (x["l"] * 0.8, 0.45), (x["l"] * 0.8, 0.88),
      (0.0, -0.25), (0.0, -0.5), (0.0, -0.6), (0.0, -0.72),
      (x["l"] * 1.2, -0.48), (x["l"] * 1.6, -0.22), (x["l"] * 1.7, 0.02),
      (x["r"] * 1.2, -0.48), (x["r"] * 1.6, -0.22), (x["r"] * 1.7, 0.02),
  ]
  pose = np.array([(px, py, 0.0) for px, py in joints])
  return pose


def assert_png(path, tmp_path, min_size=5000):
  data = path.read_bytes()
  assert data[:8] == PNG_MAGIC
  assert len(data) > min_size
  assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
  assert not plt.get_fignums()  # figures are closed


def test_plot_per_joint_error(tmp_path):
  rng = np.random.default_rng(0)
  errors = {"MPJPE": rng.uniform(10, 90, 17), "PA-MPJPE": rng.uniform(5, 50, 17)}
  path = tmp_path / "per_joint.png"
  plots.plot_per_joint_error(errors, skeleton.JOINT_NAMES, path, "Per-joint error")
  assert_png(path, tmp_path)


def test_plot_skeletons(tmp_path):
  rng = np.random.default_rng(1)
  gt = np.stack([standing_pose()] * 3)
  gt[1, [12, 13], 2] -= 0.3  # left arm reaching towards the camera
  pred = gt + rng.normal(scale=0.03, size=gt.shape)
  pred -= pred[:, :1]
  path = tmp_path / "skeletons.png"
  plots.plot_skeletons(pred, gt, skeleton.PARENTS, path, titles=["a", "b", "c"])
  assert_png(path, tmp_path)
  # A single (K, 3) pose also works.
  plots.plot_skeletons(pred[0], gt[0], skeleton.PARENTS, tmp_path / "one.png")
  assert_png(tmp_path / "one.png", tmp_path)


def test_plot_training_curves(tmp_path):
  jsonl = tmp_path / "metrics.jsonl"
  with open(jsonl, "w") as f:
    for step in range(0, 1000, 50):
      row = {"step": step, "time": 1.7e9 + step, "train/loss": 1.0 / (1 + step),
             "train/loss_2d": 0.5 / (1 + step) ** 0.5, "train/lr": 1e-3,
             "note": "text", "flag": True}
      f.write(json.dumps(row) + "\n")
      if step % 200 == 0:
        f.write(json.dumps({"step": step, "val/mpjpe": 200.0 - step * 0.1,
                            "val/pa_mpjpe": 120.0 - step * 0.05}) + "\n")
    f.write('{"step": 1000, "train/lo')  # a torn last line is skipped
  path = tmp_path / "curves.png"
  plots.plot_training_curves(jsonl, path)
  assert_png(path, tmp_path)
