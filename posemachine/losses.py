"""The pose machine's training losses (the paper's reference design), with frame and label masks.

Terms (each a masked mean; weights in `config.loss`):
  3d_intermediate, 3d: joint error of the transformer output and of the corrected pose
    against the 3D label (metres; only samples with a 3D label).
  bone_3d: bone-vector error on both 3D outputs (metres).
  2d: the projector's 2D output against the 2D pose, both root-centred and
    scale-normalised (`normalize_2d`) - the self-supervised consistency term. The 2D pose
    is the ground truth where known (`pose_2d_target` of samples with 3D labels), else
    the observed input, as in the reference.
  bone_2d: bone-vector error of that 2D projection.
'squared' distance is the reference's L2; 'euclidean' is the per-joint distance (MPJPE).

Priors for training without 3D labels (weights 0 unless set; all samples):
  2d_weak_perspective: the corrected 3D pose's own (X, Y), normalised like the 2D target,
    against the observed 2D pose: an analytic camera that the network cannot learn away,
    unlike the learned projection half, which with no 3D labels can encode anything.
  bone_length_prior: squared deviation of 3D bone lengths from the mean Human3.6M
    lengths (skeleton.MEAN_BONE_LENGTHS), metres^2; fixes the scale that 2D cannot.
  symmetry: squared difference of left and right bone lengths, metres^2.

With synchronised calibrated views (data/views.py; weight w_multiview, added in
train.train_step, which lifts the second view too): multiview = the corrected pose rotated
into the other camera against the pose lifted from that camera's 2D (metres).

Monocular rotation cycle (weight w_rotation_cycle, added in train.train_step; after Chen et
al., "Unsupervised 3D pose estimation with geometric self-supervision", CVPR 2019, without
their discriminator): the corrected pose is turned about the camera's vertical axis, seen by
a virtual weak-perspective camera placed like the observed one (`virtual_view_2d`), lifted
again, and must come back as the turned pose (metres). No 3D label or second camera is used.
"""

from __future__ import annotations

import jax.numpy as jnp

from posemachine import skeleton


def normalize_2d(pose_2d, eps=1e-6):
  """Root-centred, scale-normalised 2D pose: (p - p_root) / rms distance to the root.

  The projector sees a root-relative 3D pose with no depth, so its 2D target is the 2D
  pose up to translation and scale (weak perspective). (..., K, 2) -> (..., K, 2).
  """
  centred = pose_2d - pose_2d[..., :1, :]
  scale = jnp.sqrt((centred ** 2).sum(-1).mean(-1) + eps)
  return centred / scale[..., None, None]


def _distance(diff, kind):
  sq = (diff ** 2).sum(-1)
  return sq if kind == "squared" else jnp.sqrt(sq + 1e-12)


def _masked_mean(per_frame, weight):
  return (per_frame * weight).sum() / jnp.maximum(weight.sum(), 1.0)


def pose_error(pred, target, weight, kind="squared"):
  """Masked mean over frames of the joint-mean distance. pred/target (B, T, K, D), weight (B, T)."""
  return _masked_mean(_distance(pred - target, kind).mean(-1), weight)


def bones(pose):
  """Bone vectors (..., K - 1, D) of a pose (..., K, D) in the layout of its joint count."""
  layout = skeleton.for_num_joints(pose.shape[-2])
  return skeleton.bone_vectors(pose, layout.bone_child, layout.bone_parent)


def bone_error(pred, target, weight, kind="squared"):
  """Masked mean of bone-vector distances (B, T, K, D) -> scalar."""
  return pose_error(bones(pred), bones(target), weight, kind)


def _bone_len(pose):
  return jnp.sqrt((bones(pose) ** 2).sum(-1) + 1e-12)  # (..., K-1)


def bone_length_prior(pose_3d, weight):
  """Masked mean squared deviation (m^2) of bone lengths from the H36M means. (B, T, 17, 3)."""
  if pose_3d.shape[-2] != skeleton.NUM_JOINTS:
    raise ValueError(f"The bone-length prior knows the {skeleton.NUM_JOINTS}-joint Human3.6M "
                     f"means only; got {pose_3d.shape[-2]} joints (set loss.w_bone_length_prior=0).")
  ref = jnp.asarray(skeleton.MEAN_BONE_LENGTHS)[skeleton.BONE_CHILD]
  return _masked_mean(((_bone_len(pose_3d) - ref) ** 2).mean(-1), weight)


