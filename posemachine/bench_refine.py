"""Benchmark: batched test-time correction vs the reference's one-sample-at-a-time loop.

python -m posemachine.bench_refine [--samples=4096] [--hidden=256] [--window=16] [--chunk=0]

Both sides run the same correction (refine.refine_sample's math: frozen projection half,
Adam on a fresh copy of the regression half, `steps` steps; the rules' thresholds are set so
that both do every step). The baseline is the reference's procedure: for each sample, reset the
weights, then one jitted gradient + Adam step per Python iteration, with the convergence
rule checked on the host after each step and the discard rule at the end (as a Python loop
must; thresholds set so that no sample stops early or is discarded). A second baseline runs
the whole single-sample correction as one jitted call per sample. Warm-up is excluded;
each figure is the median of --repeats runs. Prints the device, versions and shapes.
"""

from __future__ import annotations

import functools
import json
import platform
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from posemachine import config_defaults, host_memory, refine
from posemachine.models import machine, projector

FLAGS = flags.FLAGS
flags.DEFINE_integer("samples", 4096, "Number of samples (windows) to correct.")
flags.DEFINE_integer("hidden", 256, "Projector width (the paper: 1024).")
flags.DEFINE_integer("window", 16, "Frames per sample.")
flags.DEFINE_integer("steps", 2, "Adam steps per sample (reference: 2).")
flags.DEFINE_integer("chunk", 64, "Samples per vmapped chunk (0: all at once).")
flags.DEFINE_integer("repeats", 3, "Timed repetitions (median reported).")
flags.DEFINE_integer("loop_samples", 0, "Samples timed in the loop baselines (0: all).")
flags.DEFINE_string("json_out", "", "Optional path for the results as JSON.")

K = 17


def _median_time(fn, repeats):
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return float(np.median(times)), float(np.min(times)), float(np.max(times))


