"""Safe loading of pickled .npz members: plain data in, anything executable refused."""

import os
import pickle
import zipfile

import numpy as np
import pytest

from posemachine.data import safe_npz
from posemachine.data.sequences import DataError


class _Payload:
  def __init__(self, command):
    self.command = command

  def __reduce__(self):
    return (os.system, (self.command,))


class _EvalPayload:
  def __reduce__(self):
    return (eval, ("__import__('os').system('true')",))


def test_round_trip_of_plain_nesting(tmp_path):
  p = tmp_path / "ok.npz"
  data = {"S1": {"Walk": np.arange(12, dtype=np.float32).reshape(2, 2, 3)},
          "S2": {"Jog": np.zeros((1, 2, 3), np.float64)}}
  lists = {"S1": {"Walk": [np.ones((2, 2, 2), np.float32), None]}}
  meta = {"num_joints": np.int64(2), "layout_name": "h36m", "keypoints_symmetry": [[0], [1]]}
  np.savez_compressed(p, positions_3d=data, positions_2d=lists, metadata=meta,
                      plain=np.arange(3))
  out = safe_npz.load_npz(p)
  np.testing.assert_array_equal(out["positions_3d"]["S1"]["Walk"], data["S1"]["Walk"])
  assert out["positions_2d"]["S1"]["Walk"][1] is None
  assert out["metadata"]["num_joints"] == 2 and out["metadata"]["layout_name"] == "h36m"
  np.testing.assert_array_equal(out["plain"], np.arange(3))
  safe_npz.check_pose_dict(out["positions_3d"], str(p), "positions_3d", lists=False,
                           joints=2, dims=(3,))
  safe_npz.check_pose_dict(out["positions_2d"], str(p), "positions_2d", lists=True,
                           joints=2, dims=(2,))
  safe_npz.check_plain(out["metadata"], "metadata")


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_every_pickle_protocol_of_arrays_loads(tmp_path, protocol):
  arr = np.asanyarray({"S1": {"a": np.ones((2, 3, 3), np.float32)}})
  p = tmp_path / "p.npz"
  header = {"descr": "|O", "fortran_order": False, "shape": ()}
  with zipfile.ZipFile(p, "w") as zf:
    with zf.open("positions_3d.npy", "w") as f:
      np.lib.format.write_array_header_1_0(f, header)  # pylint: disable=no-member
      f.write(b"")
      pickle.dump(arr, f, protocol=protocol)
  out = safe_npz.load_npz(p)
  assert out["positions_3d"]["S1"]["a"].shape == (2, 3, 3)


@pytest.mark.parametrize("payload", ["system", "eval", "top"])
def test_malicious_pickles_are_refused_before_running(tmp_path, payload):
  marker = tmp_path / "marker"
  p = tmp_path / "evil.npz"
  if payload == "system":  # nested inside the expected dict structure.
    np.savez(p, positions_3d={"S1": {"Walk": _Payload(f"touch {marker}")}})
  elif payload == "eval":
    np.savez(p, positions_3d={"S1": {"Walk": [np.zeros((1, 1, 2)), _EvalPayload()]}})
  else:  # the member's whole pickle is the payload.
    with zipfile.ZipFile(p, "w") as zf:
      with zf.open("positions_3d.npy", "w") as f:
        np.lib.format.write_array_header_1_0(  # pylint: disable=no-member
            f, {"descr": "|O", "fortran_order": False, "shape": ()})
        pickle.dump(_Payload(f"touch {marker}"), f, protocol=2)
  with pytest.raises(DataError, match=r"evil.npz \(member 'positions_3d'\): refusing to "
                     r"unpickle '(posix|os|nt|builtins)\.(system|eval)'"):
    safe_npz.load_npz(p)
  assert not marker.exists()


def test_other_objects_and_subclasses_are_refused(tmp_path):
  p = tmp_path / "masked.npz"
  np.savez(p, positions_3d={"S1": {"a": np.ma.masked_array(np.zeros((1, 2, 3)))}})
  with pytest.raises(DataError, match="refusing to unpickle 'numpy.ma.core"):
    safe_npz.load_npz(p)
  p = tmp_path / "set.npz"
  np.savez(p, positions_3d={"S1": {"a": {1, 2}}})
  members = safe_npz.load_npz(p)  # a set needs no global, but is not the expected nesting:
  with pytest.raises(DataError, match=r"subject 'S1', action 'a': expected a numeric array, "
                     r"got set"):
    safe_npz.check_pose_dict(members["positions_3d"], str(p), "positions_3d", lists=False,
                             joints=None, dims=(3,))


def test_wrong_nesting_shapes_and_dtypes(tmp_path):
  check = lambda obj, **kw: safe_npz.check_pose_dict(
      obj, "f.npz", "positions_3d", **{"lists": False, "joints": 32, "dims": (3,), **kw})
  with pytest.raises(DataError, match="expected a dict subject -> action -> data, got list"):
    check([1])
  with pytest.raises(DataError, match="subject 'S1': expected a dict action -> data, got "
                     "ndarray"):
    check({"S1": np.zeros((1, 32, 3))})
  with pytest.raises(DataError, match=r"action 'a': 16 joints \(shape \(4, 16, 3\)\), "
                     "expected 32"):
    check({"S1": {"a": np.zeros((4, 16, 3))}})
  with pytest.raises(DataError, match=r"action 'a': shape \(4, 32\), expected \(frames, "
                     r"joints, 3\)"):
    check({"S1": {"a": np.zeros((4, 32))}})
  with pytest.raises(DataError, match="dtype <U1"):
    check({"S1": {"a": np.array([[["x"] * 3] * 32])}})
  with pytest.raises(DataError, match="camera 1: expected a numeric array, got str"):
    check({"S1": {"a": [np.zeros((1, 32, 2)), "x"]}}, lists=True, dims=(2,))
  with pytest.raises(DataError, match="action key 3 is not a string"):
    check({"S1": {3: np.zeros((1, 32, 3))}})


def test_truncated_and_missing_files(tmp_path):
  p = tmp_path / "t.npz"
  np.savez_compressed(p, positions_3d={"S1": {"a": np.random.rand(200, 32, 3)}})
  data = p.read_bytes()
  for cut in (10, len(data) // 2, len(data) - 30):
    q = tmp_path / f"cut{cut}.npz"
    q.write_bytes(data[:cut])
    with pytest.raises(DataError, match=f"cut{cut}.npz: cannot read it as an .npz file"):
      safe_npz.load_npz(q)
  with pytest.raises(DataError, match="nothere.npz: file not found"):
    safe_npz.load_npz(tmp_path / "nothere.npz")
