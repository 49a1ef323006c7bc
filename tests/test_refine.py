"""Test-time self-correction: frozen projection half, determinism, objective, rules."""

import jax
import jax.numpy as jnp
import numpy as np

from posemachine import config_defaults, losses, refine
from posemachine.models import machine, projector

K = 17


def setup(b=3, t=4, seed=0, **refine_overrides):
  config = config_defaults.get_config()
  config.model.hidden = config.model.projector_hidden = 16
  for k, v in refine_overrides.items():
    config.refine[k] = v
  model = machine.from_config(config.model, K)
  rng = np.random.default_rng(seed)
  pose_2d = jnp.asarray(rng.normal(size=(b, t, K, 2)) * 0.2, jnp.float32)
  params = model.init(jax.random.key(seed), pose_2d)["params"]
  # Perturb the regression half's zero-initialised output layer so it is not trivial.
  fc2 = params["projector"]["regression"]["fc2"]
  fc2["kernel"] = jnp.asarray(rng.normal(size=fc2["kernel"].shape) * 0.01, jnp.float32)
  out = model.apply({"params": params}, pose_2d)
  mask = jnp.ones((b, t)).at[0, -1].set(0)
  fn = jax.jit(refine.make_refine(config.model, config.refine, K))
  return config, params, out, pose_2d, mask, fn


def test_reduces_objective_and_projection_half_is_frozen():
  config, params, out, pose_2d, mask, fn = setup(steps=5, learning_rate=1e-3, converge_mm=0.0,
                                                 discard_mm=1e9)
  res = fn(params["projector"], out["pose_3d_intermediate"], pose_2d, mask)
  assert res["pose_3d"].shape == (3, 4, K, 3)
  assert np.all(np.asarray(res["objective_after"]) < np.asarray(res["objective_before"]))
  assert np.all(np.asarray(res["steps"]) == 5) and not np.any(res["discarded"])
  # Before = the model's own corrected output.
  np.testing.assert_allclose(res["pose_3d_before"], out["pose_3d"], atol=1e-5)
  # The reported objective is reproduced with the ORIGINAL projection half: it was frozen.
  proj = projector.Projection(K, 16).apply(
      {"params": params["projector"]["projection"]}, res["pose_3d"][1])
  target = losses.normalize_2d(pose_2d[1])
  w = mask[1][None]
  want = (losses.pose_error(proj[None], target[None], w)
          + losses.bone_error(proj[None], target[None], w))
  np.testing.assert_allclose(res["objective_after"][1], want, rtol=1e-4)


def test_deterministic_and_independent_of_batch():
  _, params, out, pose_2d, mask, fn = setup(steps=3, learning_rate=1e-3, converge_mm=0.0)
  a = fn(params["projector"], out["pose_3d_intermediate"], pose_2d, mask)
  b = fn(params["projector"], out["pose_3d_intermediate"], pose_2d, mask)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  # Sample 2 alone gives the same result as inside the batch.
  c = fn(params["projector"], out["pose_3d_intermediate"][2:], pose_2d[2:], mask[2:])
  np.testing.assert_allclose(c["pose_3d"][0], a["pose_3d"][2], atol=1e-6)


def test_chunked_equals_vmapped():
  config, params, out, pose_2d, mask, fn = setup(steps=2, learning_rate=1e-3, converge_mm=0.0)
  config.refine.chunk = 2
  chunked = jax.jit(refine.make_refine(config.model, config.refine, K))
  a = fn(params["projector"], out["pose_3d_intermediate"], pose_2d, mask)
  b = chunked(params["projector"], out["pose_3d_intermediate"], pose_2d, mask)
  np.testing.assert_allclose(a["pose_3d"], b["pose_3d"], atol=1e-6)


def test_discard_rule_rejects_large_torso_moves():
  _, params, out, pose_2d, mask, fn = setup(steps=5, learning_rate=1e-2, converge_mm=0.0,
                                            discard_mm=0.01)
  res = fn(params["projector"], out["pose_3d_intermediate"], pose_2d, mask)
  assert np.all(res["discarded"])
  np.testing.assert_array_equal(res["pose_3d"], res["pose_3d_before"])
  np.testing.assert_array_equal(res["objective_after"], res["objective_before"])


