"""`x @ w` with a weight gradient laid out for the CPU's fast matmul path.

Autodiff of `x @ w` computes dw = x^T @ dy as a dot that contracts the leading (row) axis
of x. XLA's CPU backend runs that form through Eigen at ~140-150 GFLOP/s on the
development CPU, against ~190-210 for row-major operands through YNNPACK, when x has
few rows. `dense_product` then materialises x^T first (an optimisation barrier stops XLA
from folding the transpose back into the dot), so the weight gradient is a plain
(D, M) x (M, N) product; the copy costs one pass over x. With more rows, and on GPU/TPU
(whose BLAS reads transposed operands for free), it is plain autodiff. Same maths either
way (tests/test_dense.py).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
from jax import lax


# Up to this many rows (frames) the materialised transpose pays: x^T @ dy for a 1024-wide x
# ran at 186-206 vs 175-194 GFLOP/s (Eigen) at 1024-2048 rows on the development CPU, and
# at 161-191 vs 178-199 from 4096 rows on (the transpose of a large x costs more than the
# faster product saves).
MATERIALISE_MAX_ROWS = 2048


def _standard(x, w, dimension_numbers):
  return (tuple(dimension_numbers[0][0]) == (x.ndim - 1,)
          and tuple(dimension_numbers[0][1]) == (0,)
          and not dimension_numbers[1][0] and not dimension_numbers[1][1] and w.ndim == 2)


def _matmul(x, w):
  return lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))


def _varying_axes(x) -> frozenset:
  """Mesh axes over which x differs between devices inside `jax.shard_map` (empty outside)."""
  t = jax.typeof(x)
  manual = getattr(t, "manual_axis_type", None)
  return frozenset(manual.varying if manual is not None else getattr(t, "vma", ()))


def sum_like(cotangent, like):
  """A weight's cotangent summed over the mesh axes where it varies but the weight does not.

  Inside `jax.shard_map`, a weight replicated over the 'data' axis gets per-device
  gradient contributions; a custom VJP must add them up itself (autodiff would). Outside
  shard_map this is the identity."""
  extra = tuple(sorted(_varying_axes(cotangent) - _varying_axes(like)))
  return lax.psum(cotangent, extra) if extra else cotangent


@jax.custom_vjp
def dense_product(x, w):
  """x (..., D) @ w (D, N) -> (..., N) in the operands' dtype."""
  return _matmul(x, w)


def _fwd(x, w):
  return _matmul(x, w), (x, w)


def _bwd(res, dy):
  x, w = res
  dx = lax.dot_general(dy, w, (((dy.ndim - 1,), (1,)), ((), ())))  # dy @ w^T
  x2 = x.reshape(-1, x.shape[-1])
  dy2 = dy.reshape(-1, dy.shape[-1])
  rows = x2.shape[0]
  if (jax.default_backend() == "cpu" and isinstance(rows, int)
      and rows <= MATERIALISE_MAX_ROWS):
    dw = lax.optimization_barrier(x2.T) @ dy2
  else:
    dw = lax.dot_general(x2, dy2, (((0,), (0,)), ((), ())))
  return dx.astype(x.dtype), sum_like(dw.astype(w.dtype), w)


dense_product.defvjp(_fwd, _bwd)


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
  """A `lax.dot_general` for `flax.linen.Dense(dot_general=...)`: its (..., D) x (D, N)
  product goes through `dense_product`; any other contraction falls back to lax."""
  if (precision is None and preferred_element_type is None
      and _standard(lhs, rhs, dimension_numbers)):
    return dense_product(lhs, rhs)
  return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                         preferred_element_type=preferred_element_type)


# flax's Dense with this product.
Dense = functools.partial(nn.Dense, dot_general=dot_general)
