"""The image pipeline benchmark runs on tiny shapes and reports every stage."""

import json
import os
import subprocess
import sys

import tiny_image_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_images_runs(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run(
      [sys.executable, "-m", "posemachine.bench_images", f"--config={tiny_image_config.PATH}",
       "--steps=2", "--warmup=1", f"--out={tmp_path}", "--config.stages.projector.steps=0",
       "--config.stages.end_to_end.steps=0"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "| encoder |" in proc.stdout and "| transformer |" in proc.stdout
  with open(tmp_path / "bench_images.json") as f:
    res = json.load(f)
  for name in ("encoder", "transformer"):
    r = res["stages"][name]
    assert r["step_frames_per_s"] > 0 and r["render_frames_per_s"] > 0
    assert 0 < r["host_input_share_of_step"] and r["fed_loop_over_step_time"] > 0
