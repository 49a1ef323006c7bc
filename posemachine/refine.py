"""Test-time self-correction (the paper's reference design), batched: one jitted, vmapped call.

For each sample (a window of frames) the projector's projection half is frozen and a few
Adam steps adapt a fresh copy of the regression half so that the projection of the
corrected 3D pose agrees with the observed 2D pose (2D point + 2D bone-vector terms, in
the projector's root-centred, scale-normalised 2D). Rules from the paper:
  convergence: stop once a step moves the corrected pose by less than `converge_mm`
    (mean joint displacement over the window's real frames);
  discard: reject the whole correction (keep the uncorrected pose) if it moved any torso
    joint (pelvis, hips, shoulders) by more than `discard_mm` on some real frame.
Samples are independent (`vmap`), steps after the first run in `lax.fori_loop`, weights
are per sample and start from the trained ones each time, so the result of a sample does
not depend on the rest of the batch.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from posemachine import errors, losses, skeleton
from posemachine.models import projector as projector_lib

# Joints whose movement the discard rule limits: pelvis, both hips, both shoulders.
TORSO_JOINT_NAMES = ("pelvis", "left_hip", "right_hip", "left_shoulder", "right_shoulder")


def smooth_2d(pose_2d, mask, frames: int):
  """Masked centred moving average over time: pose_2d (B, T, K, 2), mask (B, T), an odd
  window of `frames` (1: unchanged). Padded frames neither contribute nor change."""
  h = frames // 2
  if h <= 0:
    return pose_2d
  m = mask[..., None, None]
  pad = lambda a: jnp.pad(a, [(0, 0), (h + 1, h)] + [(0, 0)] * (a.ndim - 2))
  cs, cm = jnp.cumsum(pad(pose_2d * m), axis=1), jnp.cumsum(pad(m), axis=1)
  t = pose_2d.shape[1]
  total = cs[:, 2 * h + 1:2 * h + 1 + t] - cs[:, :t]
  count = cm[:, 2 * h + 1:2 * h + 1 + t] - cm[:, :t]
  return jnp.where(m > 0, total / jnp.maximum(count, 1.0), pose_2d)


def target_2d(refine_config, batch):
  """The 2D pose (B, T, K, 2) the correction fits, by refine_config.target (see config)."""
  target = refine_config.target
  if target == "ground_truth":
    return batch["pose_2d_target"]
  if target == "smoothed":
    return smooth_2d(batch["pose_2d"], batch["mask"], refine_config.smooth_frames)
  return batch["pose_2d"]


def check_target(refine_config, seqs) -> None:
  """ConfigError if the correction is to fit ground-truth 2D that `seqs` does not have."""
  if (refine_config.enabled and refine_config.target == "ground_truth"
      and "pose_2d_clean" not in seqs.extras):
    raise errors.ConfigError(
        f"refine.target='ground_truth' needs the clean 2D of synthetic data; {seqs.source} "
        "has only the observed 2D. Use refine.target='observed' or 'smoothed'.")


def torso_joints(num_joints: int) -> tuple[int, ...]:
  names = skeleton.for_num_joints(num_joints).joint_names
  return tuple(names.index(n) for n in TORSO_JOINT_NAMES)


def pose_objective(pose, proj_params, projection, target_2d, mask, w_2d=1.0, w_bone_2d=1.0,
                   weak_perspective=False):
  """2D consistency of one sample's 3D pose (T, K, 3) m with target_2d (T, K, 2), already
  normalised (losses.normalize_2d); mask (T,). The 2D projection is the frozen learned
  projection half, or with `weak_perspective` the pose's own normalised (X, Y).
  Returns a scalar."""
  if weak_perspective:
    proj = losses.normalize_2d(pose[..., :2])
  else:
    proj = projection.apply({"params": proj_params}, pose)
  w = mask[None]
  return (w_2d * losses.pose_error(proj[None], target_2d[None], w)
          + w_bone_2d * losses.bone_error(proj[None], target_2d[None], w))


def objective(reg_params, proj_params, regression, projection, inter, target_2d, mask,
              w_2d=1.0, w_bone_2d=1.0, weak_perspective=False):
  """pose_objective of the pose that the regression half `reg_params` makes of `inter`."""
  pose = regression.apply({"params": reg_params}, inter)
  return pose_objective(pose, proj_params, projection, target_2d, mask, w_2d, w_bone_2d,
                        weak_perspective)


def refine_sample(projector_params, inter, pose_2d, mask, *, model_config, refine_config,
                  num_joints):
  """Corrects one sample.

  Args:
    projector_params: the trained projector's params {'regression': ..., 'projection': ...}.
    inter: (T, K, 3) intermediate 3D pose (metres) from the transformer.
    pose_2d: (T, K, 2) observed 2D pose, normalised screen coordinates.
    mask: (T,) 1 for real frames.
  Returns:
    dict: pose_3d (T, K, 3) corrected (or the uncorrected pose when discarded), pose_3d_before
    (T, K, 3), objective_before/after (scalars), steps (int32), discarded (bool).
  """
  m, r = model_config, refine_config
  regression = projector_lib.Regression(num_joints, m.projector_hidden, m.residual_correction)
  projection = projector_lib.Projection(num_joints, m.projector_hidden)
  proj_params = jax.lax.stop_gradient(projector_params["projection"])
  target = losses.normalize_2d(pose_2d)
  obj_kw = dict(proj_params=proj_params, projection=projection, target_2d=target, mask=mask,
                w_2d=r.w_2d, w_bone_2d=r.w_bone_2d,
                weak_perspective=r.projection == "weak_perspective")
  apply_reg = lambda p: regression.apply({"params": p}, inter)
  tx = optax.adam(r.learning_rate)
  p0 = projector_params["regression"]
  denom = jnp.maximum(mask.sum(), 1.0)

  def value_grads_pose(params):
    """The objective, its gradient and the pose, from one forward pass."""
    def f(p):
      pose = apply_reg(p)
      return pose_objective(pose, **obj_kw), pose
    (value, pose), grads = jax.value_and_grad(f, has_aux=True)(params)
    return value, grads, pose

  def rules(pose, new_pose, steps, done):
    """After a step: count it and take its pose unless converged before; converge?"""
    moved_mm = (jnp.linalg.norm(new_pose - pose, axis=-1).mean(-1) * mask).sum() / denom * 1000
    return (jnp.where(done, pose, new_pose), steps + jnp.where(done, 0, 1),
            done | (moved_mm < r.converge_mm))

  def adam(params, grads, opt_state):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  steps = jnp.int32(0)
  if r.steps <= 0:
    pose0 = pose = apply_reg(p0)
    before = pose_objective(pose0, **obj_kw)
  else:
    # The first step runs on the trained weights, which vmap keeps shared by the batch: the
    # forward pass is one matrix product for all samples, and Adam's zero moments are never
    # copied per sample. Each later step's forward pass also gives the pose the previous
    # step made, which the rules read. (Before: 93 of 490 ms at width 1024 went on per-sample
    # copies of the weights and zero moments, and each step ran the regression half twice.)
    before, grads, pose0 = value_grads_pose(p0)
    params, opt_state = adam(p0, grads, tx.init(p0))

    # Once a sample has converged only its pose is frozen: its weights and optimiser state
    # go on changing unused (cheaper than selecting between old and new copies of every
    # per-sample weight each step; the result is the same).
    def body(_, carry):
      params, opt_state, pose, steps, done = carry
      _, grads, new_pose = value_grads_pose(params)
      pose, steps, done = rules(pose, new_pose, steps, done)
      return adam(params, grads, opt_state) + (pose, steps, done)

    params, _, pose, steps, done = jax.lax.fori_loop(
        0, r.steps - 1, body, (params, opt_state, pose0, steps, jnp.bool_(False)))
    pose, steps, _ = rules(pose, apply_reg(params), steps, done)
  if r.keep_depth:  # a 2D objective says nothing about depth: change only X, Y.
    pose = pose.at[..., 2].set(pose0[..., 2])
  torso = jnp.asarray(torso_joints(num_joints))
  torso_move = jnp.linalg.norm(pose[:, torso] - pose0[:, torso], axis=-1).max(-1)
  discarded = (torso_move * mask).max() * 1000 > r.discard_mm
  final = jnp.where(discarded, pose0, pose)
  return {"pose_3d": final, "pose_3d_before": pose0, "objective_before": before,
          "objective_after": jnp.where(discarded, before, pose_objective(pose, **obj_kw)),
          "steps": steps, "discarded": discarded}


def make_refine(model_config, refine_config, num_joints: int):
  """Batched correction: (projector_params, inter (B, T, K, 3), pose_2d (B, T, K, 2),
  mask (B, T)) -> dict of (B, ...) arrays (see refine_sample). Pure; jit it or call
  inside jitted code. Samples are processed `refine_config.chunk` at a time (lax.map)
  to bound memory (0: all at once)."""
  fn = functools.partial(refine_sample, model_config=model_config,
                         refine_config=refine_config, num_joints=num_joints)
  per_sample = jax.vmap(fn, in_axes=(None, 0, 0, 0))

  def refine(projector_params, inter, pose_2d, mask):
    b = inter.shape[0]
    chunk = refine_config.chunk
    if chunk <= 0 or chunk >= b:
      return per_sample(projector_params, inter, pose_2d, mask)
    single = lambda xs: fn(projector_params, *xs)
    return jax.lax.map(single, (inter, pose_2d, mask), batch_size=chunk)

  return refine
