"""Tests for posemachine.io_utils (atomic writes)."""

import json
import os

import numpy as np
import pytest

from posemachine import io_utils


class Unserialisable:
  pass


def test_write_bytes_and_text(tmp_path):
  path = tmp_path / "a.bin"
  io_utils.atomic_write_bytes(path, b"\x00\x01")
  assert path.read_bytes() == b"\x00\x01"
  io_utils.atomic_write_bytes(str(path), b"new")
  assert path.read_bytes() == b"new"
  io_utils.atomic_write_text(tmp_path / "t.txt", "héllo\nworld\n")
  assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo\nworld\n"
  assert sorted(os.listdir(tmp_path)) == ["a.bin", "t.txt"]


def test_new_file_gets_normal_permissions(tmp_path):
  path = tmp_path / "p.txt"
  io_utils.atomic_write_text(path, "x")
  with open(tmp_path / "ref.txt", "w") as f:
    f.write("x")
  assert os.stat(path).st_mode == os.stat(tmp_path / "ref.txt").st_mode


def test_write_json_converts_numpy(tmp_path):
  path = tmp_path / "m.json"
  obj = {"b": np.float32(1.5), "a": np.arange(3), "c": {"n": np.int64(7), "t": True},
         "d": np.bool_(False)}
  io_utils.atomic_write_json(path, obj)
  text = path.read_text()
  assert json.loads(text) == {"a": [0, 1, 2], "b": 1.5, "c": {"n": 7, "t": True},
                              "d": False}
  assert text.index('"a"') < text.index('"b"')  # sorted keys
  assert '\n  "a": [' in text  # indent=2
  assert text.endswith("}\n")


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
  path = tmp_path / "m.json"
  io_utils.atomic_write_json(path, {"version": 1})
  # The first key serialises (so the temp file has content) before the failure.
  with pytest.raises(TypeError):
    io_utils.atomic_write_json(path, {"a_ok": list(range(100)), "b_bad": Unserialisable()})
  assert json.loads(path.read_text()) == {"version": 1}
  assert os.listdir(tmp_path) == ["m.json"]
  # Same through the bytes writer and for a destination that did not exist.
  with pytest.raises(TypeError):
    io_utils.atomic_write_bytes(tmp_path / "new.bin", "not bytes")
  with pytest.raises(RuntimeError):
    with io_utils.atomic_open(tmp_path / "x.bin") as f:
      f.write(b"partial")
      raise RuntimeError("boom")
  assert os.listdir(tmp_path) == ["m.json"]


def test_savez_roundtrip_exact_path(tmp_path):
  path = tmp_path / "arrays.bin"  # no .npz suffix is added
  io_utils.atomic_savez(path, pose=np.ones((2, 17, 3), np.float32), path=np.arange(4))
  assert os.listdir(tmp_path) == ["arrays.bin"]
  with np.load(path) as data:
    assert data["pose"].shape == (2, 17, 3) and data["pose"].dtype == np.float32
    np.testing.assert_array_equal(data["path"], np.arange(4))


def test_append_jsonl(tmp_path):
  path = tmp_path / "log.jsonl"
  io_utils.append_jsonl(path, {"step": 1, "loss": np.float32(0.5)})
  io_utils.append_jsonl(path, {"step": 2, "loss": 0.25})
  with pytest.raises(TypeError):
    io_utils.append_jsonl(path, {"step": 3, "bad": Unserialisable()})
  lines = path.read_text().splitlines()
  assert [json.loads(line) for line in lines] == [{"step": 1, "loss": 0.5},
                                            {"step": 2, "loss": 0.25}]
  assert list(json.loads(lines[0])) == ["step", "loss"]  # key order kept
