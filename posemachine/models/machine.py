"""The pose machine: (image encoder ->) 2D-to-3D transformer -> 3D-to-2D projector.

One module, one pure `apply`. In the keypoint-input (lifting) mode the per-frame features
of the transformer are the flattened 2D pose (+ confidences). The image mode (the 2D pose
sub-network on RGB frames, a later issue) slots in before the transformer: its per-frame
feature vector replaces the keypoint features, and its 2D pose becomes the target of the
projector's consistency term; `PoseTransformer` already takes generic (B, T, F) features.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from posemachine.models.projector import Projector
from posemachine.models.transformer import PoseTransformer

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class PoseMachine(nn.Module):
  """Attributes mirror `config.model` (see config_defaults)."""
  num_joints: int = 17
  hidden: int = 1024
  lstm_layers: int = 2
  direction: str = "bidirectional"
  projector_hidden: int = 1024
  residual_correction: bool = True
  use_confidence: bool = True
  center_input: bool = True
  dtype: str = "float32"

  def setup(self):
    dtype = DTYPES[self.dtype]
    self.transformer = PoseTransformer(self.num_joints, self.hidden, self.lstm_layers,
                                       self.direction, dtype)
    self.projector = Projector(self.num_joints, self.projector_hidden,
                               self.residual_correction, dtype)

  def __call__(self, pose_2d, confidence=None, mask=None, initial_states=None):
    """Lifts a batch of 2D pose windows.

    Args:
      pose_2d: (B, T, K, 2) normalised screen coordinates (u / w * 2 - [1, h / w]).
      confidence: (B, T, K) in [0, 1]; ones if None.
      mask: (B, T) frame mask (1 real, 0 padding); all ones if None.
      initial_states: per-LSTM-layer (h, c) states for streaming; zeros if None.
    Returns:
      dict: pose_3d_intermediate (B, T, K, 3) and pose_3d (B, T, K, 3), root-relative
      camera-frame metres; proj_2d (B, T, K, 2), root-centred scale-normalised 2D;
      lstm_states, the final states.
    """
    if pose_2d.ndim != 4 or pose_2d.shape[-2:] != (self.num_joints, 2):
      raise ValueError(f"pose_2d: expected shape (B, T, {self.num_joints}, 2), "
                       f"got {pose_2d.shape}.")
    b, t = pose_2d.shape[:2]
    if self.center_input:  # root-centred joints + the root's position: same information.
      root = pose_2d[..., :1, :]
      feats = [(pose_2d - root).reshape(b, t, -1), root.reshape(b, t, 2)]
    else:
      feats = [pose_2d.reshape(b, t, -1)]
    if self.use_confidence:
      if confidence is None:
        confidence = jnp.ones((b, t, self.num_joints), pose_2d.dtype)
      feats.append(confidence.reshape(b, t, -1))
    inter, states = self.transformer(jnp.concatenate(feats, -1), mask, initial_states)
    pose_3d, proj_2d = self.projector(inter)
    return {"pose_3d_intermediate": inter, "pose_3d": pose_3d, "proj_2d": proj_2d,
            "lstm_states": states}


def from_config(model_config: ml_collections.ConfigDict, num_joints: int) -> PoseMachine:
  m = model_config
  return PoseMachine(num_joints=num_joints, hidden=m.hidden, lstm_layers=m.lstm_layers,
                     direction=m.direction, projector_hidden=m.projector_hidden,
                     residual_correction=m.residual_correction,
                     use_confidence=m.use_confidence, center_input=m.center_input,
                     dtype=m.dtype)
