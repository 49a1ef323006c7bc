"""The benchmark suite runs end to end on tiny shapes and writes its JSON and Markdown.

CI smoke test of `python -m posemachine.bench --quick` (numbers are not asserted).
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_TORCH = importlib.util.find_spec("torch") is not None


def _run(tmp_path, extra_env=None, args=()):
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1",
             **(extra_env or {}))
  r = subprocess.run([sys.executable, "-m", "posemachine.bench", "--quick", "--hidden=16",
                      "--shapes=8x4", "--steps=2", f"--out={tmp_path}", *args], cwd=REPO,
                     env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  with open(tmp_path / "bench.json") as f:
    return json.load(f), (tmp_path / "bench.md").read_text()


def test_bench_quick_tiny(tmp_path):
  res, md = _run(tmp_path)
  row = res["rows"][0]
  assert (row["batch"], row["window"]) == (8, 4)
  assert res["matmul_peak_flops"] > 0 and row["jax_steps_per_s"] > 0
  assert 0 < row["jax_mfu"] < 1.5 and 0 < row["jax_mfu_interleaved"] < 1.5
  assert 0 <= row["input_share"] < 1 and row["jax_interleaved_steps_per_s"] > 0
  assert row["jax_steps_per_s"] == 1 / row["jax_alone"]["median_s"]
  assert row["jax"]["compile_s"] > 0 and row["jax"]["compile_warm_s"] > 0
  assert row["jax"]["p10_s"] <= row["jax"]["median_s"] <= row["jax"]["p90_s"]
  # Every PyTorch row is either measured or reported (never silently missing).
  if HAS_TORCH:
    assert row["torch_eager_steps_per_s"] > 0 and row["jax_speedup_vs_torch_eager"] > 0
  else:
    _assert_skipped(res, md)
  assert isinstance(res["host_malloc_kept"], bool) and "host malloc:" in md
  assert res["dtype"] == "float32" and "float32 compute" in md
  # The analytic FLOP count: forward MACs of the stem, 2 LSTMs, head and projector.
  f, k, h = 2 * 17 + 2 + 17, 17, 16
  macs = f * h + 2 * 8 * h * h + h * 3 * k + 2 * 3 * k * h + 3 * k * h + 2 * h * h + h * 2 * k
  assert res["model_flops_per_frame_forward"] == 2 * macs
  # In a 4-frame window each LSTM layer skips the first frame's recurrent product (zero state).
  assert row["model_flops_per_frame_forward"] == 2 * (macs - 2 * 4 * h * h / 4)
  assert "| 8 x 4 |" in md


def _assert_skipped(res, md):
  assert res["torch"] is None and "skipped" in res["torch_skipped"]
  assert "skipped" in res["rows"][0]["torch_eager"]["skipped"]
  assert "torch_eager_steps_per_s" not in res["rows"][0]
  assert "| skipped |" in md and res["rows"][0]["jax_steps_per_s"] > 0


@pytest.mark.skipif(not HAS_TORCH, reason="without PyTorch, test_bench_quick_tiny covers this")
def test_bench_without_torch_reports_skipped(tmp_path):
  """A `torch` that fails to import (as when it is not installed): rows say skipped."""
  shadow = tmp_path / "shadow"
  shadow.mkdir()
  (shadow / "torch.py").write_text("raise ImportError('No module named torch (test shadow)')\n")
  path = os.pathsep.join([str(shadow), REPO, os.environ.get("PYTHONPATH", "")])
  res, md = _run(tmp_path, {"PYTHONPATH": path}, ["--dtype=bfloat16"])
  _assert_skipped(res, md)
  # (Also the bfloat16 run: its peak is a bfloat16 matmul.)
  assert res["dtype"] == "bfloat16" and "bfloat16 compute" in md
  assert "best bfloat16 matmul" in md and 0 < res["rows"][0]["jax_mfu"] < 1.5


def test_peak_matmul_in_the_compute_dtype():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from posemachine import bench, bench_input  # pylint: disable=g-import-not-at-top,unused-import
  # (Imported beside another benchmark whose flags have the same names: bench defines its
  # flags only when run as a program.)
  for dtype in ("float32", "bfloat16"):
    out = bench.matmul_fn((8, 16, 4), dtype)()
    assert out.shape == (8, 4) and out.dtype == jnp.dtype(dtype)
  assert bench.peak_shapes() == bench.PEAK_SHAPES  # on the CPU


def model_of(seen):
  return next(m for m in seen if type(m).__name__ == "Machine")


@pytest.mark.skipif(not HAS_TORCH, reason="needs PyTorch")
def test_torch_baseline_bfloat16_autocast_trains_float32_parameters():
  """--dtype=bfloat16 on the PyTorch side: bfloat16 autocast, float32 parameters that move."""
  import torch  # pylint: disable=g-import-not-at-top
  import tiny_config  # pylint: disable=g-import-not-at-top
  from posemachine import bench  # pylint: disable=g-import-not-at-top
  from posemachine.data import pipeline  # pylint: disable=g-import-not-at-top
  config = tiny_config.get_config()
  config.train.batch_size, config.data.window = 2, 4
  batch = bench.make_batch(config, pipeline.load_split(config, "train"), 1)
  seen = {}

  def hook(module, unused_inputs, out):  # returns None: the output stays as it is
    seen.setdefault(module, (out[0] if isinstance(out, tuple) else out).dtype)

  handle = torch.nn.modules.module.register_module_forward_hook(hook)
  try:
    one, info = bench.torch_setup(config, batch, False, "bfloat16")
  finally:
    handle.remove()
  assert info["device"] == "cpu" and info["float32_matmul"] == "float32"
  model = model_of(seen)
  assert info["lstm_dtype"] == str(seen[model.lstm0])  # as recorded for the JSON
  assert seen[model.stem] == seen[model.p2] == torch.bfloat16  # layers compute in bfloat16
  before = [p.detach().clone() for p in model.parameters()]
  assert all(p.dtype == torch.float32 for p in before)
  one()
  assert all(p.dtype == torch.float32 for p in model.parameters())
  assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
