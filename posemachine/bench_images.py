"""Benchmark: the image input pipeline and the staged train steps of the machine from pixels.

  python -m posemachine.bench_images [--config=configs/synthetic_images.py] [--steps=20]

Measures, on the config's sizes (warm-up and compilation excluded, median and 10th/90th
percentiles of --steps timed repetitions):
  - host input: drawing one step's window indices and gathering the poses (NumPy);
  - rendering alone: the jitted renderer on one step's clips (frames/s);
  - each stage's train step, rendering included (frames/s), and the same step's share
    spent rendering;
  - the host feed overlapping the step: wall time of a loop of steps fed by the host
    (asynchronous dispatch) against the device time of the same steps, so a step that
    waits on input shows up as a ratio above 1.
Prints the device, versions, shapes and thread count; writes bench_images.json if --out.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_flags

from posemachine import host_memory, io_utils, train
from posemachine import image_train
from posemachine.data import pipeline, render
from posemachine.models import image_machine

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/synthetic_images.py", "Image-mode config.")
flags.DEFINE_integer("steps", 20, "Timed repetitions per measurement.")
flags.DEFINE_integer("warmup", 3, "Untimed repetitions first.")
flags.DEFINE_string("out", "", "Directory for bench_images.json ('' = print only).")


def _stats(times):
  q = np.percentile(times, [10, 50, 90])
  return {"median_s": float(q[1]), "p10_s": float(q[0]), "p90_s": float(q[2])}


def _time(fn, steps, warmup):
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return _stats(times)


def run(config, steps: int, warmup: int) -> dict:
  mesh = train.create_mesh(1)
  data = image_train.ClipData(pipeline.load_split(config, "train"))
  model = image_machine.from_config(config.model, config.data.num_joints)
  params = model.init(jax.random.key(0), jnp.zeros((1, 1, config.render.size,
                                                    config.render.size, 3)))["params"]
  out = {"device": str(jax.devices()[0].device_kind), "platform": jax.default_backend(),
         "jax": jax.__version__, "python": platform.python_version(),
         "threads": os.cpu_count(), "render_size": config.render.size,
         "encoder": config.model.encoder.to_dict(), "hidden": config.model.hidden,
         "stages": {}}
  counter = iter(range(1, 10 ** 9))
  for name, _, _ in image_train.stage_plan(config):
    st = config.stages[name]
    frames = st.batch_size * st.window
    host = _time(lambda: image_train.train_windows(data, config, name, next(counter)),  # pylint: disable=cell-var-from-loop
                 steps, warmup)
    batch = train.shard_batch(image_train.train_windows(data, config, name, 1), mesh)
    app_ = render.sample_appearance(jax.random.key(1), st.batch_size)
    render_fn = jax.jit(lambda b, k: image_train.render_inputs(b, k, config.render, app_))  # pylint: disable=cell-var-from-loop
    rend = _time(lambda: render_fn(batch, jax.random.key(next(counter))), steps, warmup)  # pylint: disable=cell-var-from-loop
    tx = image_train.make_stage_optimizer(config, name, params)
    fresh = jax.tree.map(jnp.copy, params)  # the step donates its state.
    state = train.TrainState(step=jnp.zeros((), jnp.int32), params=fresh,
                             opt_state=tx.init(fresh))
    step_fn = image_train.make_stage_step(model, tx, config, name, mesh, None)
    t0 = time.perf_counter()
    compiled = step_fn.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    holder = {"state": state}

    def one():
      holder["state"], m = compiled(holder["state"], batch)
      return m["loss"]
    stp = _time(one, steps, warmup)

    def fed_loop():  # the host draws and ships each step's batch while the device runs.
      t0 = time.perf_counter()
      for _ in range(steps):
        b = train.shard_batch(image_train.train_windows(data, config, name, next(counter)),
                              mesh)
        holder["state"], m = compiled(holder["state"], b)
      jax.block_until_ready(m["loss"])
      return time.perf_counter() - t0
    fed = fed_loop()
    out["stages"][name] = {
        "batch": st.batch_size, "window": st.window, "frames_per_step": frames,
        "compile_s": compile_s,
        "host_input": host, "render": rend, "step": stp,
        "render_frames_per_s": frames / rend["median_s"],
        "step_frames_per_s": frames / stp["median_s"],
        "steps_per_s": 1.0 / stp["median_s"],
        "render_share_of_step": rend["median_s"] / stp["median_s"],
        "host_input_share_of_step": host["median_s"] / stp["median_s"],
        "fed_loop_over_step_time": fed / (steps * stp["median_s"]),
    }
  return out


def format_table(res: dict) -> str:
  lines = [f"Device: {res['device']} ({res['platform']}), jax {res['jax']}, "
           f"{res['threads']} threads, crops {res['render_size']}x{res['render_size']}, "
           f"encoder {res['encoder']['trunk']}, hidden {res['hidden']}", "",
           "| stage | frames/step | step frames/s | render frames/s | render share | "
           "host input share | fed loop / step time | compile s |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
  for name, r in res["stages"].items():
    lines.append(f"| {name} | {r['frames_per_step']} | {r['step_frames_per_s']:.0f} | "
                 f"{r['render_frames_per_s']:.0f} | {100 * r['render_share_of_step']:.1f}% | "
                 f"{100 * r['host_input_share_of_step']:.2f}% | "
                 f"{r['fed_loop_over_step_time']:.2f} | {r['compile_s']:.1f} |")
  return "\n".join(lines)


def main(argv):
  del argv
  host_memory.keep_freed_memory()  # before JAX starts its backend
  res = run(FLAGS.config, FLAGS.steps, FLAGS.warmup)
  table = format_table(res)
  print(table)
  if FLAGS.out:
    os.makedirs(FLAGS.out, exist_ok=True)
    io_utils.atomic_write_json(os.path.join(FLAGS.out, "bench_images.json"), res)
    io_utils.atomic_write_text(os.path.join(FLAGS.out, "bench_images.md"), table + "\n")


if __name__ == "__main__":
  app.run(main)
