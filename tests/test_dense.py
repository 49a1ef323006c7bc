"""dense_product (a weight gradient with a materialised x^T) equals autodiff of x @ w."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posemachine.models import dense


@pytest.mark.parametrize("max_rows", [dense.MATERIALISE_MAX_ROWS, 0])  # x^T copied / not
@pytest.mark.parametrize("shape,dtype,tol", [((6, 5), jnp.float32, 1e-6),
                                             ((3, 4, 5), jnp.float32, 1e-6),
                                             ((3, 4, 5), jnp.bfloat16, 1e-2)])
def test_gradients_equal_autodiff(shape, dtype, tol, max_rows, monkeypatch):
  monkeypatch.setattr(dense, "MATERIALISE_MAX_ROWS", max_rows)
  k = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(k[0], shape).astype(dtype)
  w = jax.random.normal(k[1], (shape[-1], 7)).astype(dtype)
  ct = jax.random.normal(k[2], shape[:-1] + (7,))
  loss = lambda f: lambda x, w: jnp.sum(f(x, w).astype(jnp.float32) * ct)
  np.testing.assert_allclose(dense.dense_product(x, w).astype(np.float32),
                             (x @ w).astype(np.float32), rtol=tol)
  got = jax.grad(loss(dense.dense_product), argnums=(0, 1))(x, w)
  want = jax.grad(loss(jnp.matmul), argnums=(0, 1))(x, w)
  for g, v in zip(got, want):
    assert g.dtype == v.dtype and g.shape == v.shape
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(v, np.float32),
                               rtol=tol, atol=tol * float(np.abs(np.asarray(v, np.float32)).max()))


def test_dense_layer_equals_flax_dense():
  x = jax.random.normal(jax.random.key(1), (2, 3, 4))
  ours, theirs = dense.Dense(5), nn.Dense(5)
  params = theirs.init(jax.random.key(2), x)
  np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x), rtol=1e-6)
  f = lambda m: jax.grad(lambda p: jnp.sum(jnp.sin(m.apply(p, x))))(params)
  for g, v in zip(jax.tree.leaves(f(ours)), jax.tree.leaves(f(theirs))):
    np.testing.assert_allclose(g, v, rtol=1e-5, atol=1e-6)


def test_other_contractions_fall_back_to_lax():
  a, b = jnp.ones((2, 3, 4)), jnp.ones((2, 4, 5))
  dn = (((2,), (1,)), ((0,), (0,)))  # batched
  np.testing.assert_array_equal(dense.dot_general(a, b, dn), jax.lax.dot_general(a, b, dn))
