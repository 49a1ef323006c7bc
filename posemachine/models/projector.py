"""The 3D-to-2D projector: six FC layers (the paper's reference design).

Regression half ('regression'): 3K -> hidden (ReLU) -> 3K, the corrected 3D pose
(optionally a residual on the intermediate pose). Projection half ('projection'):
3K -> hidden (ReLU, a) -> hidden (ReLU) -> hidden (ReLU, b) -> a + b -> 2K, the 2D
projection of the corrected pose in root-centred, scale-normalised 2D coordinates
(see `losses.normalize_2d`). The halves are separate submodules so the test-time
correction can freeze 'projection' and adapt 'regression'.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from posemachine.models.dense import Dense


class Regression(nn.Module):
  num_joints: int
  hidden: int = 1024
  residual: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pose_3d):
    """(..., K, 3) metres -> corrected (..., K, 3) metres, root at 0."""
    lead = pose_3d.shape[:-2]
    x = pose_3d.reshape(lead + (-1,)).astype(self.dtype)
    y = nn.relu(Dense(self.hidden, dtype=self.dtype, name="fc1")(x))
    y = Dense(self.num_joints * 3, dtype=self.dtype, name="fc2",
                 kernel_init=nn.initializers.zeros if self.residual
                 else nn.initializers.lecun_normal())(y)
    y = y.astype(jnp.float32).reshape(pose_3d.shape)
    out = pose_3d + y if self.residual else y
    return out - out[..., :1, :]


class Projection(nn.Module):
  num_joints: int
  hidden: int = 1024
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pose_3d):
    """(..., K, 3) metres -> (..., K, 2) normalised 2D projection."""
    lead = pose_3d.shape[:-2]
    x = pose_3d.reshape(lead + (-1,)).astype(self.dtype)
    a = nn.relu(Dense(self.hidden, dtype=self.dtype, name="fc1")(x))
    y = nn.relu(Dense(self.hidden, dtype=self.dtype, name="fc2")(a))
    b = nn.relu(Dense(self.hidden, dtype=self.dtype, name="fc3")(y))
    out = Dense(self.num_joints * 2, dtype=self.dtype, name="fc4")(a + b)
    return out.astype(jnp.float32).reshape(lead + (self.num_joints, 2))


class Projector(nn.Module):
  num_joints: int
  hidden: int = 1024
  residual: bool = True
  dtype: Any = jnp.float32

  def setup(self):
    self.regression = Regression(self.num_joints, self.hidden, self.residual, self.dtype)
    self.projection = Projection(self.num_joints, self.hidden, self.dtype)

  def __call__(self, pose_3d_intermediate):
    """(..., K, 3) -> corrected 3D (..., K, 3) metres, its 2D projection (..., K, 2)."""
    corrected = self.regression(pose_3d_intermediate)
    return corrected, self.projection(corrected)
