"""Training augmentation shared by the host and the device samplers."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from posemachine import skeleton


def flip_permutation(num_joints: int) -> np.ndarray:
  """(K,) joint order that mirrors left and right in the layout with num_joints joints."""
  layout = skeleton.for_num_joints(num_joints)
  perm = np.arange(num_joints)
  perm[list(layout.left)] = layout.right
  perm[list(layout.right)] = layout.left
  return perm


def flip_windows(batch: dict, flip, xp=jnp) -> dict:
  """Mirrors the windows where flip (B,) is true: 2D x -> -x (normalised coordinates, about
  the image centre), 3D X -> -X (camera frame), left and right joints swapped (pose_2d,
  pose_2d_target (B, T, K, 2), pose_3d (B, T, K, 3), confidence (B, T, K)). xp: jnp or np.
  """
  perm = flip_permutation(batch["pose_2d"].shape[-2])
  out = dict(batch)
  for name, dims in (("pose_2d", 2), ("pose_2d_target", 2), ("pose_3d", 3), ("confidence", 0)):
    v = batch[name]
    if dims:
      mirrored = v[..., perm, :] * xp.asarray([-1.0] + [1.0] * (dims - 1), v.dtype)
    else:
      mirrored = v[..., perm]
    out[name] = xp.where(flip.reshape(flip.shape + (1,) * (v.ndim - 1)), mirrored, v)
  return out
