"""Dataset dispatch and the deterministic training-batch source.

`load_split(config, split)` returns validated `Sequences` for 'train' | 'val' | 'test'.
`train_batch(seqs, config, step)` draws the global batch of a step from a NumPy RNG seeded
by (seed, step): the data order depends only on the seed and step, so a resumed run sees
exactly the batches it would have seen, and each process can cut its own shard from it.
"""

from __future__ import annotations

import numpy as np

from posemachine.data import augment
from posemachine.data import sequences as seq_lib
from posemachine.data.sequences import DataError


def load_split(config, split: str) -> seq_lib.Sequences:
  """Loads one split of `config.data.source` and validates it."""
  d = config.data
  if split not in ("train", "val", "test"):
    raise DataError(f"Unknown split {split!r}; expected 'train', 'val' or 'test'.")
  if d.source == "synthetic":
    from posemachine.data import synthetic  # pylint: disable=g-import-not-at-top
    seqs = synthetic.generate(d.synthetic, split)
  elif d.source == "h36m":
    from posemachine.data import h36m  # pylint: disable=g-import-not-at-top
    seqs = h36m.load_split(config, split)
  elif d.source == "humaneva":
    from posemachine.data import humaneva  # pylint: disable=g-import-not-at-top
    seqs = humaneva.load_split(config, split)
  elif d.source == "mocap":
    from posemachine.data import bvh  # pylint: disable=g-import-not-at-top
    seqs = bvh.load_split(config, split)
  else:
    raise DataError(f"Unknown config.data.source {d.source!r}; expected 'synthetic', 'h36m', "
                    "'humaneva' or 'mocap'.")
  return seqs.validate(d.num_joints)


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
  if t.augment_flip:  # drawn after the noise: runs without flips keep their batches.
    batch = augment.flip_windows(batch, rng.random(t.batch_size) < 0.5, xp=np)
  per = t.batch_size // num_processes
  sl = slice(process_index * per, (process_index + 1) * per)
  return {k: v[sl] for k, v in batch.items()}