def main(argv):
  del argv
  host_memory.keep_freed_memory()  # before JAX starts its backend
  config = config_defaults.get_config()
  config.model.hidden = config.model.projector_hidden = FLAGS.hidden
  r = config.refine
  r.steps, r.chunk, r.converge_mm, r.discard_mm = FLAGS.steps, FLAGS.chunk, -1.0, 1e9
  n, t = FLAGS.samples, FLAGS.window
  rng = np.random.default_rng(0)
  pose_2d = jnp.asarray(rng.normal(size=(n, t, K, 2)) * 0.2, jnp.float32)
  mask = jnp.ones((n, t), jnp.float32)
  model = machine.from_config(config.model, K)
  params = model.init(jax.random.key(0), pose_2d[:1])["params"]
  inter = jax.jit(model.apply)({"params": params}, pose_2d[:256])["pose_3d_intermediate"]
  inter = jnp.tile(inter, (n // 256 + 1, 1, 1, 1))[:n]
  pp = params["projector"]

  batched = jax.jit(refine.make_refine(config.model, r, K))
  t0 = time.perf_counter()
  jax.block_until_ready(batched(pp, inter, pose_2d, mask))
  compile_s = time.perf_counter() - t0
  b_med, b_min, b_max = _median_time(lambda: batched(pp, inter, pose_2d, mask), FLAGS.repeats)

  # Baseline 1: the reference loop, one jitted Adam step per Python iteration.
  regression = projector.Regression(K, FLAGS.hidden, True)
  projection = projector.Projection(K, FLAGS.hidden)
  tx = optax.adam(r.learning_rate)
  from posemachine import losses  # pylint: disable=g-import-not-at-top
  obj = functools.partial(refine.objective, regression=regression, projection=projection)

  @jax.jit
  def one_step(reg, opt_state, x, target, m):
    g = jax.grad(lambda p: obj(p, pp["projection"], inter=x, target_2d=target, mask=m))(reg)
    updates, opt_state = tx.update(g, opt_state, reg)
    return optax.apply_updates(reg, updates), opt_state

  final_pose = jax.jit(lambda reg, x: regression.apply({"params": reg}, x))
  norm2d = jax.jit(losses.normalize_2d)
  m_loop = FLAGS.loop_samples or n

  torso = jnp.asarray(refine.torso_joints(K))

  @jax.jit
  def moved_mm(a, b, m):  # mean joint displacement over real frames (the convergence rule).
    return (jnp.linalg.norm(a - b, axis=-1).mean(-1) * m).sum() / jnp.maximum(m.sum(), 1) * 1e3

  @jax.jit
  def torso_mm(a, b, m):  # largest torso-joint displacement (the discard rule).
    return (jnp.linalg.norm(a[:, torso] - b[:, torso], axis=-1).max(-1) * m).max() * 1e3

  def reference_loop():
    # As the reference does it: per sample, fresh weights and Adam state, one step per
    # Python iteration, the convergence rule read on the host after every step and the
    # discard rule at the end (thresholds set so that every step runs, like the batched side).
    out = []
    for i in range(m_loop):
      reg, opt_state = pp["regression"], tx.init(pp["regression"])  # fresh weights
      target = norm2d(pose_2d[i])
      pose0 = pose = final_pose(reg, inter[i])
      for _ in range(r.steps):
        reg, opt_state = one_step(reg, opt_state, inter[i], target, mask[i])
        new_pose = final_pose(reg, inter[i])
        if float(moved_mm(new_pose, pose, mask[i])) < r.converge_mm:
          break
        pose = new_pose
      if float(torso_mm(pose, pose0, mask[i])) > r.discard_mm:
        pose = pose0
      out.append(pose)
    return out[-1]

  single = jax.jit(functools.partial(refine.refine_sample, model_config=config.model,
                                     refine_config=r, num_joints=K))

  def jitted_loop():
    out = None
    for i in range(m_loop):
      out = single(pp, inter[i], pose_2d[i], mask[i])["pose_3d"]
    return out

  reference_loop(), jitted_loop()  # warm-up: compile
  ref_med, ref_min, ref_max = _median_time(reference_loop, FLAGS.repeats)
  jl_med, jl_min, jl_max = _median_time(jitted_loop, FLAGS.repeats)
  # Same maths: the loop's last sample equals the batched result's.
  same = np.allclose(reference_loop(), batched(pp, inter, pose_2d, mask)["pose_3d"][m_loop - 1],
                     atol=1e-5)

  per = lambda total, count: total / count * 1e6
  res = {
      "device": str(jax.devices()[0]), "platform": platform.processor() or platform.machine(),
      "jax": jax.__version__, "samples": n, "window": t, "joints": K, "hidden": FLAGS.hidden,
      "steps": r.steps, "chunk": r.chunk, "loop_samples": m_loop,
      "batched_s": b_med, "batched_min_max_s": [b_min, b_max], "batched_compile_s": compile_s,
      "batched_us_per_sample": per(b_med, n),
      "reference_loop_us_per_sample": per(ref_med, m_loop),
      "reference_loop_min_max_s": [ref_min, ref_max],
      "jitted_loop_us_per_sample": per(jl_med, m_loop),
      "jitted_loop_min_max_s": [jl_min, jl_max],
      "speedup_vs_reference_loop": per(ref_med, m_loop) / per(b_med, n),
      "speedup_vs_jitted_loop": per(jl_med, m_loop) / per(b_med, n),
      "loop_matches_batched": bool(same), "host_malloc_kept": host_memory.active(),
  }
  print(json.dumps(res, indent=2))
  print(f"\nBatched correction of {n} samples ({t} frames, width {FLAGS.hidden}, {r.steps} steps) "
        f"on {res['device']}: {b_med * 1e3:.1f} ms ({res['batched_us_per_sample']:.1f} us/sample); "
        f"reference loop {res['reference_loop_us_per_sample']:.0f} us/sample "
        f"({res['speedup_vs_reference_loop']:.0f}x), jitted per-sample loop "
        f"{res['jitted_loop_us_per_sample']:.0f} us/sample ({res['speedup_vs_jitted_loop']:.0f}x).")
  if FLAGS.json_out:
    from posemachine import io_utils  # pylint: disable=g-import-not-at-top
    io_utils.atomic_write_json(FLAGS.json_out, res)


if __name__ == "__main__":
  app.run(main)
