"""A container for many variable-length pose sequences, validation, and window sampling.

Every data source (synthetic motion now; Human3.6M, HumanEva-I, BVH later) produces a
`Sequences`. Frames of all sequences are stored concatenated; `starts`/`lengths` index them.
The trainer cuts fixed-length windows from it (static shapes), the evaluator tiles each
sequence with windows and a padding mask.
"""

from __future__ import annotations

import dataclasses

import numpy as np



from posemachine.errors import DataError  # pylint: disable=unused-import  (re-exported)


@dataclasses.dataclass
class Sequences:
  """Pose sequences stored flat.

  Attributes:
    pose_3d: (N, K, 3) float32, camera frame, root-relative (pelvis at 0), metres.
    pose_2d: (N, K, 2) float32 observed 2D pose, normalised screen coordinates
      (u / w * 2 - [1, h / w]).
    confidence: (N, K) float32 per-joint detector confidence in [0, 1].
    starts: (S,) int64 index of each sequence's first frame.
    lengths: (S,) int64 number of frames of each sequence (>= 1).
    subject, action, camera: (S,) str labels per sequence.
    has_3d: (S,) bool, whether pose_3d of that sequence is a label (False: 2D only).
    extras: optional per-frame arrays with leading axis N (e.g. 'pose_2d_clean',
      'root_3d' (N, 3) camera-space pelvis position in metres).
    source: a name for error messages (a file path or 'synthetic:test').
    split_index: for one process's shard of a split (tfds, several processes), (S,) int64
      index of each sequence in the whole split; None when the whole split is loaded.
    split_subjects: with split_index, the subject of every sequence of the whole split (so
      choices drawn over the split, e.g. the labelled subjects, agree across processes).
  """
  pose_3d: np.ndarray
  pose_2d: np.ndarray
  confidence: np.ndarray
  starts: np.ndarray
  lengths: np.ndarray
  subject: list
  action: list
  camera: list
  has_3d: np.ndarray
  extras: dict = dataclasses.field(default_factory=dict)
  source: str = "sequences"
  split_index: np.ndarray | None = None
  split_subjects: tuple | None = None

  @property
  def num_sequences(self) -> int:
    return len(self.starts)

  @property
  def num_frames(self) -> int:
    return int(self.lengths.sum())

  @property
  def num_joints(self) -> int:
    return self.pose_3d.shape[1]

  def sequence(self, i: int) -> dict:
    """Frames of sequence i as a dict of arrays (views)."""
    s, n = int(self.starts[i]), int(self.lengths[i])
    out = {"pose_3d": self.pose_3d[s:s + n], "pose_2d": self.pose_2d[s:s + n],
           "confidence": self.confidence[s:s + n]}
    out.update({k: v[s:s + n] for k, v in self.extras.items()})
    return out

  def sequence_name(self, i: int) -> str:
    return f"{self.subject[i]}/{self.action[i]}/{self.camera[i]}"

  @classmethod
  def from_list(cls, items: list[dict], source: str) -> "Sequences":
    """Builds from a list of dicts with per-sequence arrays and 'subject', 'action', 'camera',
    optional 'has_3d' (default True); array keys other than pose_3d/pose_2d/confidence are
    kept as extras."""
    if not items:
      raise DataError(f"{source}: no sequences.")
    lengths = np.array([len(it["pose_2d"]) for it in items], np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    main = ("pose_3d", "pose_2d", "confidence")
    labels = ("subject", "action", "camera", "has_3d")
    extra_keys = [k for k in items[0] if k not in main + labels]
    cat = lambda k, dt: np.concatenate([np.asarray(it[k], dt) for it in items]) if lengths.sum() else np.zeros((0,), dt)
    seqs = cls(
        pose_3d=cat("pose_3d", np.float32), pose_2d=cat("pose_2d", np.float32),
        confidence=cat("confidence", np.float32), starts=starts, lengths=lengths,
        subject=[str(it["subject"]) for it in items], action=[str(it["action"]) for it in items],
        camera=[str(it["camera"]) for it in items],
        has_3d=np.array([bool(it.get("has_3d", True)) for it in items]),
        extras={k: cat(k, np.float32) for k in extra_keys}, source=source)
    return seqs

  def validate(self, num_joints: int) -> "Sequences":
    """Checks shapes, emptiness and finiteness; raises DataError naming what is wrong."""
    src = self.source
    if self.num_sequences == 0:
      raise DataError(f"{src}: no sequences.")
    for i, n in enumerate(self.lengths):
      if n < 1:
        raise DataError(f"{src}: sequence {i} ({self.sequence_name(i)}) is empty (0 frames); "
                        "every sequence needs at least one frame.")
    n = self.num_frames
    expect = {"pose_3d": (n, num_joints, 3), "pose_2d": (n, num_joints, 2),
              "confidence": (n, num_joints)}
    for field, shape in expect.items():
      got = getattr(self, field).shape
      if got != shape:
        if len(got) >= 2 and got[1] != num_joints:
          raise DataError(f"{src}: field '{field}' has {got[1]} joints, expected {num_joints} "
                          f"(shape {got}, expected {shape}).")
        raise DataError(f"{src}: field '{field}' has shape {got}, expected {shape}.")
    for field in ("pose_2d", "confidence") + (("pose_3d",) if self.has_3d.any() else ()):
      arr = getattr(self, field)
      bad = ~np.isfinite(arr)
      if bad.any():
        frame = int(np.argwhere(bad.reshape(n, -1).any(-1))[0, 0])
        seq = int(np.searchsorted(self.starts, frame, side="right") - 1)
        joint = int(np.argwhere(bad[frame].reshape(num_joints, -1).any(-1))[0, 0])
        raise DataError(f"{src}: non-finite value (NaN or Inf) in '{field}' of sequence {seq} "
                        f"({self.sequence_name(seq)}), frame {frame - self.starts[seq]}, "
                        f"joint {joint}.")
    for k, v in self.extras.items():
      if len(v) != n:
        raise DataError(f"{src}: extra field '{k}' has {len(v)} frames, expected {n}.")
    return self

  def select(self, mask) -> "Sequences":
    """A new Sequences with only the sequences where mask (S,) is True."""
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
      raise DataError(f"{self.source}: selection left no sequences.")
    frames = np.concatenate([np.arange(self.starts[i], self.starts[i] + self.lengths[i]) for i in idx])
    lengths = self.lengths[idx]
    return Sequences(
        pose_3d=self.pose_3d[frames], pose_2d=self.pose_2d[frames],
        confidence=self.confidence[frames],
        starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64), lengths=lengths,
        subject=[self.subject[i] for i in idx], action=[self.action[i] for i in idx],
        camera=[self.camera[i] for i in idx], has_3d=self.has_3d[idx],
        extras={k: v[frames] for k, v in self.extras.items()}, source=self.source,
        split_index=None if self.split_index is None else self.split_index[idx],
        split_subjects=self.split_subjects)


