"""Tests for posemachine.metrics against independent NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posemachine import metrics

K = 17


# ----------------------------------------------------------------------------
# Independent NumPy references (VideoPose3D-style, written from the formulas).


def ref_mpjpe(pred, gt):
  pred = pred - pred[..., :1, :]
  gt = gt - gt[..., :1, :]
  return np.sqrt(((pred - gt) ** 2).sum(-1)).mean(-1)


def ref_p_mpjpe(pred, gt):
  """Per-pose Procrustes with normalised point sets, VideoPose3D-style."""
  pred, gt = pred.reshape(-1, K, 3), gt.reshape(-1, K, 3)
  mu_x = gt.mean(1, keepdims=True)
  mu_y = pred.mean(1, keepdims=True)
  x0, y0 = gt - mu_x, pred - mu_y
  norm_x = np.sqrt((x0 ** 2).sum((1, 2), keepdims=True))
  norm_y = np.sqrt((y0 ** 2).sum((1, 2), keepdims=True))
  x0, y0 = x0 / norm_x, y0 / norm_y
  h = np.matmul(x0.transpose(0, 2, 1), y0)
  u, s, vt = np.linalg.svd(h)
  v = vt.transpose(0, 2, 1)
  r = np.matmul(v, u.transpose(0, 2, 1))
  sign = np.sign(np.linalg.det(r))
  v[:, :, -1] *= sign[:, None]
  s[:, -1] *= sign
  r = np.matmul(v, u.transpose(0, 2, 1))
  a = s.sum(1)[:, None, None] * norm_x / norm_y
  t = mu_x - a * np.matmul(mu_y, r)
  aligned = a * np.matmul(pred, r) + t
  return np.sqrt(((aligned - gt) ** 2).sum(-1)).mean(-1)


def ref_n_mpjpe(pred, gt):
  pred = pred - pred[..., :1, :]
  gt = gt - gt[..., :1, :]
  scale = (pred * gt).sum((-2, -1)) / (pred * pred).sum((-2, -1))
  return ref_mpjpe(scale[..., None, None] * pred, gt)


def random_rotation(rng):
  q, r = np.linalg.qr(rng.normal(size=(3, 3)))
  q = q * np.sign(np.diag(r))
  if np.linalg.det(q) < 0:
    q[:, 0] *= -1
  return q


@pytest.fixture
def poses():
  rng = np.random.default_rng(0)
  gt = rng.normal(scale=0.3, size=(4, K, 3))
  pred = gt + rng.normal(scale=0.05, size=gt.shape)
  return pred.astype(np.float32), gt.astype(np.float32)


def test_mpjpe_matches_reference(poses):
  pred, gt = poses
  np.testing.assert_allclose(metrics.mpjpe(pred, gt), ref_mpjpe(pred, gt), rtol=1e-5)
  # Root alignment: a global offset does not matter.
  np.testing.assert_allclose(metrics.mpjpe(pred + 5.0, gt), ref_mpjpe(pred, gt),
                             rtol=1e-4)


def test_pa_mpjpe_matches_reference(poses):
  pred, gt = poses
  got = metrics.pa_mpjpe(pred, gt)
  assert got.shape == (4,) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, ref_p_mpjpe(pred, gt), rtol=1e-4, atol=1e-6)
  assert np.all(got <= metrics.mpjpe(pred, gt) + 1e-6)
  # Unrelated pose pairs: the best orthogonal fit is often a reflection.
  rng = np.random.default_rng(5)
  a, b = rng.normal(size=(2, 16, K, 3)).astype(np.float32)
  np.testing.assert_allclose(metrics.pa_mpjpe(a, b), ref_p_mpjpe(a, b), rtol=1e-4)


def test_n_mpjpe_matches_reference(poses):
  pred, gt = poses
  np.testing.assert_allclose(metrics.n_mpjpe(pred, gt), ref_n_mpjpe(pred, gt),
                             rtol=1e-5)


def test_similarity_transform_is_invisible_to_pa_only():
  rng = np.random.default_rng(1)
  gt = rng.normal(scale=0.3, size=(K, 3))
  rot = random_rotation(rng)
  pred = 1.7 * gt @ rot.T + np.array([0.3, -1.0, 4.0])
  pred, gt = pred.astype(np.float32), gt.astype(np.float32)
  assert float(metrics.pa_mpjpe(pred, gt)) < 1e-5
  np.testing.assert_allclose(metrics.procrustes_align(pred, gt), gt, atol=1e-5)
  assert float(metrics.n_mpjpe(pred, gt)) > 0.05
  # Pure scaling is undone by N-MPJPE.
  assert float(metrics.n_mpjpe(2.5 * gt + 1.0, gt)) < 1e-5


def test_reflection_is_not_allowed():
  rng = np.random.default_rng(2)
  gt = rng.normal(scale=0.3, size=(K, 3)).astype(np.float32)
  mirrored = gt * np.array([-1.0, 1.0, 1.0], np.float32)
  got = float(metrics.pa_mpjpe(mirrored, gt))
  assert got > 0.05
  np.testing.assert_allclose(got, ref_p_mpjpe(mirrored, gt)[0], rtol=1e-4)
  aligned = np.asarray(metrics.procrustes_align(mirrored, gt))
  # The fitted map is a proper rotation (times a positive scale).
  c_in = mirrored - mirrored.mean(0)
  c_out = aligned - aligned.mean(0)
  m, *_ = np.linalg.lstsq(c_in, c_out, rcond=None)
  assert np.linalg.det(m) > 0


def test_jit_and_vmap(poses):
  pred, gt = poses
  seq_pred = pred.reshape(2, 2, K, 3)
  seq_gt = gt.reshape(2, 2, K, 3)
  for fn in (metrics.mpjpe, metrics.pa_mpjpe, metrics.n_mpjpe):
    want = np.asarray(fn(pred, gt)).reshape(2, 2)
    np.testing.assert_allclose(jax.jit(fn)(seq_pred, seq_gt), want, rtol=1e-5)
    np.testing.assert_allclose(jax.vmap(fn)(seq_pred, seq_gt), want, rtol=1e-5)
  np.testing.assert_allclose(jax.vmap(metrics.mpjve)(seq_pred, seq_gt),
                             jax.jit(metrics.mpjve)(seq_pred, seq_gt), rtol=1e-6)


def test_degenerate_inputs_are_finite():
  zeros = np.zeros((2, K, 3), np.float32)
  gt = np.random.default_rng(3).normal(size=(2, K, 3)).astype(np.float32)
  for fn in (metrics.mpjpe, metrics.pa_mpjpe, metrics.n_mpjpe, metrics.mpjve):
    for a, b in ((zeros, zeros), (zeros, gt), (gt, zeros)):
      assert np.all(np.isfinite(fn(a, b))), fn.__name__
  assert np.all(np.isfinite(metrics.procrustes_align(zeros, gt)))
  # Zero prediction: aligned to gt's centroid.
  np.testing.assert_allclose(metrics.procrustes_align(zeros, gt),
                             np.broadcast_to(gt.mean(1, keepdims=True), gt.shape),
                             atol=1e-5)


def test_half_precision_input_is_upcast(poses):
  pred, gt = poses
  got = metrics.pa_mpjpe(pred.astype(jnp.bfloat16), gt.astype(jnp.bfloat16))
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, ref_p_mpjpe(pred, gt), rtol=0.1)


def test_mpjve():
  rng = np.random.default_rng(4)
  gt = rng.normal(size=(2, 5, K, 3)).astype(np.float32)
  offset = gt + np.array([1.0, 2.0, 3.0], np.float32)
  got = metrics.mpjve(offset, gt)
  assert got.shape == (2, 4)
  np.testing.assert_allclose(got, 0.0, atol=1e-5)
  pred = gt + rng.normal(scale=0.1, size=gt.shape).astype(np.float32)
  rel_p = pred - pred[..., :1, :]
  rel_g = gt - gt[..., :1, :]
  want = np.linalg.norm(np.diff(rel_p, axis=1) - np.diff(rel_g, axis=1), axis=-1).mean(-1)
  np.testing.assert_allclose(metrics.mpjve(pred, gt), want, rtol=1e-5)


def test_masked_mean():
  values = jnp.array([[1.0, 2.0], [3.0, jnp.nan]])
  mask = jnp.array([[True, True], [True, False]])
  assert float(metrics.masked_mean(values, mask)) == pytest.approx(2.0)
  # Broadcast mask over the last axis, and an empty mask gives 0.
  assert float(metrics.masked_mean(jnp.array([[1.0, 2.0], [5.0, 7.0]]),
                                   jnp.array([[0.0], [1.0]]))) == pytest.approx(6.0)
  assert float(metrics.masked_mean(values, jnp.zeros((2, 2)))) == 0.0
  assert float(jax.jit(metrics.masked_mean)(values, mask)) == pytest.approx(2.0)


def test_action_wise_average():
  errors = [10.0, 20.0, 30.0, 40.0]
  actions = ["Walking", "Walking", "Walking", "Eating"]
  per_action, action_wise, frame_wise = metrics.action_wise_average(errors, actions)
  assert per_action == {"Eating": 40.0, "Walking": 20.0}
  assert list(per_action) == ["Eating", "Walking"]
  assert action_wise == pytest.approx(30.0)
  assert frame_wise == pytest.approx(25.0)
  with pytest.raises(ValueError):
    metrics.action_wise_average([1.0], ["a", "b"])


def test_gradients_are_finite(poses):
  # The root's error is exactly 0 after root alignment: a naive norm gives NaN.
  pred, gt = poses
  for fn in (metrics.mpjpe, metrics.n_mpjpe):
    for p in (pred, gt):
      grad = jax.jit(jax.grad(lambda x, fn=fn: fn(x, gt).sum()))(p)
      assert np.all(np.isfinite(grad)), fn.__name__
  grad = jax.jit(jax.grad(lambda x: metrics.mpjve(x, gt[None]).sum()))(pred[None])
  assert np.all(np.isfinite(grad))
