"""The full pose machine from pixels: 2D pose sub-network -> image stem -> transformer -> projector.

frames (B, T, S, S, 3) -> PoseEncoder per frame -> pose-aware features and heatmaps ->
ImageStem (two 3x3 convs, two 5x5 stride-2 convs, flatten; optionally the soft-argmax 2D
pose appended) -> PoseTransformer (FC hidden -> LSTM x L over time -> FC) -> intermediate 3D
-> Projector -> corrected 3D and its 2D projection. One module, one pure `apply`.

`freeze` (static) stops gradients at the outputs of parts that a training stage keeps fixed
('encoder': features, heatmaps and 2D pose; 'transformer': the intermediate 3D pose), so a
stage spends no time on backward passes through frozen parts (the optimiser also zeroes
their updates: see image_train.py).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from posemachine.models.encoder import PoseEncoder
from posemachine.models.machine import DTYPES
from posemachine.models.projector import Projector
from posemachine.models.transformer import PoseTransformer


class ImageStem(nn.Module):
  """Per-frame feature maps (N, h, w, C) -> feature vectors (N, F) (the paper's design)."""
  channels: int = 128
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, maps):
    conv = lambda k, s, name: nn.Conv(self.channels, (k, k), strides=(s, s), padding="SAME",
                                      dtype=self.dtype, name=name)
    x = nn.relu(conv(3, 1, "conv3_0")(maps))
    x = nn.relu(conv(3, 1, "conv3_1")(x))
    x = nn.relu(conv(5, 2, "conv5_0")(x))
    x = nn.relu(conv(5, 2, "conv5_1")(x))
    return x.reshape(x.shape[0], -1)


class ImagePoseMachine(nn.Module):
  """Attributes mirror `config.model` and `config.model.encoder` (see config_defaults)."""
  num_joints: int = 17
  hidden: int = 1024
  lstm_layers: int = 2
  direction: str = "bidirectional"
  projector_hidden: int = 1024
  residual_correction: bool = True
  trunk: Sequence[int] = (16, 32, 64)
  convs_per_block: int = 2
  feature_channels: int = 64
  stages: int = 2
  stage_channels: int = 64
  stage_kernel: int = 3
  stem_channels: int = 128
  stem_keypoints: bool = True
  dtype: str = "float32"

  def setup(self):
    dtype = DTYPES[self.dtype]
    self.encoder = PoseEncoder(self.num_joints, tuple(self.trunk), self.convs_per_block,
                               self.feature_channels, self.stages, self.stage_channels,
                               self.stage_kernel, dtype)
    self.stem = ImageStem(self.stem_channels, dtype)
    self.transformer = PoseTransformer(self.num_joints, self.hidden, self.lstm_layers,
                                       self.direction, dtype)
    self.projector = Projector(self.num_joints, self.projector_hidden,
                               self.residual_correction, dtype)

  def encode(self, frames):
    """frames (N, S, S, 3) -> the encoder's dict (see PoseEncoder)."""
    return self.encoder(frames)

  def __call__(self, frames, mask=None, initial_states=None, joint_keep=None,
               freeze: tuple = ()):
    """Args:
      frames: (B, T, S, S, 3) RGB crops in [0, 1].
      mask: (B, T) frame mask (1 real, 0 padding); all ones if None.
      initial_states: per-LSTM-layer states for streaming; zeros if None.
      joint_keep: optional (B, T, K) 0/1: joints whose heatmap and 2D input the transformer
        sees (0 = masked, the paper's joint-masking stage).
      freeze: static names of parts whose outputs carry no gradient ('encoder',
        'transformer').
    Returns:
      dict: logits/heatmaps (B, T, stages, h, w, K) (heatmaps: spatial softmax),
      pose_2d (B, T, K, 2) crop coordinates in [-1, 1]; pose_3d_intermediate and pose_3d
      (B, T, K, 3) root-relative camera-frame metres; proj_2d (B, T, K, 2) root-centred
      scale-normalised 2D; lstm_states.
    """
    if frames.ndim != 5 or frames.shape[-1] != 3:
      raise ValueError(f"frames: expected shape (B, T, S, S, 3), got {frames.shape}.")
    b, t = frames.shape[:2]
    enc = self.encoder(frames.reshape(b * t, *frames.shape[2:]))
    if "encoder" in freeze:
      enc = jax.lax.stop_gradient(enc)
    feats, prob, joints = enc["features"], enc["prob"][:, -1], enc["joints_2d"]
    if joint_keep is not None:
      keep = joint_keep.reshape(b * t, self.num_joints).astype(prob.dtype)
      prob = prob * keep[:, None, None, :]
      joints = joints * keep[..., None]
    hw = prob.shape[1] * prob.shape[2]
    maps = jnp.concatenate([feats, (prob * hw).astype(feats.dtype)], -1)
    x = self.stem(maps.astype(DTYPES[self.dtype]))
    if self.stem_keypoints:
      x = jnp.concatenate([x, joints.reshape(b * t, -1).astype(x.dtype)], -1)
    inter, states = self.transformer(x.reshape(b, t, -1), mask, initial_states)
    if "transformer" in freeze:
      inter = jax.lax.stop_gradient(inter)
    pose_3d, proj_2d = self.projector(inter)
    shape = (b, t) + enc["logits"].shape[1:]
    return {"logits": enc["logits"].reshape(shape), "heatmaps": enc["prob"].reshape(shape),
            "pose_2d": enc["joints_2d"].reshape(b, t, self.num_joints, 2),
            "pose_3d_intermediate": inter, "pose_3d": pose_3d, "proj_2d": proj_2d,
            "lstm_states": states}


def from_config(model_config, num_joints: int) -> ImagePoseMachine:
  m, e = model_config, model_config.encoder
  return ImagePoseMachine(
      num_joints=num_joints, hidden=m.hidden, lstm_layers=m.lstm_layers,
      direction=m.direction, projector_hidden=m.projector_hidden,
      residual_correction=m.residual_correction, trunk=tuple(e.trunk),
      convs_per_block=e.convs_per_block, feature_channels=e.feature_channels,
      stages=e.stages, stage_channels=e.stage_channels, stage_kernel=e.stage_kernel,
      stem_channels=e.stem_channels, stem_keypoints=e.stem_keypoints, dtype=m.dtype)
