"""Loss terms against NumPy, masking, and a loss that decreases on a fixed batch."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from posemachine import config_defaults, losses, skeleton, train
from posemachine.models import machine

K = 17


def random_batch(rng, b=4, t=5):
  pose_3d = rng.normal(size=(b, t, K, 3)).astype(np.float32) * 0.3
  pose_3d -= pose_3d[..., :1, :]
  return {"pose_3d": pose_3d,
          # A weak-perspective view of the 3D pose plus a little noise: learnable.
          "pose_2d": (pose_3d[..., :2] * 0.2 + 0.1
                      + rng.normal(size=(b, t, K, 2)) * 0.002).astype(np.float32),
          "confidence": rng.uniform(size=(b, t, K)).astype(np.float32),
          "mask": np.ones((b, t), np.float32), "has_3d": np.ones((b,), np.float32)}


def test_normalize_2d_invariances():
  rng = np.random.default_rng(0)
  p = rng.normal(size=(3, K, 2)).astype(np.float32)
  n = losses.normalize_2d(p)
  np.testing.assert_allclose(losses.normalize_2d(p * 2.5 + [0.3, -0.7]), n, atol=1e-5)
  np.testing.assert_allclose(n[:, 0], 0, atol=1e-6)
  np.testing.assert_allclose((np.asarray(n) ** 2).sum(-1).mean(-1), 1.0, rtol=1e-4)


def test_terms_against_numpy_and_masks():
  rng = np.random.default_rng(1)
  pred = rng.normal(size=(2, 3, K, 3))
  gt = rng.normal(size=(2, 3, K, 3))
  w = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
  sq = ((pred - gt) ** 2).sum(-1).mean(-1)
  np.testing.assert_allclose(losses.pose_error(pred, gt, w), (sq * w).sum() / w.sum(), rtol=1e-5)
  eu = np.linalg.norm(pred - gt, axis=-1).mean(-1)
  np.testing.assert_allclose(losses.pose_error(pred, gt, w, "euclidean"),
                             (eu * w).sum() / w.sum(), rtol=1e-5)
  bones = lambda x: np.stack([x[..., c, :] - x[..., p, :] for c, p in skeleton.BONES], -2)
  want = (((bones(pred) - bones(gt)) ** 2).sum(-1).mean(-1) * w).sum() / w.sum()
  np.testing.assert_allclose(losses.bone_error(pred, gt, w), want, rtol=1e-5)


def test_samples_without_3d_only_get_2d_terms():
  rng = np.random.default_rng(2)
  batch = random_batch(rng)
  batch["has_3d"][:] = 0
  model = machine.PoseMachine(num_joints=K, hidden=8, projector_hidden=8)
  params = model.init(jax.random.key(0), batch["pose_2d"])["params"]
  out = model.apply({"params": params}, batch["pose_2d"], batch["confidence"])
  loss, terms = losses.total_loss(out, batch, config_defaults.get_config().loss)
  assert float(terms["3d"]) == 0 and float(terms["bone_3d"]) == 0
  assert float(terms["2d"]) > 0
  np.testing.assert_allclose(loss, terms["2d"] + terms["bone_2d"], rtol=1e-6)


def test_loss_decreases_on_fixed_batch():
  config = config_defaults.get_config()
  config.model.hidden = config.model.projector_hidden = 32
  config.train.learning_rate = 3e-3
  config.train.warmup_steps = 1
  config.train.schedule = "constant"
  config.train.num_steps = 100
  rng = np.random.default_rng(3)
  batch = random_batch(rng, b=8)
  mesh = train.create_mesh(1)
  model = machine.from_config(config.model, K)
  tx = train.make_optimizer(config.train)
  state = train.init_state(model, tx, jax.random.key(0), K, 5)
  step = train.make_train_step(model, tx, config.loss, mesh)
  first = None
  for _ in range(100):
    state, m = step(state, train.shard_batch(batch, mesh))
    first = float(m["loss"]) if first is None else first
  assert float(m["loss"]) < 0.5 * first
  assert int(state.step) == 100


def test_projection_target_is_ground_truth_2d_where_labelled():
  rng = np.random.default_rng(4)
  batch = random_batch(rng, b=2)
  batch["pose_2d_target"] = batch["pose_2d"] + rng.normal(size=batch["pose_2d"].shape) * 0.05
  batch["has_3d"] = np.array([1.0, 0.0], np.float32)
  out = {"pose_3d": batch["pose_3d"], "pose_3d_intermediate": batch["pose_3d"],
         "proj_2d": losses.normalize_2d(batch["pose_2d_target"][:1]).repeat(2, 0)}
  out["proj_2d"] = out["proj_2d"].at[1].set(losses.normalize_2d(batch["pose_2d"][1]))
  _, terms = losses.total_loss(out, batch, config_defaults.get_config().loss)
  assert float(terms["2d"]) < 1e-10  # labelled: GT 2D; unlabelled: the observed input.
