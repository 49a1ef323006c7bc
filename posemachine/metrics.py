"""3D pose error metrics (the field's definitions).

All JAX metrics take poses of shape (..., K, 3), reduce over joints and return
per-pose errors (...,) in the units of the input (multiply metres by 1000 for the
millimetres the tables use). They are jittable and vmappable, compute in at least
float32 (half-precision inputs are upcast) and give finite values on degenerate
(e.g. all-zero) poses. `mpjpe`, `n_mpjpe` and `mpjve` also have finite
gradients; `pa_mpjpe` differentiates through an SVD, whose gradient is NaN for
degenerate poses (repeated singular values), so it is meant for evaluation.

Aggregation over a data set is left to the caller: `masked_mean` for padded
batches, `action_wise_average` for Human3.6M-style tables.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Floor for squared norms in denominators (input units squared): keeps all-zero
# poses finite without biasing any real pose.
_EPS = 1e-12


def _as_float(x) -> jax.Array:
  """Array in at least float32 (bfloat16/float16 are upcast)."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _root_relative(pose: jax.Array, root: int = 0) -> jax.Array:
  """(..., K, 3) -> (..., K, 3) with joint `root` moved to the origin."""
  return pose - pose[..., root:root + 1, :]


def _safe_norm(x: jax.Array) -> jax.Array:
  """Euclidean norm over the last axis with a zero (not NaN) gradient at 0."""
  sq = (x ** 2).sum(-1)
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1)), 0)


def _mean_joint_error(pred: jax.Array, gt: jax.Array) -> jax.Array:
  """Mean over joints of the Euclidean distance, (..., K, 3) -> (...,)."""
  # The root joint's error is exactly 0 after root alignment: a plain norm
  # would make the gradient NaN there.
  return _safe_norm(pred - gt).mean(axis=-1)


def mpjpe(pred, gt) -> jax.Array:
  """Mean per-joint position error after aligning roots (protocol #1).

  Args:
    pred: (..., K, 3) predicted joints.
    gt: (..., K, 3) ground-truth joints, same units.
  Returns:
    (...,) mean Euclidean joint error after subtracting joint 0 from each pose.
  """
  pred, gt = _as_float(pred), _as_float(gt)
  return _mean_joint_error(_root_relative(pred), _root_relative(gt))


def procrustes_align(pred, gt) -> jax.Array:
  """Similarity-aligns each predicted pose onto its ground truth.

  Finds scale s, rotation R (a proper rotation: reflections are not allowed)
  and translation t minimising sum_k |s * pred_k @ R + t - gt_k|^2, via the SVD
  of the 3x3 cross-covariance (Umeyama / Kabsch).

  Args:
    pred: (..., K, 3) predicted joints.
    gt: (..., K, 3) ground-truth joints.
  Returns:
    (..., K, 3) aligned prediction, in the units of `gt`. An all-zero `pred`
    aligns to the centroid of `gt` (scale 0) instead of NaN.
  """
  pred, gt = _as_float(pred), _as_float(gt)
  mu_p = pred.mean(axis=-2, keepdims=True)
  mu_g = gt.mean(axis=-2, keepdims=True)
  p0, g0 = pred - mu_p, gt - mu_g
  # Cross-covariance H = p0^T g0: (..., 3, 3).
  h = jnp.einsum("...ki,...kj->...ij", p0, g0)
  u, s, vt = jnp.linalg.svd(h)
  # Flip the least significant axis when U Vt would be a reflection.
  det = jnp.linalg.det(u) * jnp.linalg.det(vt)
  d = jnp.where(det < 0, -1.0, 1.0).astype(pred.dtype)
  signs = jnp.stack([jnp.ones_like(d), jnp.ones_like(d), d], axis=-1)  # (..., 3)
  r = jnp.einsum("...ij,...j,...jk->...ik", u, signs, vt)  # (..., 3, 3)
  scale = (s * signs).sum(-1) / jnp.maximum((p0 ** 2).sum((-2, -1)), _EPS)
  return scale[..., None, None] * (p0 @ r) + mu_g