def test_convergence_rule_stops_early():
  _, params, out, pose_2d, mask, fn = setup(steps=10, learning_rate=1e-6, converge_mm=5.0)
  res = fn(params["projector"], out["pose_3d_intermediate"], pose_2d, mask)
  assert np.all(np.asarray(res["steps"]) == 1)  # the first step moves < 5 mm: stop.


def test_evaluator_reports_before_and_after_correction():
  from posemachine import evaluate, train  # pylint: disable=g-import-not-at-top
  config, params, out, pose_2d, mask, _ = setup(steps=3, learning_rate=1e-3, converge_mm=0.0,
                                                discard_mm=1e9, enabled=True)
  model = machine.from_config(config.model, K)
  mesh = train.create_mesh(1)
  batch = {"pose_2d": pose_2d, "confidence": jnp.ones(pose_2d.shape[:-1]), "mask": mask,
           "pose_3d": out["pose_3d"] * 0.9}
  pred, errs = evaluate.make_eval_step(model, mesh, config.refine)(params, batch)
  plain_pred, plain = evaluate.make_eval_step(model, mesh)(params, batch)
  np.testing.assert_allclose(errs["mpjpe_unrefined"], plain["mpjpe"], atol=1e-4)
  assert not np.allclose(pred, plain_pred)
  assert float(errs["refine_steps"].max()) == 3
  # The refined 2D consistency (proj_2d) is lower than before on every real frame.
  real = np.asarray(mask) > 0
  assert np.mean(np.asarray(errs["proj_2d"])[real]) < np.mean(np.asarray(plain["proj_2d"])[real])


def test_evaluator_on_eight_devices_matches_one_and_refines_each_row_once():
  """With the batch split over 8 devices, each device corrects its own rows (chunked):
  same poses, steps and discards as one device, and no gather of the batch in the HLO."""
  from posemachine import evaluate, train  # pylint: disable=g-import-not-at-top
  config, params, out, pose_2d, mask, _ = setup(b=16, steps=2, learning_rate=1e-3,
                                                converge_mm=0.0, discard_mm=1e9,
                                                enabled=True, chunk=1)
  model = machine.from_config(config.model, K)
  batch = {"pose_2d": pose_2d, "confidence": jnp.ones(pose_2d.shape[:-1]), "mask": mask,
           "pose_3d": out["pose_3d"] * 0.9}
  results = []
  for n in (1, 8):
    step = evaluate.make_eval_step(model, train.create_mesh(n), config.refine)
    results.append(jax.device_get(step(params, batch)))
    if n == 8:
      hlo = step.lower(params, batch).compile().as_text()
      assert "all-gather" not in hlo
  (p1, e1), (p8, e8) = results
  np.testing.assert_allclose(p8, p1, atol=1e-6)
  for k in ("refine_steps", "refine_discarded", "mpjpe", "proj_2d"):
    np.testing.assert_allclose(e8[k], e1[k], atol=1e-4, err_msg=k)


def test_weak_perspective_objective_decreases():
  _, params, out, pose_2d, mask, fn = setup(steps=5, learning_rate=1e-3, converge_mm=0.0,
                                            discard_mm=1e9, projection="weak_perspective")
  res = fn(params["projector"], out["pose_3d_intermediate"], pose_2d, mask)
  assert np.all(np.asarray(res["objective_after"]) < np.asarray(res["objective_before"]))
  pose = res["pose_3d"][1]
  target = losses.normalize_2d(pose_2d[1])
  w = mask[1][None]
  weak = losses.normalize_2d(pose[..., :2])
  want = (losses.pose_error(weak[None], target[None], w)
          + losses.bone_error(weak[None], target[None], w))
  np.testing.assert_allclose(res["objective_after"][1], want, rtol=1e-4)


