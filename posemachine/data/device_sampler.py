"""Device-resident training data: training windows sampled inside the jitted train step.

For the lifting mode the whole training set fits in device memory (Human3.6M protocol #1
with ground-truth 2D: about 1.56 M frames x 17 joints x 8 floats = 0.85 GB), so the host
need not feed anything per step. `to_device` puts the flat frame arrays and the
per-sequence offsets/lengths on the devices once, replicated over the mesh (each device
gathers its own rows of the batch locally; no cross-device traffic). `sample_batch` draws
the global batch of a step from a key derived from (seed, step), with the same
distribution as the host sampler (data/sequences.sample_train_batch + pipeline.train_batch):

- sequence with probability length / total frames (a uniform frame, then its sequence),
- start offset uniform in [0, max(length - window, 0)], edge padding and a mask for
  sequences shorter than the window,
- optional left/right flip (train.augment_flip, probability 1/2 per window),
- optional Gaussian 2D noise (train.augment_noise_px, pixels at w = 1000),
- has_3d per window from its sequence (labelled / 2D-only data); with
  data.labelled_share >= 0 a fixed share of the windows from labelled sequences.

The random values differ from the host sampler's (JAX's RNG, not NumPy's), so a run with
device sampling sees other batches than one without; within one mode the batch of a step
depends only on (seed, step), hence resume is exact and 1 or 8 devices (or processes) draw
the same global batch.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from posemachine.data import augment, views
from posemachine.data.sequences import DataError, Sequences


@flax.struct.dataclass
class DeviceData:
  """A training set on the devices (replicated). N frames, S sequences, K joints.

  pose_2d: (N, K, 2) float32 observed 2D, normalised screen coordinates.
  pose_2d_target: (N, K, 2) float32 ground-truth 2D where the source has it, else None
    (the batch's target is then pose_2d before the noise augmentation, as on the host).
  pose_3d: (N, K, 3) float32 metres, camera frame, root-relative.
  confidence: (N, K) float32.
  starts, lengths: (S,) int32 first frame and frame count of each sequence.
  has_3d: (S,) float32 1 where the sequence's 3D is a label.
  """
  pose_2d: jax.Array
  pose_2d_target: jax.Array | None
  pose_3d: jax.Array
  confidence: jax.Array
  starts: jax.Array
  lengths: jax.Array
  has_3d: jax.Array
  view_partner_frame: jax.Array | None = None  # (N,) int32, multi-view (data/views.py)
  view_rotation: jax.Array | None = None       # (N, 3, 3) float32

  @property
  def num_frames(self) -> int:
    return self.pose_2d.shape[0]


def host_arrays(seqs: Sequences) -> dict:
  """The NumPy arrays `to_device` places (see DeviceData for shapes)."""
  if seqs.num_frames >= 2 ** 31:
    raise DataError(f"{seqs.source}: {seqs.num_frames} training frames do not fit int32 "
                    "indices; set data.device_sampling=False.")
  return {"pose_2d": seqs.pose_2d, "pose_2d_target": seqs.extras.get("pose_2d_clean"),
          "pose_3d": seqs.pose_3d, "confidence": seqs.confidence,
          "starts": seqs.starts.astype(np.int32), "lengths": seqs.lengths.astype(np.int32),
          "has_3d": seqs.has_3d.astype(np.float32),
          "view_partner_frame": (seqs.extras["view_partner_frame"].astype(np.int32)
                                 if "view_partner_frame" in seqs.extras else None),
          "view_rotation": seqs.extras.get("view_rotation")}


def to_device(seqs: Sequences, mesh: Mesh) -> DeviceData:
  """Places the training set on every device of the mesh (replicated; multi-process safe:
  every process holds the same arrays and fills its own devices)."""
  replicated = NamedSharding(mesh, P())
  arrays = {}
  for k, v in host_arrays(seqs).items():
    if v is None:
      arrays[k] = None
      continue
    v = np.ascontiguousarray(v)
    arrays[k] = jax.make_array_from_callback(v.shape, replicated, lambda idx, v=v: v[idx])
  return DeviceData(**arrays)


def nbytes(seqs: Sequences) -> int:
  """Bytes one device holds for this training set."""
  return sum(v.nbytes for v in host_arrays(seqs).values() if v is not None)


def _frame_to_sequence(lengths, weight, key, n):
  """n sequence ids, each that of a uniform frame among the frames of sequences weighted 1
  (weight (S,) 0/1); lengths (S,)."""
  cum = jnp.cumsum(lengths * weight)
  frame = jax.random.randint(key, (n,), 0, jnp.maximum(cum[-1], 1), jnp.int32)
  return jnp.searchsorted(cum, frame, side="right").astype(jnp.int32)


def sample_windows(data: DeviceData, key, batch_size: int, window: int,
                   labelled_share: float = -1.0):
  """Random windows: (sequence ids (B,), start offsets (B,)) int32, drawn as the host does.

  The sequence of a uniform frame of the whole set (P(sequence) = length / total frames),
  then a start uniform in [0, max(length - window, 0)]. With labelled_share >= 0 the first
  round(labelled_share * B) rows come from 3D-labelled sequences and the rest from 2D-only
  ones (proportional over all sequences when a group is empty).
  """
  k_frame, k_offset = jax.random.split(key)
  frame = jax.random.randint(k_frame, (batch_size,), 0, data.num_frames, jnp.int32)
  seq = jnp.searchsorted(data.starts, frame, side="right").astype(jnp.int32) - 1
  if labelled_share >= 0:
    n_lab = int(round(labelled_share * batch_size))
    lab = (data.has_3d > 0).astype(jnp.int32)
    k_lab, k_unl = jax.random.split(jax.random.fold_in(k_frame, 1))
    stratified = jnp.concatenate([
        _frame_to_sequence(data.lengths, lab, k_lab, n_lab),
        _frame_to_sequence(data.lengths, 1 - lab, k_unl, batch_size - n_lab)])
    both = (lab.sum() > 0) & (lab.sum() < lab.shape[0])
    seq = jnp.where(both, stratified, seq)
  max_start = jnp.maximum(data.lengths[seq] - window, 0)
  offset = jax.random.randint(k_offset, (batch_size,), 0, max_start + 1, jnp.int32)
  return seq, offset


def gather_windows(data: DeviceData, seq, offset, window: int) -> dict:
  """The batch of windows (seq, offset) as sequences.gather_windows builds it on the host:
  frames past a sequence's end repeat its last frame and are masked out."""
  length = data.lengths[seq][:, None]
  t = offset[:, None] + jnp.arange(window, dtype=jnp.int32)[None, :]
  idx = data.starts[seq][:, None] + jnp.minimum(t, length - 1)
  take = lambda a: jnp.take(a, idx, axis=0, mode="clip")  # indices are in range.
  batch = {"pose_2d": take(data.pose_2d), "confidence": take(data.confidence),
           "pose_3d": take(data.pose_3d), "mask": (t < length).astype(jnp.float32),
           "has_3d": data.has_3d[seq]}
  target = data.pose_2d_target
  batch["pose_2d_target"] = batch["pose_2d"] if target is None else take(target)
  if data.view_partner_frame is not None:  # multi-view consistency (data/views.py)
    arrays = {"pose_2d": data.pose_2d, "confidence": data.confidence,
              "pose_3d": data.pose_3d, "view_partner_frame": data.view_partner_frame,
              "view_rotation": data.view_rotation}
    batch.update(views.partner_batch(arrays, idx,
                                     lambda a, i: jnp.take(a, i, axis=0, mode="clip")))
  return batch


def sample_batch(data: DeviceData, key, batch_size: int, window: int,
                 noise_px: float = 0.0, flip: bool = False, labelled_share: float = -1.0) -> dict:
  """The training batch for `key` (pure; jit it). Same keys and shapes as
  pipeline.train_batch: pose_2d (B, T, K, 2), confidence (B, T, K), pose_3d (B, T, K, 3),
  mask (B, T), has_3d (B,), pose_2d_target (B, T, K, 2), all float32."""
  k_windows, k_noise, k_flip = jax.random.split(key, 3)
  seq, offset = sample_windows(data, k_windows, batch_size, window, labelled_share)
  batch = gather_windows(data, seq, offset, window)
  if noise_px > 0:
    for i, k in enumerate(k for k in ("pose_2d", "view_pose_2d") if k in batch):
      key = k_noise if i == 0 else jax.random.fold_in(k_noise, i)
      noise = jax.random.normal(key, batch[k].shape, jnp.float32)
      batch[k] = batch[k] + noise * (2.0 * noise_px / 1000.0)
  if flip:
    batch = augment.flip_windows(batch, jax.random.bernoulli(k_flip, 0.5, (batch_size,)))
  return batch


def step_key(seed: int, step):
  """The sampling key of training step `step` (1-based; an int or a traced int32)."""
  return jax.random.fold_in(jax.random.key(seed), step)


def make_sampler(mesh: Mesh, seed: int, batch_size: int, window: int, noise_px: float = 0.0,
                 flip: bool = False, labelled_share: float = -1.0):
  """Pure (DeviceData, step) -> the global batch of `step`, sharded over 'data'."""
  data_sharding = NamedSharding(mesh, P("data"))

  def sample(data, step):
    batch = sample_batch(data, step_key(seed, step), batch_size, window, noise_px, flip,
                         labelled_share)
    return jax.lax.with_sharding_constraint(batch, data_sharding)
  return sample


def config_sampler(config, mesh: Mesh):
  """make_sampler with the run's seed, batch size, window and augmentation."""
  t = config.train
  return make_sampler(mesh, config.seed, t.batch_size, config.data.window, t.augment_noise_px,
                      t.augment_flip, config.data.labelled_share)


def make_train_step(train_step_fn, config, mesh: Mesh, state_sharding=None):
  """jit-compiled (state, DeviceData) -> (state, metrics): samples the batch of step
  state.step + 1 (the loop's step; the counter advances on skipped steps too) inside the
  step, then runs train_step_fn(state, batch). State donated, data replicated."""
  replicated = NamedSharding(mesh, P())
  state_sharding = state_sharding or replicated
  sample = config_sampler(config, mesh)

  def step(state, data):
    return train_step_fn(state, sample(data, state.step + 1))
  return jax.jit(step, in_shardings=(state_sharding, replicated),
                 out_shardings=(state_sharding, replicated), donate_argnums=0)