def pa_mpjpe(pred, gt) -> jax.Array:
  """MPJPE after per-pose similarity Procrustes alignment (protocol #2).

  Args:
    pred: (..., K, 3) predicted joints.
    gt: (..., K, 3) ground-truth joints.
  Returns:
    (...,) mean joint error of `procrustes_align(pred, gt)` against `gt`.
  """
  gt = _as_float(gt)
  return _mean_joint_error(procrustes_align(pred, gt), gt)


def n_mpjpe(pred, gt) -> jax.Array:
  """MPJPE after scale-only alignment (N-MPJPE).

  The root-relative prediction is multiplied by the least-squares scale
  s = <pred, gt> / <pred, pred> onto the root-relative ground truth.

  Args:
    pred: (..., K, 3) predicted joints.
    gt: (..., K, 3) ground-truth joints.
  Returns:
    (...,) mean joint error after root and scale alignment.
  """
  pred = _root_relative(_as_float(pred))
  gt = _root_relative(_as_float(gt))
  num = (pred * gt).sum((-2, -1))
  den = jnp.maximum((pred ** 2).sum((-2, -1)), _EPS)
  return _mean_joint_error((num / den)[..., None, None] * pred, gt)


def mpjve(pred, gt) -> jax.Array:
  """Mean per-joint velocity error (MPJVE) between consecutive frames.

  Args:
    pred: (..., T, K, 3) predicted joint trajectories (frames on axis -3).
    gt: (..., T, K, 3) ground-truth trajectories.
  Returns:
    (..., T - 1) per-frame mean joint error of the first temporal differences
    of the root-aligned positions, in input units per frame.
  """
  pred = _root_relative(_as_float(pred))
  gt = _root_relative(_as_float(gt))
  vel_pred = jnp.diff(pred, axis=-3)
  vel_gt = jnp.diff(gt, axis=-3)
  return _mean_joint_error(vel_pred, vel_gt)


def masked_mean(values, mask) -> jax.Array:
  """Mean of the entries of `values` where `mask` is set.

  Args:
    values: (...) array.
    mask: boolean or 0/1 weights broadcastable to `values`.
  Returns:
    Scalar sum(values * mask) / max(sum(mask), 1); 0 when the mask is empty.
  """
  values = _as_float(values)
  mask = jnp.broadcast_to(jnp.asarray(mask), values.shape).astype(values.dtype)
  # where() rather than a product so NaNs in masked-out entries do not leak.
  total = jnp.where(mask != 0, values * mask, 0).sum()
  return total / jnp.maximum(mask.sum(), 1)


def action_wise_average(
    per_frame_errors, actions: Sequence[str],
) -> tuple[dict[str, float], float, float]:
  """Averages errors per action, then across actions, as Human3.6M tables do.

  Frames are grouped by the exact action label; pass base names (e.g.
  "Walking" for both "Walking 1" and "Walking 2") to merge sub-actions.

  Args:
    per_frame_errors: (N,) per-frame errors (e.g. MPJPE in mm).
    actions: (N,) action label of each frame.
  Returns:
    (per_action, action_wise, frame_wise): a dict from action label (sorted)
    to the mean error of its frames; the unweighted mean of those per-action
    means (what the tables report); the plain mean over all frames.
  """
  errors = np.asarray(per_frame_errors, dtype=np.float64).reshape(-1)
  labels = np.asarray(actions).reshape(-1)
  if errors.shape != labels.shape:
    raise ValueError(f"per_frame_errors has {errors.size} entries but actions has "
                     f"{labels.size}.")
  if errors.size == 0:
    raise ValueError("action_wise_average needs at least one frame.")
  per_action = {str(a): float(errors[labels == a].mean()) for a in np.unique(labels)}
  return per_action, float(np.mean(list(per_action.values()))), float(errors.mean())
