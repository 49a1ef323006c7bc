"""Dataset dispatch and the deterministic training-batch source.

`load_split(config, split)` returns validated `Sequences` for 'train' | 'val' | 'test'.
`train_batch(seqs, config, step)` draws the global batch of a step from a NumPy RNG seeded
by (seed, step): the data order depends only on the seed and step, so a resumed run sees
exactly the batches it would have seen, and each process can cut its own shard from it.
"""

from __future__ import annotations

import os

import numpy as np

from posemachine.data import sequences as seq_lib
from posemachine.data.sequences import DataError

H36M_FILES_HELP = """\
Human3.6M expects the VideoPose3D-format files in --config.data.dir ({dir}):
  data_3d_h36m.npz           3D mocap (positions_3d: subject -> action -> (T, 32, 3) metres)
  data_2d_h36m_{kp}.npz   2D keypoints (positions_2d: subject -> action -> 4 x (T, 17, 2) px)
Prepare them with VideoPose3D's data/prepare_data_h36m.py from the Human3.6M release
(https://github.com/facebookresearch/VideoPose3D/blob/main/DATASETS.md); 2D detections
(e.g. cpn_ft_h36m_dbb) come from the same page."""


def load_split(config, split: str) -> seq_lib.Sequences:
  """Loads one split of `config.data.source` and validates it."""
  d = config.data
  if split not in ("train", "val", "test"):
    raise DataError(f"Unknown split {split!r}; expected 'train', 'val' or 'test'.")
  if d.source == "synthetic":
    from posemachine.data import synthetic  # pylint: disable=g-import-not-at-top
    seqs = synthetic.generate(d.synthetic, split)
  elif d.source == "h36m":
    seqs = _load_h36m(config, split)
  else:
    raise DataError(f"Unknown config.data.source {d.source!r}; expected 'synthetic' or 'h36m'.")
  return seqs.validate(d.num_joints)


def _load_h36m(config, split):
  d = config.data
  help_text = H36M_FILES_HELP.format(dir=d.dir or "<not set>", kp=d.h36m.keypoints)
  if not d.dir:
    raise DataError("config.data.dir is not set.\n" + help_text)
  needed = ["data_3d_h36m.npz", f"data_2d_h36m_{d.h36m.keypoints}.npz"]
  missing = [f for f in needed if not os.path.isfile(os.path.join(d.dir, f))]
  if missing:
    raise DataError(f"Missing {missing} in {os.path.abspath(d.dir)}.\n" + help_text)
  raise DataError(
      f"Found {needed} in {d.dir}, but the Human3.6M reader is not implemented in this "
      "version of posemachine (tracked as the real-data issue); use the synthetic default "
      "(configs/synthetic.py) for now.")


def train_batch(seqs: seq_lib.Sequences, config, step: int, num_processes: int = 1,
                process_index: int = 0) -> dict:
  """This process's share of the global training batch of `step` (NumPy, float32).

  Returns pose_2d (b, T, K, 2), confidence (b, T, K), pose_3d (b, T, K, 3), mask (b, T),
  has_3d (b,), with b = batch_size / num_processes.
  """
  t = config.train
  rng = np.random.default_rng([config.seed, step])
  batch = seq_lib.sample_train_batch(seqs, rng, t.batch_size, config.data.window)
  if t.augment_noise_px > 0:
    # Fresh detector-like noise each step; pixels at w = 1000 -> normalised units.
    noise = rng.normal(size=batch["pose_2d"].shape).astype(np.float32)
    batch["pose_2d"] = batch["pose_2d"] + noise * (2.0 * t.augment_noise_px / 1000.0)
  per = t.batch_size // num_processes
  sl = slice(process_index * per, (process_index + 1) * per)
  return {k: v[sl] for k, v in batch.items()}
