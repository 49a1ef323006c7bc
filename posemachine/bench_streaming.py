"""Benchmark: the causal lifter streaming one frame at a time (real-time use).

  python -m posemachine.bench_streaming [--hidden=1024,256] [--frames=500] [--warmup=50]

For each model width: `inference.make_stream` (jitted step carrying the LSTM state), one
(1, 17, 2) frame per call, `block_until_ready` after every frame (the latency a live
application sees). Reports the median per-frame latency and its 10th/90th percentiles over
`--frames` calls after `--warmup` calls (compilation excluded), frames/s = 1 / median, and
the analytic FLOPs per frame. Also the offline rate of `lift` over a whole clip for
comparison. Prints the device, versions and shapes; run it on a quiet machine.
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

from posemachine import config_defaults, inference
from posemachine.models import machine

FLAGS = flags.FLAGS
flags.DEFINE_list("hidden", ["1024", "256"], "Model widths (FC/LSTM and projector).")
flags.DEFINE_integer("frames", 500, "Timed frames per width.")
flags.DEFINE_integer("warmup", 50, "Untimed frames first (compilation and caches).")
flags.DEFINE_integer("batch", 1, "Streams lifted together per call.")
flags.DEFINE_integer("clip", 243, "Frames of the offline comparison clip.")


def flops_per_frame(hidden: int, projector_hidden: int, k: int = 17, layers: int = 2) -> int:
  """Multiply-adds x 2 of one frame: stem, LSTMs (input + recurrent), head, projector."""
  stem = (2 * k + 2 + k) * hidden
  lstm = layers * (hidden * 4 * hidden * 2)
  head = hidden * 3 * k
  p = projector_hidden
  projector = 3 * k * p + p * 3 * k + 3 * k * p + 2 * p * p + p * 2 * k
  return 2 * (stem + lstm + head + projector)


def bench_width(hidden: int, frames: int, warmup: int, batch: int, clip: int) -> dict:
  config = config_defaults.get_config()
  config.model.hidden = config.model.projector_hidden = hidden
  config.model.direction = "causal"
  model = machine.from_config(config.model, 17)
  params = model.init(jax.random.key(0), jnp.zeros((1, 4, 17, 2)))["params"]
  n_params = sum(x.size for x in jax.tree.leaves(params))
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
  return {"hidden": hidden, "params": n_params, "median_ms": med * 1e3,
          "p10_ms": p10 * 1e3, "p90_ms": p90 * 1e3, "fps": batch / med,
          "gflops": flops_per_frame(hidden, hidden) * batch / med / 1e9,
          "offline_fps": clip / statistics.median(offline)}


def main(argv):
  del argv
  dev = jax.devices()[0]
  print(f"device: {dev.platform} {dev.device_kind} x{jax.device_count()}; host "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.2f}")
  import flax  # pylint: disable=g-import-not-at-top
  print(f"jax {jax.__version__}, jaxlib {jax.lib.__version__}, flax {flax.__version__}, "
        f"numpy {np.__version__}, python {platform.python_version()}")
  print(f"streaming: make_stream step, frame ({FLAGS.batch}, 17, 2) -> ({FLAGS.batch}, 17, 3), "
        f"float32, {FLAGS.frames} timed frames after {FLAGS.warmup} warm-up, "
        f"block_until_ready per frame; offline: lift (1, {FLAGS.clip}, 17, 2) per call")
  print(f"{'hidden':>6} {'params':>11} {'median ms':>10} {'p10 ms':>8} {'p90 ms':>8} "
        f"{'frames/s':>9} {'GFLOP/s':>8} {'offline frames/s':>17}")
  for h in (int(v) for v in FLAGS.hidden):
    r = bench_width(h, FLAGS.frames, FLAGS.warmup, FLAGS.batch, FLAGS.clip)
    print(f"{r['hidden']:>6} {r['params']:>11,} {r['median_ms']:>10.3f} {r['p10_ms']:>8.3f} "
          f"{r['p90_ms']:>8.3f} {r['fps']:>9.0f} {r['gflops']:>8.2f} {r['offline_fps']:>17.0f}",
          flush=True)


if __name__ == "__main__":
  app.run(main)
