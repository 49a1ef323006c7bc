"""Semi-supervised splits: keep 3D labels for a fraction of the training data only."""

from __future__ import annotations

import dataclasses

import numpy as np

from posemachine.data.sequences import Sequences


def apply_labelled_fraction(seqs: Sequences, fraction: float, by: str, seed: int) -> Sequences:
  """Marks all but `fraction` of the subjects (or sequences) as 2D-only (has_3d False).

  The labelled set is drawn with NumPy's RNG seeded by `seed`, so it is fixed for a run.
  With fraction > 0 at least one subject/sequence stays labelled; fraction 0 keeps none.
  It is drawn over the whole split: on one process's shard (`seqs.split_index`) every
  process draws the same set as a single process would.
  Returns a new Sequences sharing the frame arrays.
  """
  if fraction >= 1.0:
    return seqs
  rng = np.random.default_rng([seed, 17])
  sharded = seqs.split_index is not None
  if by == "subject":
    groups = np.asarray(seqs.subject)
    names = np.unique(np.asarray(seqs.split_subjects) if sharded else groups)
  else:
    index = seqs.split_index if sharded else np.arange(seqs.num_sequences)
    total = len(seqs.split_subjects) if sharded else seqs.num_sequences
    groups = np.asarray(index).astype(str)
    names = np.unique(np.arange(total).astype(str))
  n = 0 if fraction <= 0 else max(1, int(round(fraction * len(names))))
  labelled = set(rng.choice(names, n, replace=False).tolist()) if n else set()
  has_3d = seqs.has_3d & np.array([g in labelled for g in groups])
  return dataclasses.replace(seqs, has_3d=has_3d)
