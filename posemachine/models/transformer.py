"""The 2D-to-3D pose transformer, keypoint-input variant.

(B, T, K, 2) normalised 2D keypoints (+ optional confidences) -> dense stem FC(hidden) ->
LSTM(hidden) x L over time -> FC -> (B, T, K, 3) root-relative 3D pose in metres.
In the 'bidirectional' variant every second LSTM layer runs over reversed time (the
reference's forward-then-backward stack); 'causal' runs all layers forward (streaming).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from posemachine.models.dense import Dense
from posemachine.models.lstm import LSTM


class PoseTransformer(nn.Module):
  """Attributes: num_joints K, hidden width, lstm_layers, direction, dtype."""
  num_joints: int
  hidden: int = 1024
  lstm_layers: int = 2
  direction: str = "bidirectional"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features, mask=None, initial_states=None):
    """Args:
      features: (B, T, F) per-frame input features (flattened keypoints, or image features).
      mask: optional (B, T) frame mask.
      initial_states: optional list of per-layer LSTM states (streaming).
    Returns:
      pose_3d (B, T, K, 3) root-relative metres (root joint exactly 0), final LSTM states.
    """
    b, t, _ = features.shape
    # Time-major inside: the narrow input and output are transposed, not the wide activations.
    features = jnp.swapaxes(features, 0, 1)
    mask = None if mask is None else jnp.swapaxes(mask, 0, 1)
    x = nn.relu(Dense(self.hidden, dtype=self.dtype, name="stem")(features))
    states = []
    for layer in range(self.lstm_layers):
      reverse = self.direction == "bidirectional" and layer % 2 == 1
      init = None if initial_states is None else initial_states[layer]
      x, state = LSTM(self.hidden, reverse=reverse, dtype=self.dtype,
                      time_major=True, name=f"lstm_{layer}")(x, mask, init)
      states.append(state)
    out = jnp.swapaxes(Dense(self.num_joints * 3, dtype=self.dtype, name="head")(x), 0, 1)
    pose = out.astype(jnp.float32).reshape(b, t, self.num_joints, 3)
    return pose - pose[..., :1, :], states
