"""The 2D pose sub-network: a conv/pool trunk, multi-stage heatmaps (CPM-style), soft-argmax.

frames (N, S, S, 3) in [0, 1] -> trunk (3x3 convs, 2x2 max-pools) -> pose-aware features
(N, h, w, C) with h = S / 2^pools -> stage 1: convs -> K heatmap logits; stage s > 1: convs
on [features, stage s-1 heatmaps] -> K logits (Convolutional Pose Machines' refinement).
Each stage's heatmap is the spatial softmax of its logits (a probability map per joint);
the 2D pose is its expectation (soft-argmax), so losses on the 2D or 3D pose reach the trunk.

Sizes come from `config.model.encoder`: a tiny trunk for tests and the CPU demo
(64 x 64 input, 16 x 16 maps) and a CPM-sized one (368 x 368 input, three pools -> 46 x 46
maps, 128 feature channels) for real frames.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def heatmap_grid(size: int):
  """Centres of the cells of a size x size map in crop coordinates [-1, 1]: (size,)."""
  return (jnp.arange(size, dtype=jnp.float32) + 0.5) / size * 2.0 - 1.0


def spatial_softmax(logits):
  """(..., h, w, K) logits -> (..., h, w, K) probability maps (sum 1 over h, w)."""
  *lead, h, w, k = logits.shape
  flat = logits.reshape(*lead, h * w, k).astype(jnp.float32)
  return jax.nn.softmax(flat, axis=-2).reshape(*lead, h, w, k)


def soft_argmax(prob):
  """Expected (x, y) of probability maps (..., h, w, K) -> (..., K, 2) in crop [-1, 1]."""
  h, w = prob.shape[-3:-1]
  px = prob.sum(-3)                                   # (..., w, K) marginal over y
  py = prob.sum(-2)                                   # (..., h, K) marginal over x
  x = jnp.einsum("...wk,w->...k", px, heatmap_grid(w))
  y = jnp.einsum("...hk,h->...k", py, heatmap_grid(h))
  return jnp.stack([x, y], -1)


def gaussian_heatmaps(joints, size: int, sigma: float):
  """Normalised Gaussian targets for joints (..., K, 2) in crop coordinates [-1, 1].

  sigma is in heatmap cells. Returns (..., size, size, K), each map summing to 1 (the
  target of `spatial_softmax`); joints outside the crop give a map clipped to its border.
  """
  g = heatmap_grid(size)
  cell = 2.0 / size
  d2x = ((g[:, None] - joints[..., None, :, 0]) / cell) ** 2       # (..., w, K)
  d2y = ((g[:, None] - joints[..., None, :, 1]) / cell) ** 2       # (..., h, K)
  gx = jnp.exp(-d2x / (2 * sigma ** 2))
  gy = jnp.exp(-d2y / (2 * sigma ** 2))
  maps = gy[..., :, None, :] * gx[..., None, :, :]                  # (..., h, w, K)
  return maps / jnp.maximum(maps.sum((-3, -2), keepdims=True), 1e-12)


def heatmap_loss(prob, target, weight):
  """L2 between probability maps and targets (..., h, w, K), scaled by h * w so that a
  uniform map against a peak costs O(1); masked mean over the leading axes by weight (...)."""
  h, w = prob.shape[-3:-1]
  per = ((prob - target) * (h * w)) ** 2
  per = per.mean((-3, -2, -1))
  return (per * weight).sum() / jnp.maximum(weight.sum(), 1.0)


class PoseEncoder(nn.Module):
  """Attributes:
    num_joints: K.
    trunk: channels of each trunk block; a 2x2 max-pool follows every block but the last.
    convs_per_block: 3x3 convs per trunk block.
    feature_channels: C of the pose-aware features.
    stages: heatmap stages (1 = no refinement).
    stage_channels, stage_kernel: convs of each stage (3 convs, then a 1x1 to K logits).
    dtype: compute dtype.
  """
  num_joints: int = 17
  trunk: Sequence[int] = (16, 32, 64)
  convs_per_block: int = 2
  feature_channels: int = 64
  stages: int = 2
  stage_channels: int = 64
  stage_kernel: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, frames):
    """Args: frames (N, S, S, 3) RGB in [0, 1].
    Returns: features (N, h, w, C), logits (N, stages, h, w, K), prob (same, spatial
    softmax), joints_2d (N, K, 2) crop coordinates in [-1, 1] from the last stage.
    """
    conv = lambda c, k, name: nn.Conv(c, (k, k), padding="SAME", dtype=self.dtype, name=name)
    x = (frames - 0.5).astype(self.dtype)               # the reference: (p - 128) / 256
    for b, ch in enumerate(self.trunk):
      for i in range(self.convs_per_block):
        x = nn.relu(conv(ch, 3, f"trunk_{b}_{i}")(x))
      if b < len(self.trunk) - 1:
        x = nn.max_pool(x, (2, 2), (2, 2))
    feats = nn.relu(conv(self.feature_channels, 3, "features")(x))
    logits = []
    for s in range(self.stages):
      y = feats if s == 0 else jnp.concatenate(
          [feats, spatial_softmax(logits[-1]).astype(self.dtype) * (feats.shape[1] * feats.shape[2])], -1)
      k = 3 if s == 0 else self.stage_kernel
      for i in range(3):
        y = nn.relu(conv(self.stage_channels, k, f"stage{s}_{i}")(y))
      logits.append(conv(self.num_joints, 1, f"stage{s}_out")(y).astype(jnp.float32))
    logits = jnp.stack(logits, 1)
    prob = spatial_softmax(logits)
    return {"features": feats, "logits": logits, "prob": prob,
            "joints_2d": soft_argmax(prob[:, -1])}
