"""The LSTM's hand-written backward pass equals autodiff of the plain scan."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posemachine.models import lstm as lstm_mod

T, B, H = 7, 3, 5


@pytest.fixture(autouse=True, params=["feature_major", "batch_major"])
def state_layout(request, monkeypatch):
  """Every test runs with both layouts of the state inside the scan (chosen by batch size)."""
  monkeypatch.setattr(lstm_mod, "FEATURE_MAJOR_MAX_BATCH",
                      1 << 30 if request.param == "feature_major" else 0)
  return request.param


def _inputs(dtype):
  k = jax.random.split(jax.random.key(0), 8)
  gates_in = jax.random.normal(k[0], (T, B, 4 * H)).astype(dtype)
  w_rec = (0.5 * jax.random.normal(k[1], (H, 4 * H))).astype(dtype)
  bias = jax.random.normal(k[7], (4 * H,)).astype(dtype)
  h0, c0 = jax.random.normal(k[2], (B, H)), jax.random.normal(k[3], (B, H))
  # Ragged: sequence 0 is end-padded, sequence 2 start-padded, sequence 1 full.
  mask = jnp.ones((T, B, 1)).at[5:, 0].set(0).at[:2, 2].set(0)
  cotangents = (jax.random.normal(k[4], (T, B, H)).astype(dtype),
                jax.random.normal(k[5], (B, H)), jax.random.normal(k[6], (B, H)))
  return (gates_in, mask, w_rec, bias, h0, c0), cotangents


def _loss(scan, mask, reverse, cotangents, **kw):
  dys, dh, dc = cotangents

  def loss(gates_in, w_rec, bias, h0, c0):
    ys, (h, c) = scan(gates_in, mask, w_rec, bias, h0, c0, reverse, **kw)
    return (jnp.sum(ys.astype(jnp.float32) * dys.astype(jnp.float32)) + jnp.sum(h * dh)
            + jnp.sum(c * dc))
  return loss


@pytest.mark.parametrize("reverse,dtype,tol,unroll", [
    (False, jnp.float32, 1e-5, 1), (True, jnp.float32, 1e-5, 1), (True, jnp.float32, 1e-5, 2),
    (False, jnp.bfloat16, 2e-2, 1), (True, jnp.bfloat16, 2e-2, 1)])
def test_custom_vjp_matches_scan_autodiff(reverse, dtype, tol, unroll):
  (gates_in, mask, w_rec, bias, h0, c0), cts = _inputs(dtype)
  args = (gates_in, w_rec, bias, h0, c0)
  fast = _loss(lstm_mod.lstm_scan, mask, reverse, cts, unroll=unroll)
  ref = _loss(lstm_mod.lstm_scan_reference, mask, reverse, cts)
  np.testing.assert_allclose(fast(*args), ref(*args), rtol=1e-6)
  got = jax.grad(fast, argnums=(0, 1, 2, 3, 4))(*args)
  want = jax.grad(ref, argnums=(0, 1, 2, 3, 4))(*args)
  for name, g, w in zip(("gates_in", "w_rec", "bias", "h0", "c0"), got, want):
    assert g.dtype == w.dtype, name
    g, w = np.asarray(g, np.float32), np.asarray(w, np.float32)
    # bf16: the reference accumulates dW_rec in bf16 over the steps, the fast path in f32.
    np.testing.assert_allclose(g, w, atol=tol * np.abs(w).max(), err_msg=name)
    if name == "w_rec":
      assert np.abs(g).max() > 0


@pytest.mark.parametrize("reverse", [False, True])
def test_one_time_step_matches_scan_autodiff(reverse):
  """A single step (streaming) takes the batch-major path whatever the batch size."""
  (gates_in, mask, w_rec, bias, h0, c0), cts = _inputs(jnp.float32)
  gates_in, mask, cts = gates_in[:1], mask[:1], (cts[0][:1],) + cts[1:]
  args = (gates_in, w_rec, bias, h0, c0)
  fast = _loss(lstm_mod.lstm_scan, mask, reverse, cts)
  ref = _loss(lstm_mod.lstm_scan_reference, mask, reverse, cts)
  np.testing.assert_allclose(fast(*args), ref(*args), rtol=1e-6)
  for g, w in zip(jax.grad(fast, argnums=(0, 1, 2, 3, 4))(*args),
                  jax.grad(ref, argnums=(0, 1, 2, 3, 4))(*args)):
    np.testing.assert_allclose(g, w, atol=1e-5 * np.abs(w).max())


def test_padding_holds_state_and_gets_no_gradient():
  (gates_in, mask, w_rec, bias, h0, c0), cts = _inputs(jnp.float32)
  ys, (h, c) = lstm_mod.lstm_scan(gates_in, mask, w_rec, bias, h0, c0)
  np.testing.assert_array_equal(ys[5:, 0], np.broadcast_to(ys[4, 0], (T - 5, H)))
  np.testing.assert_array_equal(h[0], ys[4, 0])
  np.testing.assert_array_equal(ys[:2, 2], np.broadcast_to(h0[2], (2, H)))
  g = jax.grad(_loss(lstm_mod.lstm_scan, mask, False, cts), argnums=0)(
      gates_in, w_rec, bias, h0, c0)
  assert np.all(np.asarray(g)[5:, 0] == 0) and np.all(np.asarray(g)[:2, 2] == 0)


def test_layer_time_major_equals_batch_major_and_carries_state():
  """The layer (incl. the hoisted input projection) in both layouts; state carried in halves."""
  x = jax.random.normal(jax.random.key(1), (B, T, 6))
  mask = jnp.ones((B, T))
  layer = lstm_mod.LSTM(H)
  params = layer.init(jax.random.key(2), x)
  ys, final = layer.apply(params, x, mask)
  ys_t, final_t = lstm_mod.LSTM(H, time_major=True).apply(
      params, jnp.swapaxes(x, 0, 1), mask.T)
  np.testing.assert_allclose(jnp.swapaxes(ys_t, 0, 1), ys, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(final_t[0], final[0], rtol=1e-6, atol=1e-6)
  # Streaming: two halves with the state carried equal the whole window.
  y1, s1 = layer.apply(params, x[:, :3])
  y2, s2 = layer.apply(params, x[:, 3:], initial_state=s1)
  np.testing.assert_allclose(jnp.concatenate([y1, y2], 1), ys, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(s2[1], final[1], rtol=1e-5, atol=1e-6)

  # Gradients through the carried state match the plain scan too.
  def loss(scan, p):
    old = lstm_mod.lstm_scan
    lstm_mod.lstm_scan = scan
    try:
      a, s = layer.apply(p, x[:, :3])
      b, _ = layer.apply(p, x[:, 3:], initial_state=s)
    finally:
      lstm_mod.lstm_scan = old
    return jnp.sum(a ** 2) + jnp.sum(jnp.sin(b))
  ref = lambda g, m, w, b, h, c, r, *_: lstm_mod.lstm_scan_reference(g, m, w, b, h, c, r)
  got = jax.grad(lambda p: loss(lstm_mod.lstm_scan, p))(params)
  want = jax.grad(lambda p: loss(ref, p))(params)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reverse", [False, True])
def test_zero_state_skips_the_first_product_with_the_same_result(reverse):
  """zero_state=True (the first step's w_rec^T @ 0 and its backward skipped) equals the plain
  scan from a zero state, ragged masks included (sequence 0's first reversed step is padding)."""
  (gates_in, mask, w_rec, bias, _, _), (dys, dh, dc) = _inputs(jnp.float32)
  zeros = jnp.zeros((B, H))

  def loss(scan, gates_in, w_rec, bias, **kw):
    ys, (h, c) = scan(gates_in, mask, w_rec, bias, zeros, zeros, reverse, **kw)
    return jnp.sum(ys * dys) + jnp.sum(h * dh) + jnp.sum(c * dc)
  fast = lambda g, w, b: loss(lstm_mod.lstm_scan, g, w, b, zero_state=True)
  ref = lambda g, w, b: loss(lstm_mod.lstm_scan_reference, g, w, b)
  args = (gates_in, w_rec, bias)
  np.testing.assert_allclose(fast(*args), ref(*args), rtol=1e-6)
  got = jax.grad(fast, argnums=(0, 1, 2))(*args)
  want = jax.grad(ref, argnums=(0, 1, 2))(*args)
  for name, g, w in zip(("gates_in", "w_rec", "bias"), got, want):
    np.testing.assert_allclose(g, w, atol=1e-5 * np.abs(w).max(), err_msg=name)
  # The skip is real: a non-zero state passed with the promise gives a different result.
  ones = jnp.ones((B, H))
  a = lstm_mod.lstm_scan(gates_in, mask, w_rec, bias, ones, ones, reverse, 1, True)[0]
  b = lstm_mod.lstm_scan(gates_in, mask, w_rec, bias, ones, ones, reverse, 1, False)[0]
  assert not np.allclose(a, b)
