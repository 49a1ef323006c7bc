"""Input-pipeline overhead: the train step fed by the pipeline vs the step on a pre-staged batch.

python -m posemachine.bench_input [--sizes=1024x64x16,128x64x16] [--out=DIR]

For each lifter size (width x batch x window) it times, on one device, steps of the real
loop pattern (no host sync per step; one sync after the timed steps):
- `prestaged`: the same batch, already on the device, every step (no input work at all);
- `host`: pipeline.train_batch (NumPy sampling, noise, flips) + transfer each step, as
  train.py does with data.device_sampling=False;
- `device`: windows sampled inside the jitted step from the training set on the device
  (data/device_sampler.py, data.device_sampling=True, the default).
Input overhead = time per step / prestaged time per step - 1. Rounds alternate the modes
(median over rounds) so that load from other processes hits them alike. Also reported: the
host sampling + transfer alone and the jitted device sampler alone per step (synchronised
each time: the input work with nothing to hide behind), and the device data's size.
The training set is random data with the given frame and sequence counts (timings do not
depend on the values). Writes bench_input.json and bench_input.md into --out.
"""

from __future__ import annotations

import functools
import os
import platform
import time

from absl import app, flags
import jax
import numpy as np

from posemachine import config_defaults, host_memory, io_utils, train
from posemachine.data import device_sampler, pipeline, sequences
from posemachine.models import machine

FLAGS = flags.FLAGS
flags.DEFINE_list("sizes", ["1024x64x16", "128x64x16"],
                  "Lifter sizes as width x batch x window (paper: 1024 x 64 x 16).")
flags.DEFINE_integer("steps", 10, "Timed steps per mode and round.")
flags.DEFINE_integer("rounds", 3, "Rounds over the modes; the median is reported.")
flags.DEFINE_integer("frames", 200_000, "Training frames (Human3.6M protocol #1: 1.56 M).")
flags.DEFINE_integer("sequences", 600, "Training sequences.")
flags.DEFINE_float("noise_px", 4.0, "train.augment_noise_px of the pipelines.")
flags.DEFINE_bool("flip", True, "train.augment_flip of the pipelines.")
flags.DEFINE_string("out", "bench_results", "Directory for bench_input.json / .md.")

K = 17
MODES = ("prestaged", "host", "device")


def random_sequences(frames: int, num_sequences: int, seed: int = 0) -> sequences.Sequences:
  """`frames` frames of random poses in `num_sequences` sequences of random lengths."""
  rng = np.random.default_rng(seed)
  cuts = np.sort(rng.choice(np.arange(1, frames), num_sequences - 1, replace=False))
  lengths = np.diff(np.concatenate([[0], cuts, [frames]])).astype(np.int64)
  return sequences.Sequences(
      pose_3d=rng.normal(size=(frames, K, 3)).astype(np.float32) * 0.2,
      pose_2d=rng.normal(size=(frames, K, 2)).astype(np.float32) * 0.2,
      confidence=rng.random((frames, K), np.float32), starts=np.concatenate(
          [[0], np.cumsum(lengths)[:-1]]).astype(np.int64), lengths=lengths,
      subject=["S1"] * num_sequences, action=["a"] * num_sequences,
      camera=["c"] * num_sequences, has_3d=np.ones(num_sequences, bool),
      source="bench_input:random").validate(K)


def _loop(run, state, steps):
  """Seconds per step over `steps` calls of run(state, step) with one sync at the end."""
  start = int(state.step)
  t0 = time.perf_counter()
  for i in range(steps):
    state, m = run(state, start + i + 1)
  jax.block_until_ready((state, m))
  return (time.perf_counter() - t0) / steps, state


