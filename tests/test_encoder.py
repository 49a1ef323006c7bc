"""The 2D pose sub-network: shapes at both sizes, soft-argmax, heatmap targets and loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posemachine.models import encoder


def test_tiny_encoder_shapes_and_range():
  enc = encoder.PoseEncoder(num_joints=17, trunk=(4, 8), feature_channels=8, stages=2,
                            stage_channels=8)
  frames = jax.random.uniform(jax.random.key(0), (3, 32, 32, 3))
  params = enc.init(jax.random.key(1), frames)
  out = enc.apply(params, frames)
  assert out["features"].shape == (3, 16, 16, 8)
  assert out["logits"].shape == out["prob"].shape == (3, 2, 16, 16, 17)
  np.testing.assert_allclose(out["prob"].sum((2, 3)), 1.0, atol=1e-5)
  assert out["joints_2d"].shape == (3, 17, 2)
  assert np.all(np.abs(out["joints_2d"]) < 1.0)


def test_cpm_sized_encoder_shapes():
  """The CPM size: 368 x 368 input, three pools -> 46 x 46 maps with 128 feature channels."""
  enc = encoder.PoseEncoder(num_joints=17, trunk=(64, 128, 256, 512), feature_channels=128,
                            stages=3, stage_channels=128, stage_kernel=7)
  frames = jax.ShapeDtypeStruct((2, 368, 368, 3), jnp.float32)
  params = jax.eval_shape(enc.init, jax.random.key(0), frames)
  out = jax.eval_shape(enc.apply, params, frames)
  assert out["features"].shape == (2, 46, 46, 128)
  assert out["prob"].shape == (2, 3, 46, 46, 17)
  assert out["joints_2d"].shape == (2, 17, 2)


@pytest.mark.parametrize("size", [16, 46])
def test_soft_argmax_recovers_a_known_peak_to_subpixel_accuracy(size):
  rng = np.random.default_rng(0)
  true = rng.uniform(-0.6, 0.6, (5, 17, 2)).astype(np.float32)  # crop coordinates
  g = (np.arange(size) + 0.5) / size * 2 - 1
  cell = 2.0 / size
  # Logits of a Gaussian peak (sigma 1.5 cells) at the true points: softmax = the peak.
  dx = g[None, None, :, None] - true[:, None, None, :, 0]       # (5, 1, w, K)
  dy = g[None, :, None, None] - true[:, None, None, :, 1]       # (5, h, 1, K)
  d2 = dx ** 2 + dy ** 2
  logits = -d2 / (2 * (1.5 * cell) ** 2)                        # (5, h, w, K), x along w
  got = encoder.soft_argmax(encoder.spatial_softmax(jnp.asarray(logits, jnp.float32)))
  err_px = np.abs(np.asarray(got) - true) / cell                 # in heatmap cells
  assert err_px.max() < 0.1, err_px.max()  # a tenth of a heatmap cell (border truncation)


def test_gaussian_targets_peak_where_the_joint_is_and_loss_is_zero_on_target():
  joints = jnp.array([[[0.1, -0.3], [0.5, 0.5]]], jnp.float32)  # (1, 2, 2)
  maps = encoder.gaussian_heatmaps(joints, 16, 1.0)
  assert maps.shape == (1, 16, 16, 2)
  np.testing.assert_allclose(maps.sum((1, 2)), 1.0, atol=1e-6)
  np.testing.assert_allclose(encoder.soft_argmax(maps), joints, atol=0.02)
  peak = np.unravel_index(np.argmax(maps[0, ..., 0]), (16, 16))   # (row y, col x)
  g = (np.arange(16) + 0.5) / 16 * 2 - 1
  assert abs(g[peak[1]] - 0.1) <= 1 / 16 and abs(g[peak[0]] + 0.3) <= 1 / 16
  w = jnp.ones((1,))
  assert float(encoder.heatmap_loss(maps, maps, w)) == 0.0
  uniform = jnp.full_like(maps, 1 / 256)
  assert float(encoder.heatmap_loss(uniform, maps, w)) > 0.1
