"""An LSTM layer scanned over time with `lax.scan`.

The input projection of all frames is one matmul hoisted out of the scan; the four gates
share one fused recurrent matmul per step. A frame mask freezes the state on padded
frames, so a reversed pass over an end-padded window starts cleanly at the last real frame.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def _forget_bias_init(key, shape, dtype=jnp.float32):
  hidden = shape[0] // 4
  return jnp.zeros(shape, dtype).at[hidden:2 * hidden].set(1.0)


class LSTM(nn.Module):
  """One LSTM layer over (B, T, D) inputs.

  Attributes:
    hidden: state width H.
    reverse: run over reversed time (outputs are returned in the original order).
    dtype: compute dtype of the matmuls; the cell state is kept in float32.
  """
  hidden: int
  reverse: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None, initial_state=None):
    """Args:
      x: (B, T, D) inputs.
      mask: optional (B, T), 1 for real frames; the state is held on padded frames.
      initial_state: optional (h, c), each (B, H) float32; zeros by default.
    Returns:
      outputs (B, T, H) in `dtype`, final state (h, c) each (B, H) float32.
    """
    b, _, d = x.shape
    h = self.hidden
    w_in = self.param("w_in", nn.initializers.lecun_normal(), (d, 4 * h))
    w_rec = self.param("w_rec", nn.initializers.orthogonal(), (h, 4 * h))
    bias = self.param("bias", _forget_bias_init, (4 * h,))
    # Hoisted input projection: one (B*T, D) x (D, 4H) matmul.
    gates_in = jnp.einsum("btd,dg->btg", x.astype(self.dtype), w_in.astype(self.dtype))
    gates_in = gates_in + bias.astype(self.dtype)
    if mask is None:
      mask = jnp.ones(x.shape[:2], jnp.float32)
    xs = (jnp.swapaxes(gates_in, 0, 1), jnp.swapaxes(mask, 0, 1)[..., None])
    if initial_state is None:
      initial_state = (jnp.zeros((b, h), jnp.float32), jnp.zeros((b, h), jnp.float32))
    w_rec_c = w_rec.astype(self.dtype)

    def step(carry, inputs):
      h_prev, c_prev = carry
      g_in, m = inputs
      gates = (g_in + h_prev.astype(self.dtype) @ w_rec_c).astype(jnp.float32)
      i, f, g, o = jnp.split(gates, 4, axis=-1)
      c_new = jax.nn.sigmoid(f) * c_prev + jax.nn.sigmoid(i) * jnp.tanh(g)
      h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
      m = m.astype(jnp.float32)
      h_new = m * h_new + (1 - m) * h_prev
      c_new = m * c_new + (1 - m) * c_prev
      return (h_new, c_new), h_new.astype(self.dtype)

    final, ys = jax.lax.scan(step, initial_state, xs, reverse=self.reverse)
    return jnp.swapaxes(ys, 0, 1), final
