"""The benchmark suite runs end to end on tiny shapes and writes its JSON and Markdown."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_quick_tiny(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1")
  r = subprocess.run([sys.executable, "-m", "posemachine.bench", "--quick", "--hidden=16",
                      "--shapes=8x4", f"--out={tmp_path}"], cwd=REPO, env=env,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  with open(tmp_path / "bench.json") as f:
    res = json.load(f)
  row = res["rows"][0]
  assert (row["batch"], row["window"]) == (8, 4)
  assert res["matmul_peak_flops"] > 0 and row["jax_steps_per_s"] > 0
  assert 0 < row["jax_mfu"] < 1.5 and 0 <= row["input_share"] < 1
  # The analytic FLOP count: forward MACs of the stem, 2 LSTMs, head and projector.
  f, k, h = 2 * 17 + 2 + 17, 17, 16
  macs = f * h + 2 * 8 * h * h + h * 3 * k + 2 * 3 * k * h + 3 * k * h + 2 * h * h + h * 2 * k
  assert res["model_flops_per_frame_forward"] == 2 * macs
  assert "| 8 x 4 |" in (tmp_path / "bench.md").read_text()
