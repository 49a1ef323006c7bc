"""The pose machine's shapes, causality, masking, streaming and dtype options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posemachine.models import machine

K = 17


def tiny(direction="bidirectional", **kw):
  return machine.PoseMachine(num_joints=K, hidden=16, projector_hidden=16,
                             direction=direction, **kw)


def inputs(b=2, t=6, seed=0):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=(b, t, K, 2)) * 0.3, jnp.float32),
          jnp.asarray(rng.uniform(size=(b, t, K)), jnp.float32))


def test_shapes_and_root():
  model = tiny()
  x, conf = inputs()
  params = model.init(jax.random.key(0), x)["params"]
  out = model.apply({"params": params}, x, conf)
  assert out["pose_3d_intermediate"].shape == (2, 6, K, 3)
  assert out["pose_3d"].shape == (2, 6, K, 3)
  assert out["proj_2d"].shape == (2, 6, K, 2)
  np.testing.assert_array_equal(out["pose_3d"][..., 0, :], 0)
  assert set(params["projector"]) == {"regression", "projection"}
  assert set(params["transformer"]) == {"stem", "lstm_0", "lstm_1", "head"}
  assert all(np.isfinite(a).all() for a in jax.tree.leaves(out))


def test_wrong_joint_count_raises():
  model = tiny()
  with pytest.raises(ValueError, match=r"expected shape \(B, T, 17, 2\)"):
    model.init(jax.random.key(0), jnp.zeros((1, 4, 16, 2)))


@pytest.mark.parametrize("direction,future_matters", [("causal", False),
                                                      ("bidirectional", True)])
def test_causality(direction, future_matters):
  model = tiny(direction)
  x, conf = inputs()
  params = model.init(jax.random.key(1), x)["params"]
  out = model.apply({"params": params}, x, conf)["pose_3d"]
  x2 = x.at[:, 4:].add(0.5)
  out2 = model.apply({"params": params}, x2, conf)["pose_3d"]
  changed = np.abs(np.asarray(out2[:, :4] - out[:, :4])).max()
  assert (changed > 1e-4) == future_matters


def test_padding_mask_matches_unpadded_sequence():
  """Edge-padded, masked frames do not change the real frames (reverse LSTM included)."""
  model = tiny("bidirectional")
  x, conf = inputs(b=1, t=8)
  params = model.init(jax.random.key(2), x)["params"]
  short = model.apply({"params": params}, x[:, :5], conf[:, :5])["pose_3d"]
  padded_x = jnp.concatenate([x[:, :5], jnp.repeat(x[:, 4:5], 3, axis=1) + 1.0], 1)
  mask = jnp.asarray([[1, 1, 1, 1, 1, 0, 0, 0]], jnp.float32)
  long = model.apply({"params": params}, padded_x, conf, mask)["pose_3d"]
  np.testing.assert_allclose(long[:, :5], short, atol=1e-5)


def test_causal_streaming_equals_offline():
  model = tiny("causal")
  x, conf = inputs(b=2, t=5)
  params = model.init(jax.random.key(3), x)["params"]
  offline = model.apply({"params": params}, x, conf)["pose_3d"]
  states, frames = None, []
  for t in range(5):
    out = model.apply({"params": params}, x[:, t:t + 1], conf[:, t:t + 1],
                      initial_states=states)
    states = out["lstm_states"]
    frames.append(out["pose_3d"])
  np.testing.assert_allclose(jnp.concatenate(frames, 1), offline, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params():
  model = tiny(dtype="bfloat16")
  x, conf = inputs()
  params = model.init(jax.random.key(4), x)["params"]
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  out = model.apply({"params": params}, x, conf)
  ref = tiny().apply({"params": params}, x, conf)
  assert out["pose_3d"].dtype == jnp.float32
  np.testing.assert_allclose(out["pose_3d"], ref["pose_3d"], atol=0.05)
