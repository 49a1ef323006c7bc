"""Dataset dispatch and the deterministic training-batch source.

`load_split(config, split)` returns validated `Sequences` for 'train' | 'val' | 'test'.
`train_batch(seqs, config, step)` draws the global batch of a step from a NumPy RNG seeded
by (seed, step): the data order depends only on the seed and step, so a resumed run sees
exactly the batches it would have seen, and each process can cut its own shard from it.
With data.format='tfds' and several processes each process holds only its own shard of the
training sequences (data/tfds_data.py) and draws its rows from (seed, step, process index).
The default trainer samples on the device instead (data/device_sampler.py); this host
sampler is its reference and the fallback (data.device_sampling=False).
"""

from __future__ import annotations

import numpy as np

from posemachine.data import augment
from posemachine.data import sequences as seq_lib
from posemachine.data.sequences import DataError


def process_sharded(config) -> bool:
  """True when this process holds only its own shard of the training sequences."""
  if config.data.format != "tfds" or not config.data.shard_by_process:
    return False
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_count() > 1


def load_split(config, split: str, fmt: str | None = None) -> seq_lib.Sequences:
  """Loads one split of `config.data.source` and validates it. fmt: 'memory' | 'tfds'
  (default config.data.format); 'tfds' train: this process's shard (see process_sharded)."""
  d = config.data
  if split not in ("train", "val", "test"):
    raise DataError(f"Unknown split {split!r}; expected 'train', 'val' or 'test'.")
  if (fmt or d.format) == "tfds":
    from posemachine.data import tfds_data  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    seqs = tfds_data.load_split(config, split, jax.process_index(), jax.process_count())
  elif d.source == "synthetic":
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
  per = t.batch_size // num_processes
  if num_processes > 1 and process_sharded(config):
    # seqs is this process's shard: it draws its own rows (from (seed, step, process)).
    rng = np.random.default_rng([config.seed, step, process_index])
    rows, sl = per, slice(None)
  else:
    rng = np.random.default_rng([config.seed, step])
    rows, sl = t.batch_size, slice(process_index * per, (process_index + 1) * per)
  batch = seq_lib.sample_train_batch(seqs, rng, rows, config.data.window,
                                     config.data.labelled_share)
  if t.augment_noise_px > 0:
    # Fresh detector-like noise each step; pixels at w = 1000 -> normalised units.
    for k in ("pose_2d", "view_pose_2d") if "view_pose_2d" in batch else ("pose_2d",):
      noise = rng.normal(size=batch[k].shape).astype(np.float32)
      batch[k] = batch[k] + noise * (2.0 * t.augment_noise_px / 1000.0)
  if t.augment_flip:  # drawn after the noise: runs without flips keep their batches.
    batch = augment.flip_windows(batch, rng.random(rows) < 0.5, xp=np)
  return {k: v[sl] for k, v in batch.items()}