def test_smooth_2d_is_a_masked_moving_average():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 9, K, 2)).astype(np.float32)
  mask = np.ones((2, 9), np.float32)
  mask[1, 6:] = 0  # padded tail
  got = np.asarray(refine.smooth_2d(jnp.asarray(x), jnp.asarray(mask), 5))
  want = x.copy()
  for b in range(2):
    for t in range(9):
      if not mask[b, t]:
        continue
      ts = [u for u in range(t - 2, t + 3) if 0 <= u < 9 and mask[b, u]]
      want[b, t] = x[b, ts].mean(0)
  np.testing.assert_allclose(got, want, atol=1e-5)
  np.testing.assert_array_equal(refine.smooth_2d(jnp.asarray(x), jnp.asarray(mask), 1), x)


def test_evaluator_fits_the_chosen_2d_target():
  from posemachine import evaluate, train  # pylint: disable=g-import-not-at-top
  config, params, out, pose_2d, mask, _ = setup(steps=3, learning_rate=1e-3, converge_mm=0.0,
                                                discard_mm=1e9, enabled=True)
  model = machine.from_config(config.model, K)
  mesh = train.create_mesh(1)
  clean = out["proj_2d"]  # a 2D pose different from the observed one
  batch = {"pose_2d": pose_2d, "confidence": jnp.ones(pose_2d.shape[:-1]), "mask": mask,
           "pose_3d": out["pose_3d"], "pose_2d_target": clean}
  preds = {}
  for target in ("observed", "ground_truth", "smoothed"):
    config.refine.target = target
    preds[target] = np.asarray(evaluate.make_eval_step(model, mesh, config.refine)(params, batch)[0])
  # The same as refining directly against that 2D.
  fn = jax.jit(refine.make_refine(config.model, config.refine, K))
  inter = model.apply({"params": params}, pose_2d, batch["confidence"], mask)
  direct = fn(params["projector"], inter["pose_3d_intermediate"], clean, mask)["pose_3d"]
  np.testing.assert_allclose(preds["ground_truth"], direct, atol=1e-5)
  assert not np.allclose(preds["observed"], preds["ground_truth"])
  assert not np.allclose(preds["observed"], preds["smoothed"])


def test_ground_truth_target_needs_clean_2d():
  import pytest  # pylint: disable=g-import-not-at-top
  from posemachine import errors  # pylint: disable=g-import-not-at-top
  from posemachine.data.sequences import Sequences  # pylint: disable=g-import-not-at-top
  config = config_defaults.get_config()
  config.refine.enabled, config.refine.target = True, "ground_truth"
  seqs = Sequences.from_list([{"pose_3d": np.zeros((3, K, 3)), "pose_2d": np.zeros((3, K, 2)),
                               "confidence": np.ones((3, K)), "subject": "S9",
                               "action": "walk", "camera": "0"}], "detections.npz")
  with pytest.raises(errors.ConfigError, match="detections.npz.*observed"):
    refine.check_target(config.refine, seqs)
  config.refine.target = "smoothed"
  refine.check_target(config.refine, seqs)


