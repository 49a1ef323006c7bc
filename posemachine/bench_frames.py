"""Benchmark: real-frame input (data/h36m_frames.py) against the train step it feeds.

  python -m posemachine.bench_frames --config=configs/synthetic_images.py \
      --config.data.source=h36m --config.data.dir=DIR --config.data.frames_dir=FRAMES \
      [--stage=transformer] [--steps=10]

Measures on the config's sizes (compilation excluded; one device; medians of --rounds
interleaved rounds of --steps steps each):
  - decode: host batches of the stage (B x T crops) per second with data.frames_workers threads;
  - device: the stage's train step on one fixed batch, steps back to back;
  - serial: decode then step, one after the other (what the loop would do without prefetch);
  - fed: the training loop's feed (image_train.train_batches: the Prefetcher) driving the step.
fed / device near 1 means the step does not wait on input; serial / device shows what the
prefetch hides. Prints a table; writes bench_frames.json if --out.
"""

from __future__ import annotations

import os
import time

from absl import app, flags
import jax
import numpy as np
from ml_collections import config_flags

from posemachine import host_memory, image_train, io_utils, train
from posemachine.data import pipeline
from posemachine.models import image_machine

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/synthetic_images.py", "Image-mode config.")
flags.DEFINE_string("stage", "transformer", "Training stage whose batches and step to time.")
flags.DEFINE_integer("steps", 10, "Timed steps per measurement.")
flags.DEFINE_integer("rounds", 3, "Interleaved rounds of the four measurements (medians).")
flags.DEFINE_string("out", "", "Directory for bench_frames.json ('' = print only).")


def run(config, stage: str, steps: int, rounds: int = 3) -> dict:
  mesh = train.create_mesh(1)
  data = image_train.split_data(config, pipeline.load_split(config, "train"))
  model = image_machine.from_config(config.model, config.data.num_joints)
  state = jax.jit(image_train._abstract_state(model, config, stage, mesh))(  # pylint: disable=protected-access
      jax.random.key(0))
  tx = image_train.make_stage_optimizer(config, stage, state.params)
  step_fn = image_train.make_stage_step(model, tx, config, stage, mesh, None)
  make = lambda s: image_train.train_windows(data, config, stage, s)
  batch = make(0)
  frames = int(np.prod(batch["images"].shape[:2]))
  state, m = step_fn(state, train.shard_batch(batch, mesh))  # compile
  jax.block_until_ready(m)

  fixed = train.shard_batch(batch, mesh)
  times = {"decode": [], "device": [], "serial": [], "fed": []}
  step = 1
  for _ in range(rounds):  # interleaved rounds: a load change on a shared host hits all four.
    t0 = time.perf_counter()
    for s in range(step, step + steps):
      make(s)
    times["decode"].append((time.perf_counter() - t0) / steps)
    t0 = time.perf_counter()
    for _ in range(steps):
      state, m = step_fn(state, fixed)
    jax.block_until_ready(m)
    times["device"].append((time.perf_counter() - t0) / steps)
    t0 = time.perf_counter()
    for s in range(step, step + steps):
      state, m = step_fn(state, train.shard_batch(make(s), mesh))
      jax.block_until_ready(m)
    times["serial"].append((time.perf_counter() - t0) / steps)
    rng = range(step + steps, step + 2 * steps)
    gen = image_train.train_batches(data, config, stage, rng)
    t0 = time.perf_counter()
    for _, b in zip(rng, gen):
      state, m = step_fn(state, train.shard_batch(b, mesh))
    jax.block_until_ready(m)
    times["fed"].append((time.perf_counter() - t0) / steps)
    gen.close()
    step += 2 * steps
  decode, device, serial, fed = (float(np.median(times[k]))
                                 for k in ("decode", "device", "serial", "fed"))
  data.close()
  return {"device": str(jax.devices()[0]), "cpu_count": os.cpu_count(),
          "load_avg": os.getloadavg(), "stage": stage, "frames_per_step": frames,
          "crop": config.render.size, "workers": config.data.frames_workers,
          "prefetch": config.data.frames_prefetch,
          "decode_s": decode, "decode_frames_per_s": frames / decode,
          "device_step_s": device, "serial_step_s": serial, "fed_step_s": fed,
          "fed_over_device": fed / device, "serial_over_device": serial / device,
          "rounds": times}


def main(argv):
  del argv
  host_memory.keep_freed_memory()  # before JAX starts its backend
  res = run(FLAGS.config, FLAGS.stage, FLAGS.steps, FLAGS.rounds)
  print(f"{res['device']}, {res['cpu_count']} CPUs, load {res['load_avg'][0]:.2f}; stage "
        f"{res['stage']}: {res['frames_per_step']} frames/step at {res['crop']} px, "
        f"{res['workers']} decode threads, {res['prefetch']} batches ahead")
  print("| measure | s/step | frames/s |\n|:---|---:|---:|")
  for name in ("decode", "device_step", "serial_step", "fed_step"):
    t = res[f"{name}_s"]
    print(f"| {name.replace('_step', '')} | {t:.3f} | {res['frames_per_step'] / t:.0f} |")
  print(f"fed / device = {res['fed_over_device']:.2f} (1 = the step never waits on input); "
        f"serial / device = {res['serial_over_device']:.2f}")
  if FLAGS.out:
    os.makedirs(FLAGS.out, exist_ok=True)
    io_utils.atomic_write_json(os.path.join(FLAGS.out, "bench_frames.json"), res)


if __name__ == "__main__":
  app.run(main)
