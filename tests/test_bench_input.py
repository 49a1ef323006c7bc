"""The input-overhead benchmark runs on tiny shapes and writes its JSON and Markdown."""

import json

import numpy as np

from posemachine import bench_input


def test_bench_input_tiny(tmp_path):
  res = bench_input.run(["16x8x4"], steps=2, rounds=2, frames=300, num_sequences=7,
                        noise_px=4.0, flip=True, out=str(tmp_path))
  with open(tmp_path / "bench_input.json") as f:
    saved = json.load(f)
  assert saved["rows"] == json.loads(json.dumps(res["rows"]))
  row = saved["rows"][0]
  assert (row["hidden"], row["batch"], row["window"]) == (16, 8, 4)
  for mode in bench_input.MODES:
    assert len(row["step_s_rounds"][mode]) == 2 and row["step_s"][mode] > 0
  for mode in ("host", "device"):
    assert np.isclose(row["overhead"][mode], row["step_s"][mode] / row["step_s"]["prestaged"] - 1)
  assert row["host_sampling_s"] > 0 and row["device_sampling_s"] > 0
  assert row["device_data_bytes"] == 300 * 17 * (2 + 3 + 1) * 4 + 7 * (4 + 4 + 4)
  env = saved["environment"]
  assert env["jax"] and env["cpu_count"] >= 1 and env["device_kind"]
  md = (tmp_path / "bench_input.md").read_text()
  assert "| 16 x 8 x 4 |" in md and env["jax"] in md


def test_random_sequences_cover_the_frames():
  seqs = bench_input.random_sequences(1000, 13)
  assert seqs.num_frames == 1000 and seqs.num_sequences == 13 and seqs.lengths.min() >= 1
  np.testing.assert_array_equal(seqs.starts[1:], np.cumsum(seqs.lengths)[:-1])