def test_refine_study_cli(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import tiny_config  # pylint: disable=g-import-not-at-top
  run = tmp_path / "run"
  base = [f"--config={tiny_config.PATH}", f"--workdir={run}"]
  subprocess.run([sys.executable, "-m", "posemachine.main", *base,
                  *tiny_config.overrides(num_steps=4)], check=True, capture_output=True)
  recorded = (run / "config.json").read_text()
  subprocess.run([sys.executable, "-m", "posemachine.refine_study", *base,
                  "--settings=reference,oracle", "--split=val"], check=True,
                 capture_output=True)
  # Evaluating with another (compatible) config leaves the training record alone.
  assert (run / "config.json").read_text() == recorded
  res = json.loads((run / "refine_study" / "refine_study.json").read_text())
  assert [r["setting"] for r in res["rows"]] == ["none", "reference", "oracle"]
  for r in res["rows"]:
    assert np.isfinite([r["mpjpe"], r["plane_mm"], r["depth_mm"]]).all()
    # MPJPE is at most plane + depth error (triangle inequality, frame-wise vs action-wise
    # averaging aside) and at least each of them.
    assert r["plane_mm"] > 0 and r["depth_mm"] > 0
  assert (run / "refine_study" / "refine_study.png").stat().st_size > 1000
  assert "oracle" in (run / "refine_study" / "refine_study.md").read_text()


def test_keep_depth_changes_only_x_and_y():
  _, params, out, pose_2d, mask, fn = setup(steps=4, learning_rate=1e-3, converge_mm=0.0,
                                            discard_mm=1e9, projection="weak_perspective",
                                            keep_depth=True)
  res = fn(params["projector"], out["pose_3d_intermediate"], pose_2d, mask)
  before, after = np.asarray(res["pose_3d_before"]), np.asarray(res["pose_3d"])
  np.testing.assert_array_equal(after[..., 2], before[..., 2])
  assert np.abs(after[..., :2] - before[..., :2]).max() > 1e-4
  assert np.all(np.asarray(res["objective_after"]) < np.asarray(res["objective_before"]))


def _reference_correction(config, params, inter, pose_2d, mask):
  """The paper's procedure written plainly, one sample at a time in Python (independent of
  refine_sample's loop structure): per step an Adam update, then the rules."""
  import optax  # pylint: disable=g-import-not-at-top
  r = config.refine
  regression = projector.Regression(K, 16, True)
  proj_params = params["projector"]["projection"]
  kw = dict(proj_params=proj_params, projection=projector.Projection(K, 16),
            w_2d=r.w_2d, w_bone_2d=r.w_bone_2d)
  tx = optax.adam(r.learning_rate)
  out = []
  for i in range(inter.shape[0]):
    target, m = losses.normalize_2d(pose_2d[i]), mask[i]
    apply = lambda p, i=i: regression.apply({"params": p}, inter[i])
    obj = lambda p, i=i, target=target, m=m: refine.objective(
        p, regression=regression, inter=inter[i], target_2d=target, mask=m, **kw)
    reg = params["projector"]["regression"]
    opt_state, pose0 = tx.init(reg), apply(reg)
    pose, steps, moves = pose0, 0, []
    for _ in range(r.steps):
      updates, opt_state = tx.update(jax.grad(obj)(reg), opt_state, reg)
      reg = optax.apply_updates(reg, updates)
      new = apply(reg)
      moved = float((jnp.linalg.norm(new - pose, axis=-1).mean(-1) * m).sum()
                    / max(float(m.sum()), 1.0) * 1000)
      pose, steps = new, steps + 1
      moves.append(moved)
      if moved < r.converge_mm:
        break
    torso = jnp.asarray(refine.torso_joints(K))
    move = float((jnp.linalg.norm(pose[:, torso] - pose0[:, torso], axis=-1).max(-1) * m).max())
    discarded = move * 1000 > r.discard_mm
    out.append({"pose_3d": pose0 if discarded else pose, "steps": steps,
                "discarded": discarded, "moves": moves,
                "objective_before": float(refine.pose_objective(pose0, target_2d=target,
                                                                mask=m, **kw))})
  return out


def test_matches_a_plain_per_sample_loop_for_any_number_of_steps():
  """Steps 0, 1, 2 and 5, samples stopping at different steps, vmapped and chunked."""
  config, params, out, pose_2d, mask, _ = setup(b=6, t=3, seed=4, steps=5, learning_rate=3e-3,
                                                converge_mm=-1.0, discard_mm=1e9)
  inter = out["pose_3d_intermediate"]
  # A convergence threshold that stops some samples early and lets others run on.
  first = [s["moves"][0] for s in _reference_correction(config, params, inter, pose_2d, mask)]
  converge = float(np.median(first))
  for steps, chunk in ((0, 0), (1, 0), (2, 0), (5, 0), (5, 4)):
    config.refine.steps, config.refine.chunk, config.refine.converge_mm = steps, chunk, converge
    want = _reference_correction(config, params, inter, pose_2d, mask)
    got = jax.jit(refine.make_refine(config.model, config.refine, K))(
        params["projector"], inter, pose_2d, mask)
    np.testing.assert_array_equal(got["steps"], [w["steps"] for w in want])
    np.testing.assert_array_equal(got["discarded"], [w["discarded"] for w in want])
    np.testing.assert_allclose(got["pose_3d"], np.stack([w["pose_3d"] for w in want]),
                               atol=1e-5)
    np.testing.assert_allclose(got["objective_before"],
                               [w["objective_before"] for w in want], rtol=1e-5)
    if steps == 5:
      assert len(set(w["steps"] for w in want)) > 1, [w["steps"] for w in want]
