"""An LSTM layer scanned over time with `lax.scan`, with a hand-written backward pass.

The input projection of all frames is one matmul hoisted out of the scan; the four gates
share one fused recurrent matmul per step. A frame mask freezes the state on padded
frames, so a reversed pass over an end-padded window starts cleanly at the last real frame.

The recurrence (`lstm_scan`) has a custom VJP: the backward scan carries only (dh, dc) and
emits the per-step gate gradients; the recurrent weight gradient is then ONE
(T*B, H)^T x (T*B, 4H) matmul over all frames instead of T small ones accumulated inside
the reverse scan (what autodiff of `lax.scan` does). The gate-input gradient flows on to the
hoisted input projection, whose weight gradient is one large matmul as well. Same maths as
`lstm_scan_reference` (plain autodiff), tested to 1e-5 in tests/test_lstm.py.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from posemachine.models import dense


def _forget_bias_init(key, shape, dtype=jnp.float32):
  hidden = shape[0] // 4
  return jnp.zeros(shape, dtype).at[hidden:2 * hidden].set(1.0)


def _update(gates, h_prev, c_prev, m):
  """The cell update from float32 pre-activations `gates` = (i, f, g, o), four arrays of
  the state's shape; h_prev, c_prev and the mask m broadcast against them.

  Returns the new (h, c) (held where m == 0) and the activations (i, f, g, o).
  """
  i, f, g, o = gates
  i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
  c_new = f * c_prev + i * g
  h_new = o * jnp.tanh(c_new)
  m = m.astype(jnp.float32)
  h_new = m * h_new + (1 - m) * h_prev
  c_keep = m * c_new + (1 - m) * c_prev
  return h_new, c_keep, (i, f, g, o)


def _cell(g_in, h_prev, c_prev, m, w_rec, bias):
  """One step. g_in (B, 4H), bias (4H,) compute dtype; h_prev, c_prev (B, H) f32; m (B, 1).
  See _update."""
  gates = (g_in + h_prev.astype(w_rec.dtype) @ w_rec + bias).astype(jnp.float32)
  return _update(jnp.split(gates, 4, axis=-1), h_prev, c_prev, m)


def lstm_scan_reference(gates_in, mask, w_rec, bias, h0, c0, reverse=False):
  """The recurrence by plain autodiff of `lax.scan` (the definition; used in tests).

  Args:
    gates_in: (T, B, 4H) input projection, compute dtype (the dtype of w_rec).
    mask: (T, B, 1) frame mask, 1 for real frames (state held where 0).
    w_rec: (H, 4H) recurrent weights in the compute dtype; gate order i, f, g, o.
    bias: (4H,) gate bias in the compute dtype.
    h0, c0: (B, H) float32 initial state.
    reverse: scan from the last frame to the first.
  Returns:
    ys (T, B, H) in the compute dtype, final (h, c) each (B, H) float32.
  """
  def step(carry, inputs):
    h, c, _ = _cell(inputs[0], carry[0], carry[1], inputs[1], w_rec, bias)
    return (h, c), h.astype(w_rec.dtype)
  final, ys = jax.lax.scan(step, (h0, c0), (gates_in, mask), reverse=reverse)
  return ys, final


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8))
def lstm_scan(gates_in, mask, w_rec, bias, h0, c0, reverse=False, unroll=1, zero_state=False):
  """Same contract as `lstm_scan_reference`, with the fast backward pass. `unroll`: scan unroll.

  zero_state: the caller promises h0 = c0 = 0 and needs no gradient for them: the first
  step's recurrent product (w_rec^T @ 0) and the backward product into the initial state
  are skipped, 1/T of those products. Their cotangents are then returned as zeros.
  """
  return _forward(gates_in, mask, w_rec, bias, h0, c0, reverse, unroll, zero_state)[0]


def _first_index(num_steps, reverse):
  return num_steps - 1 if reverse else 0


def _skip_at(first, t, fn, arg):
  """fn(arg), or zeros of its shape on step `first` (a zero state entering the step)."""
  return jax.lax.cond(t == first, lambda a: jnp.zeros_like(fn(a)), fn, arg)


# Layout of the state inside the scan. Feature-major, (H, B), for small batches: the
# recurrent product is then w_rec^T (4H, H) @ h^T (H, B), measured about 15 % faster on
# the development CPU than h (B, H) @ w_rec (H, 4H) at B = 64; the scan's (T, B, 4H) inputs
# are turned feature-major once before it and its outputs back once after it. Batch-major,
# (B, H), above FEATURE_MAJOR_MAX_BATCH: at B = 1024 the products are large either way and
# those turns (256 MB each at 16 frames) cost as much as they save.
# One time step (streaming: a frame per call) is batch-major too: there is no scan to
# amortise the turns over, and XLA fused the transpose of w_rec into the product, emitted as
# a slow loop (13 ms instead of 0.4 ms per 1024-wide layer at B = 1).
FEATURE_MAJOR_MAX_BATCH = 256


def _feature_major(steps, batch):
  # A symbolic batch (jax.export with a polymorphic batch dimension): feature-major.
  if isinstance(steps, int) and steps == 1:
    return False
  return not isinstance(batch, int) or batch <= FEATURE_MAJOR_MAX_BATCH


def _turn(x, fm):
  """(T, B, F) <-> (T, F, B) when feature-major; as is otherwise."""
  return jnp.swapaxes(x, 1, 2) if fm else x


# Feature-major scans read and write the four gates as four separate stacked (T, H, B)
# arrays: XLA's CPU loop emitter runs a fusion that slices gate blocks out of one
# dynamically indexed (T, 4H, B) array, or concatenates them into one, several times slower
# than the same arithmetic on whole slices (e.g. 200 vs 35 us per step for the recomputed
# tanh(c) at B = 64). The turns to and from feature-major copy the (T, B, 4H) arrays anyway,
# so splitting or joining the gates there is free (about 4 % of a 64 x 16 train step,
# separate processes). Batch-major scans keep one array.


def _to_scan(x, fm):
  """(T, B, 4H) -> the scan's layout: four (T, H, B) gate arrays if feature-major."""
  if fm:  # XLA writes each gate with one transposing copy (split, then swap: two)
    t, b, g = x.shape
    x4 = jnp.transpose(x.reshape(t, b, 4, g // 4), (2, 0, 3, 1))
    return tuple(x4[k] for k in range(4))
  return _turn(x, fm)


def _from_scan(x, fm):
  """Inverse of _to_scan."""
  if fm:  # (a stack transposed in one go measured 5x slower)
    return jnp.concatenate([jnp.swapaxes(p, 1, 2) for p in x], axis=-1)
  return _turn(x, fm)


def _gates(x, axis):
  """The four gate blocks of one step: as given (a tuple) or split along `axis`."""
  return x if isinstance(x, tuple) else tuple(jnp.split(x, 4, axis=axis))


def _forward(gates_in, mask, w_rec, bias, h0, c0, reverse, unroll, zero_state=False):
  fm = _feature_major(*gates_in.shape[:2])
  axis = 0 if fm else -1
  first = _first_index(gates_in.shape[0], reverse)
  b = _gates(bias[:, None] if fm else bias, axis)
  if fm:
    w_t = w_rec.T
    recurrent = lambda h: w_t @ h.astype(w_t.dtype)
  else:
    recurrent = lambda h: h.astype(w_rec.dtype) @ w_rec

  def step(carry, inputs):
    h, c = carry
    g_in, m, t = inputs
    rec = _skip_at(first, t, recurrent, h) if zero_state else recurrent(h)
    gates = [(x + r + bb).astype(jnp.float32)
             for x, r, bb in zip(_gates(g_in, axis), _gates(rec, axis), b)]
    h_new, c_keep, acts = _update(gates, h, c, m.T if fm else m)
    # The raw new cell state is not kept: the backward pass recomputes it from the
    # activations and the entering state (one stacked (T, B, H) output less).
    acts = acts if fm else jnp.concatenate(acts, axis)
    return (h_new, c_keep), (h_new.astype(w_rec.dtype), c_keep, acts)
  carry = (h0.T, c0.T) if fm else (h0, c0)
  (h_t, c_t), (ys, cs, acts) = jax.lax.scan(
      step, carry, (_to_scan(gates_in, fm), mask, jnp.arange(gates_in.shape[0])),
      reverse=reverse, unroll=unroll)
  final = (h_t.T, c_t.T) if fm else (h_t, c_t)
  return (_turn(ys, fm), final), (cs, acts)


def _fwd(gates_in, mask, w_rec, bias, h0, c0, reverse, unroll, zero_state):
  out, (cs, acts) = _forward(gates_in, mask, w_rec, bias, h0, c0, reverse, unroll,
                             zero_state)
  ys = out[0]
  # States entering each step: the initial state, then the carried ones, in scan order.
  # ys is (T, B, H); cs and acts are in the scan's layout (feature-major: cs (T, H, B),
  # acts four (T, H, B) arrays).
  c0_s = c0.T if _feature_major(*gates_in.shape[:2]) else c0
  if reverse:
    h_prev = jnp.concatenate([ys[1:], h0.astype(ys.dtype)[None]], 0)
    c_prev = jnp.concatenate([cs[1:], c0_s[None]], 0)
  else:
    h_prev = jnp.concatenate([h0.astype(ys.dtype)[None], ys[:-1]], 0)
    c_prev = jnp.concatenate([c0_s[None], cs[:-1]], 0)
  return out, (mask, w_rec, bias, h_prev, c_prev, acts)


def _bwd(reverse, unroll, zero_state, res, cotangents):
  mask, w_rec, bias, h_prev, c_prev, acts = res
  dys, (dh_final, dc_final) = cotangents
  cdt = w_rec.dtype
  num_steps, batch = mask.shape[:2]
  first = _first_index(num_steps, reverse)
  fm = _feature_major(num_steps, batch)
  axis = 0 if fm else -1
  if fm:
    recurrent = lambda d_gates: w_rec @ d_gates
  else:  # d_gates (B, 4H) @ w_rec^T: the BLAS reads the transposed operand as laid out.
    recurrent = lambda d_gates: jax.lax.dot_general(d_gates, w_rec, (((1,), (1,)), ((), ())))

  def step(carry, inputs):
    dh, dc = carry  # (H, B) if feature-major, else (B, H)
    dy, m, cp, a, t = inputs
    m = (m.T if fm else m).astype(jnp.float32)
    dh = dh + dy.astype(jnp.float32)
    i, f, g, o = _gates(a, axis)
    dh_new, dc_new = m * dh, m * dc
    tc = jnp.tanh(f * cp + i * g)  # the forward's raw new cell state, recomputed
    dc_new = dc_new + dh_new * o * (1 - tc * tc)
    d_parts = tuple(d.astype(cdt) for d in (
        dc_new * g * i * (1 - i), dc_new * cp * f * (1 - f), dc_new * i * (1 - g * g),
        dh_new * tc * o * (1 - o)))
    d_gates = jnp.concatenate(d_parts, axis)
    rec = _skip_at(first, t, recurrent, d_gates) if zero_state else recurrent(d_gates)
    dh_prev = (1 - m) * dh + rec.astype(jnp.float32)
    dc_prev = (1 - m) * dc + dc_new * f
    return (dh_prev, dc_prev), (d_parts if fm else d_gates)

  carry = (dh_final.T, dc_final.T) if fm else (dh_final, dc_final)
  (dh0, dc0), d_gates = jax.lax.scan(
      step, carry, (_turn(dys, fm), mask, c_prev, acts, jnp.arange(num_steps)),
      reverse=not reverse, unroll=unroll)
  d_gates = _from_scan(d_gates, fm)  # (T, B, 4H)
  if fm:
    dh0, dc0 = dh0.T, dc0.T
  # The recurrent weight gradient: one matmul over all T*B frames. With zero_state the
  # first step's block of h_prev is zero; slicing it away made XLA copy d_gates once more,
  # in a slow fused transpose (0.7 s of a batch-1024 step), so it stays in.
  if zero_state:
    dh0, dc0 = jnp.zeros_like(dh0), jnp.zeros_like(dc0)
  dw = jnp.einsum("tbh,tbg->hg", h_prev, d_gates,
                  preferred_element_type=jnp.float32).astype(cdt)
  # The bias gradient as a matrix-vector product (a reduction over 256 MB ran 4-8x slower
  # beside the large matmuls at batch 1024).
  d_flat = d_gates.reshape(-1, d_gates.shape[-1])
  d_bias = jnp.dot(jnp.ones((d_flat.shape[0],), cdt), d_flat,
                   preferred_element_type=jnp.float32).astype(cdt)
  return (d_gates, jnp.zeros_like(mask), dense.sum_like(dw, w_rec),
          dense.sum_like(d_bias, bias), dh0, dc0)


lstm_scan.defvjp(_fwd, _bwd)


class LSTM(nn.Module):
  """One LSTM layer over (B, T, D) inputs.

  Attributes:
    hidden: state width H.
    reverse: run over reversed time (outputs are returned in the original order).
    dtype: compute dtype of the matmuls; the cell state is kept in float32.
    unroll: time steps per scan iteration (1: a plain loop).
    time_major: inputs, mask and outputs are (T, B, ...) instead of (B, T, ...); a stack of
      layers then needs no transposes of its (T*B, 4H) activations.
  """
  hidden: int
  reverse: bool = False
  dtype: Any = jnp.float32
  unroll: int = 1
  time_major: bool = False

  @nn.compact
  def __call__(self, x, mask=None, initial_state=None):
    """Args:
      x: (B, T, D) inputs ((T, B, D) if time_major).
      mask: optional (B, T) ((T, B) if time_major), 1 for real frames; the state is held on
        padded frames.
      initial_state: optional (h, c), each (B, H) float32; zeros by default.
    Returns:
      outputs (B, T, H) ((T, B, H) if time_major) in `dtype`, final state (h, c) each (B, H)
      float32.
    """
    if not self.time_major:
      x = jnp.swapaxes(x, 0, 1)
      mask = None if mask is None else jnp.swapaxes(mask, 0, 1)
    _, b, d = x.shape
    h = self.hidden
    w_in = self.param("w_in", nn.initializers.lecun_normal(), (d, 4 * h))
    w_rec = self.param("w_rec", nn.initializers.orthogonal(), (h, 4 * h))
    bias = self.param("bias", _forget_bias_init, (4 * h,))
    # Hoisted input projection: one (T*B, D) x (D, 4H) matmul (the bias is added in the scan).
    gates_in = dense.dense_product(x.astype(self.dtype), w_in.astype(self.dtype))
    if mask is None:
      mask = jnp.ones(x.shape[:2], jnp.float32)
    mask = mask.astype(jnp.float32)[..., None]
    zero_state = initial_state is None
    if initial_state is None:  # zeros like the inputs' rows (inside shard_map: per device).
      zeros = jnp.zeros_like(gates_in[0, :, :h], jnp.float32)
      initial_state = (zeros, zeros)
    h0, c0 = (s.astype(jnp.float32) for s in initial_state)
    ys, final = lstm_scan(gates_in, mask, w_rec.astype(self.dtype), bias.astype(self.dtype),
                          h0, c0, self.reverse, self.unroll, zero_state)
    return (ys if self.time_major else jnp.swapaxes(ys, 0, 1)), final
