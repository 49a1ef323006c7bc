"""Benchmark suite: the JAX train step against the same network in PyTorch and the machine's peak.

python -m posemachine.bench [--quick] [--shapes=BxT,...] [--steps=N] [--hidden=N]
    [--dtype=float32|bfloat16] [--out=DIR]

Measures, for the paper-sized lifter (1024 wide, two LSTM layers, six-layer projector):
- the machine's matmul peak in the compute dtype (large jitted matmuls, same run);
- the JAX train step: compile time with an empty persistent compilation cache (cold) and
  again loaded from it (warm), steps/s and frames/s (median and 10th-90th percentile of
  many steps, warm-up excluded), model FLOP utilisation (analytic FLOPs / peak);
- the same network and loss in PyTorch (eager; `torch.compile` outside --quick), same shapes,
  same data, same thread count, same device (CUDA when JAX runs on a GPU) and compute dtype
  (`--dtype=bfloat16`: autocast, float32 parameters, as JAX's `model.dtype`); the ratio to
  JAX. JAX and PyTorch steps take turns (interleaved repetitions), so load from other
  processes hits both alike;
- offline (bidirectional) inference frames/s;
- the input pipeline's share: host batch sampling + transfer vs the step time.
Writes bench.json and bench.md into --out and prints the table with device, versions, shapes
and threads. PyTorch is optional (`pip install -e '.[bench]'`); without it those rows are
reported as skipped. Streaming and the test-time correction have their own benchmarks:
posemachine.bench_streaming and posemachine.bench_refine.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from posemachine import compile_cache, config_defaults, host_memory, io_utils, train
from posemachine.data import pipeline, synthetic
from posemachine.models import machine

FLAGS = flags.FLAGS


def define_flags():
  """The command line's flags: defined only when run as a program, so that importing this
  module (its peak, FLOP count and PyTorch baseline) next to other benchmarks that define
  flags of the same names works."""
  flags.DEFINE_bool("quick", False, "Fewer steps, no window 243, no torch.compile.")
  flags.DEFINE_string("out", "bench_results", "Directory for bench.json and bench.md.")
  flags.DEFINE_integer("hidden", 1024, "Lifter width (the paper: 1024).")
  flags.DEFINE_list("shapes", None, "batch x window pairs, e.g. 64x16,64x243 (default by mode).")
  flags.DEFINE_integer("steps", None, "Timed steps per row (default: 5 with --quick, else 20).")
  flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                    "Compute dtype of both frameworks and of the peak matmul (parameters "
                    "float32).")

K = 17


def model_flops_per_frame(hidden: int, proj: int, k: int = K, window: int | None = None
                          ) -> float:
  """Analytic forward FLOPs per frame (2 per multiply-add; elementwise ops ignored).

  window: frames per training window. Each LSTM layer enters a window's first frame (in
  its scan order) with the zero state, whose recurrent product is zero work (the forward
  and input-gradient products are skipped, `lstm.lstm_scan(zero_state=True)`; the weight
  gradient's zero block is computed but not counted), so the recurrent products count
  (window - 1) / window per frame. None: every frame's (a state carried in from outside).
  """
  feats = 2 * k + 2 + k  # root-centred joints, root position, confidences
  recurrent = 1.0 if window is None else (window - 1) / window
  macs = feats * hidden + 2 * (hidden * 4 * hidden + recurrent * hidden * 4 * hidden)
  macs += hidden * 3 * k
  macs += 2 * (3 * k * proj)  # regression half
  macs += 3 * k * proj + 2 * proj * proj + proj * 2 * k  # projection half
  return 2.0 * macs


def _timed(fn, steps):
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  t = np.asarray(times)
  return {"median_s": float(np.median(t)), "p10_s": float(np.percentile(t, 10)),
          "p90_s": float(np.percentile(t, 90)), "steps": steps}


# The matmul peak is the best of these products (m, k, n): a square one and the lifter's
# largest (1024 frames x 1024 x 4096 gates). Their rates differ by up to 10 % on a CPU;
# taking the best keeps the MFU's denominator honest. An accelerator needs larger products
# to reach its peak (a 2048^3 one is tens of microseconds on a GPU, launch-bound).
PEAK_SHAPES = ((2048, 2048, 2048), (1024, 1024, 4096))
ACCELERATOR_PEAK_SHAPES = ((8192, 8192, 8192), (16384, 1024, 4096))


def peak_shapes():
  return PEAK_SHAPES if jax.default_backend() == "cpu" else ACCELERATOR_PEAK_SHAPES


def _shape_name(shape):
  return "x".join(str(v) for v in shape)


def matmul_fn(shape=PEAK_SHAPES[0], dtype="float32"):
  """A jitted (m, k) x (k, n) matmul in `dtype` (2 m k n FLOPs) as a closure, compiled and
  warmed up. Random operands: a GPU runs faster on constant data (less switching power)."""
  m, k, n = shape
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (m, k), jnp.float32).astype(dtype)
  b = jax.random.normal(kb, (k, n), jnp.float32).astype(dtype)
  f = jax.jit(lambda x, y: x @ y)
  f(a, b).block_until_ready()
  return lambda: f(a, b).block_until_ready()


def matmul_flops(shape):
  return 2.0 * shape[0] * shape[1] * shape[2]


def matmul_peak(steps=10, dtype="float32"):
  """(best FLOP/s over peak_shapes(), {shape name: timing}), each timed alone."""
  shapes = peak_shapes()
  timings = {_shape_name(sh): _timed(matmul_fn(sh, dtype), steps) for sh in shapes}
  best = max(matmul_flops(sh) / timings[_shape_name(sh)]["median_s"] for sh in shapes)
  return best, timings


def make_batch(config, seqs, step):
  return pipeline.train_batch(seqs, config, step)


def jax_setup(config, seqs, batch_np, steps):
  """Compiles the train step (cold, then warm from the persistent cache) and times the rest.

  Returns (one train step as a closure, results dict without the step timing).
  """
  mesh = train.create_mesh(1)
  model = machine.from_config(config.model, K)
  tx = train.make_optimizer(config.train)
  state = train.init_state(model, tx, jax.random.key(0), K, config.data.window)
  step_fn = train.make_train_step(model, tx, config.loss, mesh)
  batch = train.shard_batch(batch_np, mesh)
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, batch).compile()
  res = {"compile_s": time.perf_counter() - t0}
  # Warm: the in-memory caches dropped, the executable loaded from the persistent cache.
  jax.clear_caches()
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, batch).compile()
  res["compile_warm_s"] = time.perf_counter() - t0
  holder = {"state": state}

  def one():
    holder["state"], m = compiled(holder["state"], batch)
    jax.block_until_ready(m["loss"])
  one()  # warm-up
  # Input pipeline: host sampling of a fresh batch + transfer, per step.
  def feed():
    jax.block_until_ready(train.shard_batch(make_batch(config, seqs, 7), mesh))
  res["input_s"] = _timed(feed, steps)["median_s"]
  # Offline inference (bidirectional), frames/s.
  params = holder["state"].params
  fwd = jax.jit(lambda p, x, c: model.apply({"params": p}, x, c)["pose_3d"])
  fwd(params, batch["pose_2d"], batch["confidence"]).block_until_ready()
  res["inference"] = _timed(
      lambda: fwd(params, batch["pose_2d"], batch["confidence"]).block_until_ready(), steps)
  return one, res


def interleaved(fns: dict, steps: int) -> dict:
  """Times each closure `steps` times, taking turns (A B C A B C ...): load hits all alike."""
  times = {k: [] for k in fns}
  for _ in range(steps):
    for k, fn in fns.items():
      t0 = time.perf_counter()
      fn()
      times[k].append(time.perf_counter() - t0)
  out = {}
  for k, t in times.items():
    t = np.asarray(t)
    out[k] = {"median_s": float(np.median(t)), "p10_s": float(np.percentile(t, 10)),
              "p90_s": float(np.percentile(t, 90)), "steps": steps}
  return out


def torch_device():
  """PyTorch's device for the baseline: CUDA where JAX runs on an NVIDIA GPU, else the CPU."""
  import torch  # pylint: disable=g-import-not-at-top
  gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
  return torch.device("cuda" if gpu else "cpu")


def torch_setup(config, batch_np, compile_model, dtype="float32"):
  """The same network, loss and optimiser in PyTorch on torch_device(); with
  dtype='bfloat16' the forward pass and loss run under bfloat16 autocast (parameters and
  optimiser float32, like JAX's model.dtype). Returns (one step closure, info)."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  device = torch_device()
  if device.type == "cuda":
    # JAX computes float32 products on a GPU with TensorFloat-32 by default; PyTorch does not.
    # The same arithmetic on both sides: allow it in PyTorch too.
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
  h, p = config.model.hidden, config.model.projector_hidden
  child = torch.tensor([i for i, q in enumerate(machine_parents()) if q >= 0])
  parent = torch.tensor([q for q in machine_parents() if q >= 0])

  class Machine(nn.Module):
    """The same network as models/machine.py (bidirectional variant), in PyTorch."""

    def __init__(self):
      super().__init__()
      self.stem = nn.Linear(2 * K + 2 + K, h)
      self.lstm0 = nn.LSTM(h, h, batch_first=True)
      self.lstm1 = nn.LSTM(h, h, batch_first=True)
      self.head = nn.Linear(h, 3 * K)
      self.reg1, self.reg2 = nn.Linear(3 * K, p), nn.Linear(p, 3 * K)
      self.p1, self.p2, self.p3 = nn.Linear(3 * K, p), nn.Linear(p, p), nn.Linear(p, p)
      self.p4 = nn.Linear(p, 2 * K)

    def forward(self, x2d, conf):
      b, t = x2d.shape[:2]
      root = x2d[:, :, :1]
      feats = torch.cat([(x2d - root).reshape(b, t, -1), root.reshape(b, t, 2),
                         conf.reshape(b, t, -1)], -1)
      x = torch.relu(self.stem(feats))
      x, _ = self.lstm0(x)
      x, _ = self.lstm1(torch.flip(x, [1]))
      inter = self.head(torch.flip(x, [1])).reshape(b, t, K, 3)
      inter = inter - inter[:, :, :1]
      corr = inter + self.reg2(torch.relu(self.reg1(inter.reshape(b, t, -1)))).reshape(b, t, K, 3)
      corr = corr - corr[:, :, :1]
      a = torch.relu(self.p1(corr.reshape(b, t, -1)))
      y = torch.relu(self.p3(torch.relu(self.p2(a))))
      return inter, corr, self.p4(a + y).reshape(b, t, K, 2)

  def norm2d(q):
    c = q - q[..., :1, :]
    return c / torch.sqrt((c ** 2).sum(-1).mean(-1) + 1e-6)[..., None, None]

  def err(a, b_):
    return ((a - b_) ** 2).sum(-1).mean()

  def bones(q):
    return q[..., child, :] - q[..., parent, :]

  def loss_fn(model, x2d, conf, gt3d):
    inter, corr, proj = model(x2d, conf)
    tgt = norm2d(x2d)
    return (err(inter, gt3d) + err(corr, gt3d)
            + 0.5 * (err(bones(inter), bones(gt3d)) + err(bones(corr), bones(gt3d)))
            + err(proj, tgt) + err(bones(proj), bones(tgt)))

  torch.manual_seed(0)
  child, parent = child.to(device), parent.to(device)
  model = Machine().to(device)
  opt = torch.optim.Adam(model.parameters(), lr=config.train.learning_rate)
  x2d, conf, gt = (torch.from_numpy(np.ascontiguousarray(batch_np[k])).to(device)
                   for k in ("pose_2d", "confidence", "pose_3d"))
  step_loss = loss_fn
  if compile_model:
    step_loss = torch.compile(loss_fn)
  autocast = lambda: torch.autocast(device.type, torch.bfloat16, enabled=dtype == "bfloat16")

  def one():
    opt.zero_grad(set_to_none=True)
    with autocast():
      loss = step_loss(model, x2d, conf, gt)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.clip_norm)
    opt.step()
    if device.type == "cuda":
      torch.cuda.synchronize()  # the step's kernels are done, as block_until_ready in JAX
  # What the LSTMs really compute in: under CUDA autocast cuDNN's LSTM runs in float16, not
  # bfloat16 (PyTorch casts its inputs and weights to half), so the JSON says so.
  lstm_dtypes = set()
  hook = model.lstm0.register_forward_hook(lambda m, i, o: lstm_dtypes.add(str(o[0].dtype)))
  t0 = time.perf_counter()
  one()  # warm-up (and compilation)
  first = time.perf_counter() - t0
  hook.remove()
  one()
  return one, {"first_step_s": first, "torch": torch.__version__,
               "threads": torch.get_num_threads(), "device": str(device),
               "float32_matmul": "tf32" if device.type == "cuda" else "float32",
               "lstm_dtype": ",".join(sorted(lstm_dtypes)) or "unknown"}


def machine_parents():
  from posemachine import skeleton  # pylint: disable=g-import-not-at-top
  return skeleton.PARENTS


def main(argv):
  del argv
  host_memory.keep_freed_memory()  # before JAX starts its backend
  quick = FLAGS.quick
  shapes = FLAGS.shapes or (["64x16"] if quick else ["64x16", "64x243", "1024x16"])
  steps = FLAGS.steps or (5 if quick else 20)
  # A fresh persistent compilation cache: the first compile is cold, the second warm.
  cache_dir = tempfile.mkdtemp(prefix="posemachine_bench_cache_")
  compile_cache.enable(cache_dir)
  config = config_defaults.get_config()
  config.model.hidden = config.model.projector_hidden = FLAGS.hidden
  config.model.dtype = dtype = FLAGS.dtype
  config.data.synthetic.sequences_per_action = 1
  config.data.synthetic.frames_per_sequence = 300
  seqs = pipeline.load_split(config, "train")
  peak, peak_r = matmul_peak(steps=steps, dtype=dtype)
  try:
    import torch  # pylint: disable=g-import-not-at-top
    if torch_device().type == "cpu":
      torch.set_num_threads(os.cpu_count() or 1)
    torch_skip = None
  except ImportError as e:
    torch, torch_skip = None, f"skipped: PyTorch not installed ({e})"
  torch_modes = (("torch_eager", False),) + (() if quick else (("torch_compile", True),))
  fpf = model_flops_per_frame(config.model.hidden, config.model.projector_hidden)
  rows = []
  for shape in shapes:
    b, t = (int(v) for v in shape.split("x"))
    config.train.batch_size, config.data.window = b, t
    batch_np = make_batch(config, seqs, 1)
    frames = b * t
    row_fpf = model_flops_per_frame(config.model.hidden, config.model.projector_hidden,
                                    window=t)
    one, jr = jax_setup(config, seqs, batch_np, steps)
    # MFU: JAX steps back to back (as in a training run), the peak timed right after them.
    # A step that follows a PyTorch step runs slower (caches, page state, the other
    # framework's idle threads), so the interleaved rounds below give the PyTorch ratio and
    # a second, interleaved MFU, not the headline one.
    alone = _timed(one, steps)
    alone_peak = max(peak, matmul_peak(steps=max(3, steps // 2), dtype=dtype)[0])
    # The peak is also timed in turn with the interleaved steps, so that MFU's numerator and
    # denominator see the same load.
    fns = {"jax": one,
           **{"matmul_" + _shape_name(sh): matmul_fn(sh, dtype) for sh in peak_shapes()}}
    row = {"batch": b, "window": t, "model_flops_per_frame_forward": row_fpf}
    for name, comp in torch_modes:
      if torch is None:
        row[name] = {"skipped": torch_skip}
        continue
      try:
        fns[name], row[name] = torch_setup(config, batch_np, comp, dtype)
      except Exception as e:  # pylint: disable=broad-except  (report, keep benchmarking)
        row[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    timed = interleaved(fns, steps)
    jr.update(timed["jax"])
    # The peak is the best matmul rate seen in the run: timed alone at the start, or in turn
    # with this row's steps (after huge steps the interleaved matmul can run at half speed;
    # an MFU against that would exceed 100 %).
    interleaved_peak = max(matmul_flops(sh) / timed["matmul_" + _shape_name(sh)]["median_s"]
                           for sh in peak_shapes())
    row_peak = max(interleaved_peak, peak)
    flops = 3 * row_fpf * frames
    row.update({"jax": jr, "jax_alone": alone, "jax_steps_per_s": 1 / alone["median_s"],
                "jax_frames_per_s": frames / alone["median_s"],
                "matmul_peak_flops": alone_peak,
                "jax_mfu": flops / alone["median_s"] / alone_peak,
                "jax_interleaved_steps_per_s": 1 / jr["median_s"],
                "matmul_peak_interleaved_flops": interleaved_peak,
                "matmul_peak_interleaved_row_flops": row_peak,
                "matmul_timing": {k[len("matmul_"):]: v for k, v in timed.items()
                                  if k.startswith("matmul_")},
                "jax_mfu_interleaved": flops / jr["median_s"] / row_peak,
                "input_share": jr["input_s"] / (jr["input_s"] + alone["median_s"]),
                "inference_frames_per_s": frames / jr["inference"]["median_s"]})
    for name, _ in torch_modes:
      if name in timed:
        row[name].update(timed[name])
        row[f"{name}_steps_per_s"] = 1 / timed[name]["median_s"]
        row[f"jax_speedup_vs_{name}"] = timed[name]["median_s"] / jr["median_s"]
    rows.append(row)
    print("bench row:", json.dumps(row), flush=True)  # kept in logs should a later row stop
  shutil.rmtree(cache_dir, ignore_errors=True)
  load = os.getloadavg()
  result = {
      "device": str(jax.devices()[0]), "device_kind": jax.devices()[0].device_kind,
      "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
      "load_average_1_5_15": load,
      "jax": jax.__version__, "torch": getattr(torch, "__version__", None),
      "torch_skipped": torch_skip,
      "hidden": config.model.hidden, "projector_hidden": config.model.projector_hidden,
      "backend": jax.default_backend(), "dtype": dtype, "matmul_peak_flops": peak,
      "matmul_peak_timing": peak_r,
      "model_flops_per_frame_forward": fpf, "train_flops_per_frame": 3 * fpf,
      "quick": quick, "steps": steps, "rows": rows,
      # Both frameworks run in this process, so both get posemachine's host malloc settings.
      "host_malloc_kept": host_memory.active(),
  }
  lines = [f"Device: {result['device']} ({result['device_kind']}), {result['cpu_count']} CPUs, "
           f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}; jax {result['jax']}, "
           f"torch {result['torch'] or torch_skip}; width {config.model.hidden}, {dtype} compute; "
           f"matmul peak {peak / 1e9:.1f} GFLOP/s; train FLOPs/frame {3 * fpf / 1e6:.1f} M "
           "(less the first frame's recurrent products in each window, see MFU); "
           f"{steps} timed steps per row: JAX alone, then JAX and PyTorch interleaved; host "
           f"malloc: {'freed memory kept' if result['host_malloc_kept'] else 'glibc defaults'} "
           "(both frameworks).", "",
           "| batch x window | JAX steps/s (p10-p90) | JAX frames/s | matmul peak GFLOP/s | MFU "
           "(interleaved) | compile cold / warm (s) | input share | JAX steps/s interleaved "
           "| PyTorch eager steps/s | JAX / eager | PyTorch compile steps/s | "
           "JAX / compile | inference frames/s |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    def g(k, fmt="{:.2f}", r=r):
      if k in r:
        return fmt.format(r[k])
      base = r.get(k.replace("_steps_per_s", "").replace("jax_speedup_vs_", ""), {})
      return "skipped" if "skipped" in base else ("error" if "error" in base else "-")
    j, a = r["jax"], r["jax_alone"]
    lines.append(
        f"| {r['batch']} x {r['window']} | {r['jax_steps_per_s']:.2f} "
        f"({1 / a['p90_s']:.2f}-{1 / a['p10_s']:.2f}) | "
        f"{r['jax_frames_per_s']:.0f} | {r['matmul_peak_flops'] / 1e9:.1f} | "
        f"{100 * r['jax_mfu']:.1f} % ({100 * r['jax_mfu_interleaved']:.1f} %) | "
        f"{j['compile_s']:.1f} / {j['compile_warm_s']:.2f} | "
        f"{100 * r['input_share']:.1f} % | {r['jax_interleaved_steps_per_s']:.2f} | "
        f"{g('torch_eager_steps_per_s')} | "
        f"{g('jax_speedup_vs_torch_eager')} | {g('torch_compile_steps_per_s')} | "
        f"{g('jax_speedup_vs_torch_compile')} | {r['inference_frames_per_s']:.0f} |")
  lines.append("\nMedians of the timed steps (warm-up excluded), 10th-90th percentile range in "
               "brackets. JAX steps/s, frames/s and MFU: JAX steps back to back. MFU = "
               "analytic train FLOPs (3 x forward; a window's first frame enters each LSTM "
               "layer with the zero state and has no recurrent product) per second / the "
               f"matmul peak (the best {dtype} matmul of "
               f"{', '.join(map(_shape_name, peak_shapes()))}, timed alone at the start and "
               "after the row's JAX steps). Interleaved: JAX, the peak matmuls and PyTorch "
               "timed in turn (A B C A B C ...), so load hits all alike; JAX / PyTorch "
               "ratios and the MFU in brackets come from these rounds. Compile: cold = empty "
               "persistent cache, warm = loaded from it.")
  os.makedirs(FLAGS.out, exist_ok=True)
  io_utils.atomic_write_json(os.path.join(FLAGS.out, "bench.json"), result)
  io_utils.atomic_write_text(os.path.join(FLAGS.out, "bench.md"), "\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  define_flags()
  app.run(main)