def symmetry_prior(pose_3d, weight):
  """Masked mean squared left/right bone-length difference (m^2). (B, T, K, 3)."""
  lengths = _bone_len(pose_3d)
  layout = skeleton.for_num_joints(pose_3d.shape[-2])
  child_to_bone = {int(c): i for i, c in enumerate(layout.bone_child)}
  left = jnp.asarray([child_to_bone[j] for j in layout.left])
  right = jnp.asarray([child_to_bone[j] for j in layout.right])
  # LEFT and RIGHT list mirrored joints in the same order (hip, knee, ankle, shoulder, ...).
  return _masked_mean(((lengths[..., left] - lengths[..., right]) ** 2).mean(-1), weight)


def multiview_error(pose_a, pose_b, rotation, weight, kind="squared"):
  """Cross-view consistency: pose_a (B, T, K, 3) rotated into the partner camera
  (pose_a @ rotation, rotation (B, 3, 3); data/views.py) against pose_b, the pose lifted
  from the partner view; both root-relative metres. Masked mean, weight (B, T)."""
  return pose_error(jnp.einsum("btkj,bji->btki", pose_a, rotation), pose_b, weight, kind)


def rotate_about_vertical(pose, angle):
  """Root-relative camera-frame poses (B, T, K, 3) turned by angle (B,) radians about the
  camera's vertical (y) axis through the root: a camera orbiting the subject."""
  c, s = jnp.cos(angle)[:, None, None], jnp.sin(angle)[:, None, None]
  x, y, z = pose[..., 0], pose[..., 1], pose[..., 2]
  return jnp.stack([c * x + s * z, y, c * z - s * x], -1)


def virtual_view_2d(pose_3d, pose_2d, turned):
  """The 2D pose (B, T, K, 2), normalised screen coordinates, of `turned` (B, T, K, 3)
  metres seen by a weak-perspective camera with the observed frame's root position and the
  scale (normalised units per metre) that best maps pose_3d's (X, Y) onto the observed
  root-centred 2D pose_2d (least squares, per frame)."""
  centred = pose_2d - pose_2d[..., :1, :]
  xy = pose_3d[..., :2]
  scale = (centred * xy).sum((-1, -2)) / jnp.maximum((xy * xy).sum((-1, -2)), 1e-6)
  return pose_2d[..., :1, :] + scale[..., None, None] * turned[..., :2]


def total_loss(outputs, batch, loss_config):
  """Weighted sum of the terms. Returns (loss scalar, dict of terms).

  batch: pose_3d (B, T, K, 3) metres, pose_2d (B, T, K, 2) normalised, mask (B, T),
  has_3d (B,). outputs: PoseMachine outputs.
  """
  c = loss_config
  kind = c.distance
  frame_w = batch["mask"]
  w3 = frame_w * batch["has_3d"][:, None]
  observed_2d = normalize_2d(batch["pose_2d"])
  if "pose_2d_target" in batch:
    known = batch["has_3d"][:, None, None, None] > 0
    target_2d = jnp.where(known, normalize_2d(batch["pose_2d_target"]), observed_2d)
  else:
    target_2d = observed_2d
  terms = {
      "3d_intermediate": pose_error(outputs["pose_3d_intermediate"], batch["pose_3d"], w3, kind),
      "3d": pose_error(outputs["pose_3d"], batch["pose_3d"], w3, kind),
      "bone_3d": 0.5 * (bone_error(outputs["pose_3d_intermediate"], batch["pose_3d"], w3, kind)
                        + bone_error(outputs["pose_3d"], batch["pose_3d"], w3, kind)),
      "2d": pose_error(outputs["proj_2d"], target_2d, frame_w, kind),
      "bone_2d": bone_error(outputs["proj_2d"], target_2d, frame_w, kind),
  }
  weights = {"3d_intermediate": c.w_3d_intermediate, "3d": c.w_3d, "bone_3d": c.w_bone_3d,
             "2d": c.w_2d, "bone_2d": c.w_bone_2d}
  if c.w_2d_weak_perspective:
    weak = normalize_2d(outputs["pose_3d"][..., :2])
    terms["2d_weak_perspective"] = pose_error(weak, target_2d, frame_w, kind)
    weights["2d_weak_perspective"] = c.w_2d_weak_perspective
  if c.w_bone_length_prior:
    terms["bone_length_prior"] = bone_length_prior(outputs["pose_3d"], frame_w)
    weights["bone_length_prior"] = c.w_bone_length_prior
  if c.w_symmetry:
    terms["symmetry"] = symmetry_prior(outputs["pose_3d"], frame_w)
    weights["symmetry"] = c.w_symmetry
  loss = sum(weights[k] * v for k, v in terms.items())
  return loss, terms