def window_indices(starts, lengths, seq_ids, offsets, window: int):
  """Frame indices (B, window) of windows starting at `offsets` within sequences `seq_ids`.

  Frames past a sequence's end repeat its last frame (edge padding); the mask says which
  frames are real. Returns (indices (B, window) int64, mask (B, window) bool).
  """
  t = np.arange(window)[None, :] + np.asarray(offsets)[:, None]
  length = lengths[seq_ids][:, None]
  mask = t < length
  idx = starts[seq_ids][:, None] + np.minimum(t, length - 1)
  return idx, mask


def gather_windows(seqs: Sequences, idx, mask, seq_ids) -> dict:
  """Batch dict of numpy arrays for window frame indices idx (B, T)."""
  batch = {
      "pose_2d": seqs.pose_2d[idx], "confidence": seqs.confidence[idx],
      "pose_3d": seqs.pose_3d[idx], "mask": mask.astype(np.float32),
      "has_3d": seqs.has_3d[seq_ids].astype(np.float32),
  }
  # Ground-truth 2D where the source knows it (the projector's target on labelled data).
  clean = seqs.extras.get("pose_2d_clean")
  batch["pose_2d_target"] = clean[idx] if clean is not None else batch["pose_2d"]
  if "view_partner_frame" in seqs.extras:  # multi-view consistency (data/views.py)
    from posemachine.data import views  # pylint: disable=g-import-not-at-top
    arrays = {"pose_2d": seqs.pose_2d, "confidence": seqs.confidence,
              "pose_3d": seqs.pose_3d, **seqs.extras}
    batch.update(views.partner_batch(arrays, idx, lambda a, i: a[i]))
  return batch


def _draw_sequences(seqs: Sequences, rng: np.random.Generator, batch_size: int,
                    labelled_share: float) -> np.ndarray:
  """Sequence ids in proportion to length; with labelled_share >= 0, that share of the rows
  (rounded) comes from sequences with 3D labels and the rest from 2D-only ones (each group
  in proportion to length; proportional over all when a group is empty)."""
  lengths = seqs.lengths.astype(np.float64)
  labelled = np.asarray(seqs.has_3d, bool)
  if labelled_share < 0 or labelled.all() or not labelled.any():
    return rng.choice(seqs.num_sequences, size=batch_size, p=lengths / lengths.sum())
  n_lab = int(round(labelled_share * batch_size))
  ids = []
  for group, n in ((labelled, n_lab), (~labelled, batch_size - n_lab)):
    w = lengths * group
    ids.append(rng.choice(seqs.num_sequences, size=n, p=w / w.sum()))
  return np.concatenate(ids)


def sample_train_batch(seqs: Sequences, rng: np.random.Generator, batch_size: int,
                       window: int, labelled_share: float = -1.0) -> dict:
  """Random windows: sequence drawn in proportion to its length, uniform start.

  Sequences shorter than `window` are edge padded and masked. labelled_share >= 0 draws
  that share of the windows from 3D-labelled sequences (semi-supervised batches; see
  `config.data.labelled_share`).
  Returns dict: pose_2d (B, T, K, 2), confidence (B, T, K), pose_3d (B, T, K, 3),
  mask (B, T), has_3d (B,), pose_2d_target (B, T, K, 2) (the ground-truth 2D where the
  source has it, else pose_2d), all float32.
  """
  seq_ids = _draw_sequences(seqs, rng, batch_size, labelled_share)
  max_start = np.maximum(seqs.lengths[seq_ids] - window, 0)
  offsets = (rng.random(batch_size) * (max_start + 1)).astype(np.int64)
  idx, mask = window_indices(seqs.starts, seqs.lengths, seq_ids, offsets, window)
  return gather_windows(seqs, idx, mask, seq_ids)


def tile_windows(seqs: Sequences, window: int):
  """Covers every frame of every sequence exactly once with non-overlapping windows.

  Returns (seq_ids (W,), offsets (W,)): window w covers frames offsets[w] ...
  offsets[w] + window - 1 of sequence seq_ids[w]; the last window of a sequence is
  padded (see `window_indices`).
  """
  seq_ids, offsets = [], []
  for s, n in enumerate(seqs.lengths):
    o = np.arange(0, n, window)
    seq_ids.append(np.full(len(o), s))
    offsets.append(o)
  return np.concatenate(seq_ids).astype(np.int64), np.concatenate(offsets).astype(np.int64)