def bench_size(hidden: int, batch: int, window: int, seqs, steps: int, rounds: int,
               noise_px: float, flip: bool) -> dict:
  """Per-step times of the three modes for one lifter size (see the module docstring)."""
  config = config_defaults.get_config()
  config.model.hidden = config.model.projector_hidden = hidden
  config.train.batch_size, config.data.window = batch, window
  config.train.augment_noise_px, config.train.augment_flip = noise_px, flip
  mesh = train.create_mesh(1)
  model = machine.from_config(config.model, K)
  tx = train.make_optimizer(config.train)
  state = train.init_state(model, tx, jax.random.key(0), K, window)
  step_fn = train.make_train_step(model, tx, config.loss, mesh)
  sampled = device_sampler.make_train_step(
      functools.partial(train.train_step, model=model, tx=tx, loss_config=config.loss),
      config, mesh)
  t0 = time.perf_counter()
  data = device_sampler.to_device(seqs, mesh)
  jax.block_until_ready(data)
  to_device_s = time.perf_counter() - t0
  staged = train.shard_batch(pipeline.train_batch(seqs, config, 1), mesh)
  runs = {
      "prestaged": lambda s, i: step_fn(s, staged),
      "host": lambda s, i: step_fn(s, train.shard_batch(pipeline.train_batch(seqs, config, i),
                                                        mesh)),
      "device": lambda s, i: sampled(s, data),
  }
  t0 = time.perf_counter()
  for mode in MODES:  # compile + warm up
    _, state = _loop(runs[mode], state, 2)
  warmup_s = time.perf_counter() - t0
  times = {m: [] for m in MODES}
  for _ in range(rounds):
    for mode in MODES:
      dt, state = _loop(runs[mode], state, steps)
      times[mode].append(dt)
  # Host sampling + transfer alone, synchronised each time.
  host_only = []
  for i in range(steps):
    t0 = time.perf_counter()
    jax.block_until_ready(train.shard_batch(pipeline.train_batch(seqs, config, 10_000 + i), mesh))
    host_only.append(time.perf_counter() - t0)
  # Device sampling alone: the jitted sampler by itself, synchronised each time.
  sampler = jax.jit(device_sampler.config_sampler(config, mesh))
  jax.block_until_ready(sampler(data, 1))
  device_only = []
  for i in range(steps):
    t0 = time.perf_counter()
    jax.block_until_ready(sampler(data, 10_000 + i))
    device_only.append(time.perf_counter() - t0)
  med = {m: float(np.median(v)) for m, v in times.items()}
  return {"hidden": hidden, "batch": batch, "window": window, "step_s": med,
          "step_s_rounds": times, "overhead": {m: med[m] / med["prestaged"] - 1
                                               for m in ("host", "device")},
          "host_sampling_s": float(np.median(host_only)),
          "device_sampling_s": float(np.median(device_only)), "device_data_bytes":
          device_sampler.nbytes(seqs), "to_device_s": to_device_s, "warmup_s": warmup_s}


def _version(package: str):
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  try:
    return metadata.version(package)
  except metadata.PackageNotFoundError:
    return None


def environment() -> dict:
  dev = jax.devices()[0]
  return {"device": str(dev), "device_kind": dev.device_kind, "platform": dev.platform,
          "num_devices": jax.device_count(), "processor": platform.processor() or
          platform.machine(), "cpu_count": os.cpu_count(),
          "threads": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
          "jax": jax.__version__, "jaxlib": _version("jaxlib"),
          "numpy": np.__version__, "python": platform.python_version(),
          "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def markdown(result: dict) -> str:
  e = result["environment"]
  lines = [f"Device: {e['device']} ({e['device_kind']}), {e['cpu_count']} CPUs ({e['threads']} usable "
           f"threads), load "
           f"{e['load_average']}; jax {e['jax']}, jaxlib {e['jaxlib']}, numpy {e['numpy']}, Python {e['python']}; "
           f"XLA_FLAGS '{e['xla_flags']}'. Training set: {result['frames']:,} random frames in "
           f"{result['sequences']} sequences; 2D noise {result['noise_px']} px, flips "
           f"{result['flip']}; float32; {result['steps']} steps x {result['rounds']} rounds.", "",
           "| width x batch x window | pre-staged ms/step | host pipeline ms/step | overhead | "
           "device sampling ms/step | overhead | host sampling alone ms | device sampling alone ms |",
           "|---|---|---|---|---|---|---|---|"]
  for r in result["rows"]:
    s, o = r["step_s"], r["overhead"]
    lines.append(f"| {r['hidden']} x {r['batch']} x {r['window']} | {1e3 * s['prestaged']:.2f} | "
                 f"{1e3 * s['host']:.2f} | {100 * o['host']:+.1f} % | {1e3 * s['device']:.2f} | "
                 f"{100 * o['device']:+.1f} % | {1e3 * r['host_sampling_s']:.2f} | "
                 f"{1e3 * r['device_sampling_s']:.2f} |")
  lines.append("\nOverhead = time per step / pre-staged time per step - 1 (median over rounds; "
               "steps dispatched without a host sync per step, as the training loop does). "
               "Acceptance: under 5 % for the paper-size lifter.")
  return "\n".join(lines) + "\n"


def run(sizes, steps, rounds, frames, num_sequences, noise_px, flip, out) -> dict:
  seqs = random_sequences(frames, num_sequences)
  rows = []
  for size in sizes:
    h, b, t = (int(v) for v in size.split("x"))
    rows.append(bench_size(h, b, t, seqs, steps, rounds, noise_px, flip))
  result = {"environment": environment(), "frames": frames, "sequences": num_sequences,
            "noise_px": noise_px, "flip": flip, "steps": steps, "rounds": rounds, "rows": rows}
  os.makedirs(out, exist_ok=True)
  io_utils.atomic_write_json(os.path.join(out, "bench_input.json"), result)
  io_utils.atomic_write_text(os.path.join(out, "bench_input.md"), markdown(result))
  return result


def main(argv):
  del argv
  host_memory.keep_freed_memory()  # before JAX starts its backend
  result = run(FLAGS.sizes, FLAGS.steps, FLAGS.rounds, FLAGS.frames, FLAGS.sequences,
               FLAGS.noise_px, FLAGS.flip, FLAGS.out)
  print(markdown(result), end="")


if __name__ == "__main__":
  app.run(main)
