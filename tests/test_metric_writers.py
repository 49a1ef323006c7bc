"""Tests for posemachine.metric_writers (jsonl, TensorBoard events, progress)."""

import io
import json
import os
import struct

import numpy as np
import pytest

from posemachine import metric_writers


def test_crc32c_check_value():
  assert metric_writers.crc32c(b"123456789") == 0xE3069283
  assert metric_writers.crc32c(b"") == 0


def test_tfrecord_framing():
  payload = b"hello event"
  rec = metric_writers.tfrecord(payload)
  (length,) = struct.unpack("<Q", rec[:8])
  assert length == len(payload)
  assert struct.unpack("<I", rec[8:12])[0] == metric_writers.masked_crc32c(rec[:8])
  assert rec[12:12 + length] == payload
  assert struct.unpack("<I", rec[-4:])[0] == metric_writers.masked_crc32c(payload)


def test_jsonl_has_scalars(tmp_path):
  with metric_writers.MetricWriter(tmp_path) as writer:
    writer.write_scalars(10, {"loss": np.float32(0.5), "lr": 1e-3}, prefix="train")
    writer.write_scalars(20, {"mpjpe": 42.0})
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert len(rows) == 2
  assert rows[0]["step"] == 10 and rows[0]["train/loss"] == 0.5
  assert rows[0]["train/lr"] == pytest.approx(1e-3)
  assert rows[1] == {"step": 20, "time": rows[1]["time"], "mpjpe": 42.0}
  assert rows[1]["time"] > 1e9


def test_tensorboard_reads_event_file(tmp_path):
  pytest.importorskip("tensorboard")
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  written = {}
  with metric_writers.MetricWriter(tmp_path) as writer:
    for step in (0, 5, 300):
      scalars = {"loss": 1.0 / (step + 1), "mpjpe": 100.0 - step * 0.1}
      writer.write_scalars(step, scalars, prefix="train")
      for name, value in scalars.items():
        written.setdefault(f"train/{name}", []).append((step, value))
  tb_dir = tmp_path / "tensorboard"
  files = os.listdir(tb_dir)
  assert len(files) == 1 and files[0].startswith("events.out.tfevents.")
  acc = event_accumulator.EventAccumulator(str(tb_dir))
  acc.Reload()
  assert sorted(acc.Tags()["scalars"]) == sorted(written)
  for tag, expected in written.items():
    events = acc.Scalars(tag)
    assert [e.step for e in events] == [s for s, _ in expected]
    np.testing.assert_allclose([e.value for e in events], [v for _, v in expected],
                               rtol=1e-6)  # stored as float32


def test_disabled_writer_writes_nothing(tmp_path):
  logdir = tmp_path / "logs"
  with metric_writers.MetricWriter(logdir, enabled=False) as writer:
    writer.write_scalars(1, {"loss": 1.0})
    writer.flush()
  assert not logdir.exists()


class FakeClock:

  def __init__(self):
    self.now = 1000.0

  def __call__(self):
    return self.now


def test_progress_prints_rate_and_eta():
  clock, stream = FakeClock(), io.StringIO()
  progress = metric_writers.Progress(5000, start_step=1000, every_seconds=10,
                                     stream=stream, clock=clock)
  clock.now += 5
  assert not progress.update(1050, loss=0.5)  # not due yet
  clock.now += 15  # 200 steps in 20 s since the start: 10 steps/s
  assert progress.update(1200, loss=0.0123)
  line = stream.getvalue().strip()
  # 3800 steps left at 10 steps/s: 380 s.
  assert line == "step 1200/5000  24%  loss 0.0123  10 steps/s  ETA 6m20s"
  clock.now += 10  # rate over the recent interval only: 400 steps in 10 s
  progress.update(1600)
  assert stream.getvalue().splitlines()[-1].endswith("40 steps/s  ETA 1m25s")
  clock.now += 1
  assert progress.update(5000)  # the last step always prints
  progress.done()
  assert stream.getvalue().splitlines()[-1].startswith("done: 4000 steps in 31s")


def test_progress_disabled_and_duration_format():
  stream = io.StringIO()
  progress = metric_writers.Progress(10, every_seconds=0, stream=stream, enabled=False)
  progress.update(10)
  progress.done()
  assert stream.getvalue() == ""
  assert metric_writers.format_duration(4000) == "1h06m40s"
  assert metric_writers.format_duration(7.2) == "7s"
  assert metric_writers.format_duration(float("inf")) == "?"
