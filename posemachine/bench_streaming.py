"""Benchmark: the causal lifter streaming one frame at a time (real-time use).

  python -m posemachine.bench_streaming [--hidden=1024,256] [--batch=1,64]
      [--weights=float32,bfloat16] [--frames=500] [--warmup=50]

For each model width: `inference.make_stream` (jitted step carrying the LSTM state), one
(1, 17, 2) frame per call, `block_until_ready` after every frame (the latency a live
application sees). Reports the median per-frame latency and its 10th/90th percentiles over
`--frames` calls after `--warmup` calls (compilation excluded), frames/s = 1 / median, and
the analytic FLOPs per frame. Also the offline rate of `lift` over a whole clip for
comparison. Prints the device, versions and shapes; run it on a quiet machine.

The physical limit of one stream: every frame reads all weights once (about 80 MB in
float32 at width 1024, far more than the caches), so latency >= weight bytes / memory
bandwidth. The bandwidth is measured in the same run (`memory_bandwidth`: a jitted sum over
an array much larger than the caches, bytes read / time) and each row reports the limit and
latency / limit. `--weights=bfloat16` stores the weights in bfloat16 (compute in bfloat16,
LSTM cell state float32), halving the bytes and the limit; int8 would quarter them (not
implemented: XLA's CPU path has no int8 x float matmul that reads int8 weights directly).
"""

from __future__ import annotations

import os
import platform
import statistics
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from posemachine import config_defaults, host_memory, inference
from posemachine.models import machine

FLAGS = flags.FLAGS
flags.DEFINE_list("hidden", ["1024", "256"], "Model widths (FC/LSTM and projector).")
flags.DEFINE_integer("frames", 500, "Timed frames per width.")
flags.DEFINE_integer("warmup", 50, "Untimed frames first (compilation and caches).")
flags.DEFINE_list("batch", ["1", "64"], "Streams lifted together per call (one row each).")
flags.DEFINE_list("weights", ["float32", "bfloat16"], "Stored weight dtypes (one row each).")
flags.DEFINE_integer("bandwidth_mb", 1024, "Array size of the memory bandwidth probe (MB).")
flags.DEFINE_integer("clip", 243, "Frames of the offline comparison clip.")


def flops_per_frame(hidden: int, projector_hidden: int, k: int = 17, layers: int = 2) -> int:
  """Multiply-adds x 2 of one frame: stem, LSTMs (input + recurrent), head, projector."""
  stem = (2 * k + 2 + k) * hidden
  lstm = layers * (hidden * 4 * hidden * 2)
  head = hidden * 3 * k
  p = projector_hidden
  projector = 3 * k * p + p * 3 * k + 3 * k * p + 2 * p * p + p * 2 * k
  return 2 * (stem + lstm + head + projector)


def memory_bandwidth(megabytes: int = 1024, reps: int = 7) -> float:
  """Measured read bandwidth (bytes/s): median time of a jitted sum over a float32 array."""
  x = jnp.ones((megabytes * 2 ** 20 // 4,), jnp.float32)
  f = jax.jit(jnp.sum)
  f(x).block_until_ready()
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    f(x).block_until_ready()
    times.append(time.perf_counter() - t0)
  return x.nbytes / statistics.median(times)


def bench_width(hidden: int, frames: int, warmup: int, batch: int, clip: int,
                weights: str = "float32", bandwidth: float | None = None) -> dict:
  config = config_defaults.get_config()
  config.model.hidden = config.model.projector_hidden = hidden
  config.model.direction = "causal"
  config.model.dtype = weights
  model = machine.from_config(config.model, 17)
  params = model.init(jax.random.key(0), jnp.zeros((1, 4, 17, 2)))["params"]
  params = jax.tree.map(lambda p: p.astype(weights), params)  # stored weight dtype
  n_params = sum(x.size for x in jax.tree.leaves(params))
  weight_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
  rng = np.random.default_rng(0)
  xs = jnp.asarray(rng.normal(0, 0.2, (warmup + frames, batch, 17, 2)), jnp.float32)
  cs = jnp.ones((batch, 17), jnp.float32)
  stream = inference.make_stream(config)
  state = stream.init_state(batch)
  times = []
  for i in range(warmup + frames):
    t0 = time.perf_counter()
    state, pose = stream.step(params, state, xs[i], cs)
    pose.block_until_ready()
    if i >= warmup:
      times.append(time.perf_counter() - t0)
  med = statistics.median(times)
  p10, p90 = np.percentile(times, [10, 90])
  # Offline: the whole clip in one call.
  lift = inference.make_lift(config)
  x = jnp.asarray(rng.normal(0, 0.2, (1, clip, 17, 2)), jnp.float32)
  lift(params, x).block_until_ready()
  offline = []
  for _ in range(5):
    t0 = time.perf_counter()
    lift(params, x).block_until_ready()
    offline.append(time.perf_counter() - t0)
  limit = weight_bytes / bandwidth if bandwidth else float("nan")
  return {"hidden": hidden, "batch": batch, "weights": weights, "weight_mb": weight_bytes / 1e6,
          "limit_ms": limit * 1e3, "vs_limit": med / limit,
          "params": n_params, "median_ms": med * 1e3,
          "p10_ms": p10 * 1e3, "p90_ms": p90 * 1e3, "fps": batch / med,
          "gflops": flops_per_frame(hidden, hidden) * batch / med / 1e9,
          "offline_fps": clip / statistics.median(offline)}


def main(argv):
  del argv
  host_memory.keep_freed_memory()  # before JAX starts its backend
  dev = jax.devices()[0]
  print(f"device: {dev.platform} {dev.device_kind} x{jax.device_count()}; host "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.2f}")
  import flax  # pylint: disable=g-import-not-at-top
  print(f"jax {jax.__version__}, jaxlib {jax.lib.__version__}, flax {flax.__version__}, "
        f"numpy {np.__version__}, python {platform.python_version()}")
  bw = memory_bandwidth(FLAGS.bandwidth_mb)
  print(f"memory read bandwidth (jitted sum over {FLAGS.bandwidth_mb} MB): {bw / 1e9:.1f} GB/s")
  print(f"streaming: make_stream step, frames (B, 17, 2) -> (B, 17, 3) for B in {FLAGS.batch}, "
        f"{FLAGS.frames} timed frames after {FLAGS.warmup} warm-up, block_until_ready per "
        f"frame; limit = weight bytes / bandwidth; offline: lift (1, {FLAGS.clip}, 17, 2) per call")
  print(f"{'hidden':>6} {'weights':>8} {'B':>3} {'params':>11} {'MB':>6} {'limit ms':>9} "
        f"{'median ms':>10} {'p10 ms':>8} {'p90 ms':>8} {'x limit':>8} {'frames/s':>9} "
        f"{'GFLOP/s':>8} {'offline frames/s':>17}")
  for h in (int(v) for v in FLAGS.hidden):
    for w in FLAGS.weights:
      for b in (int(v) for v in FLAGS.batch):
        r = bench_width(h, FLAGS.frames, FLAGS.warmup, b, FLAGS.clip, w, bw)
        print(f"{r['hidden']:>6} {w:>8} {b:>3} {r['params']:>11,} {r['weight_mb']:>6.1f} "
              f"{r['limit_ms']:>9.3f} {r['median_ms']:>10.3f} {r['p10_ms']:>8.3f} "
              f"{r['p90_ms']:>8.3f} {r['vs_limit']:>8.2f} {r['fps']:>9.0f} {r['gflops']:>8.2f} "
              f"{r['offline_fps']:>17.0f}", flush=True)


if __name__ == "__main__":
  app.run(main)
