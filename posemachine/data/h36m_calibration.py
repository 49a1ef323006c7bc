"""Human3.6M camera calibration: read it from the user's file, or convert VideoPose3D's.

The package ships no Human3.6M calibration: it is part of the dataset and comes from the
user's copy. The loader reads `config.data.h36m.cameras` (default
`<config.data.dir>/h36m_cameras.json`), a JSON file:

  {"cameras": {"S1": {"54138969": {"R": 3x3, "T": [3], "f": [2], "c": [2], "k": [3],
                                   "p": [2], "w": int, "h": int}, ...}, ...}}

R is the camera-to-world rotation (row-major) and T the camera centre in world metres,
so x_world = R @ x_cam + T; f, c in pixels; k radial (k1, k2, k3) and p tangential
(p1, p2) distortion as in `geometry.project_to_2d`; w x h the image size in pixels.

Make it once from VideoPose3D (whose scripts made the .npz files the loader reads):

  python -m posemachine.data.h36m_calibration \
      --videopose3d=/path/to/VideoPose3D/common/h36m_dataset.py --out=/data/h36m/h36m_cameras.json

The converter reads the two literal tables of that file (`h36m_cameras_intrinsic_params`,
`h36m_cameras_extrinsic_params`: orientation quaternion w, x, y, z camera-to-world and
translation in millimetres) with `ast.literal_eval`: nothing in it is imported or run.
"""

from __future__ import annotations

import ast
import functools
import json
import math
import os

import numpy as np

from posemachine import io_utils
from posemachine.data.sequences import DataError

FILE_NAME = "h36m_cameras.json"
FIELDS = {"R": (3, 3), "T": (3,), "f": (2,), "c": (2,), "k": (3,), "p": (2,)}
HELP = """\
Human3.6M camera calibration is read from {path}
(config.data.h36m.cameras; default <config.data.dir>/h36m_cameras.json). The package ships
none: make it once from VideoPose3D's camera tables with
  python -m posemachine.data.h36m_calibration \\
      --videopose3d=/path/to/VideoPose3D/common/h36m_dataset.py --out={path}
or write it yourself in the format of posemachine/data/h36m_calibration.py's docstring."""


def quaternion_to_matrix(q) -> np.ndarray:
  """Unit quaternion (w, x, y, z) -> (3, 3) rotation matrix (active, right-handed)."""
  w, x, y, z = np.asarray(q, np.float64) / np.linalg.norm(q)
  return np.array([
      [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
      [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
      [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def cameras_path(config) -> str:
  """The calibration file a config reads: data.h36m.cameras, else data.dir/FILE_NAME."""
  explicit = str(config.data.h36m.get("cameras", "") or "")
  if explicit:
    return explicit
  return os.path.join(str(config.data.dir or ""), FILE_NAME)


def validate(table, where: str) -> dict:
  """Checks a parsed {"cameras": ...} table; returns subject -> camera id -> camera dict
  of NumPy arrays (see `read`). DataError naming the field otherwise."""
  if not isinstance(table, dict) or not isinstance(table.get("cameras"), dict):
    raise DataError(f"{where}: expected a JSON object with a 'cameras' object "
                    "(subject -> camera id -> calibration).")
  out = {}
  for subject, cams in table["cameras"].items():
    if not isinstance(cams, dict):
      raise DataError(f"{where}: cameras[{subject!r}] is a {type(cams).__name__}, "
                      "expected an object of camera ids.")
    out[subject] = {}
    for cam_id, c in cams.items():
      at = f"{where}: cameras[{subject!r}][{cam_id!r}]"
      if not isinstance(c, dict):
        raise DataError(f"{at} is a {type(c).__name__}, expected an object.")
      missing = [k for k in (*FIELDS, "w", "h") if k not in c]
      if missing:
        raise DataError(f"{at}: missing field(s) {missing}; expected {sorted(FIELDS)} + "
                        "['w', 'h'].")
      cam = {}
      for k, shape in FIELDS.items():
        try:
          a = np.asarray(c[k], np.float64)
        except (TypeError, ValueError) as e:
          raise DataError(f"{at}['{k}'] is not numeric ({e}).") from None
        if a.shape != shape or not np.isfinite(a).all():
          raise DataError(f"{at}['{k}'] has shape {a.shape}{'' if np.isfinite(a).all() else ' and non-finite values'}; "
                          f"expected finite numbers of shape {shape}.")
        cam[k] = a
      if not np.allclose(cam["R"] @ cam["R"].T, np.eye(3), atol=1e-4):
        raise DataError(f"{at}['R'] is not a rotation matrix (R R^T != I).")
      for k in ("w", "h"):
        v = c[k]
        if (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
            or not v > 0):
          raise DataError(f"{at}['{k}'] = {v!r}; expected a positive image size in pixels.")
        cam[k] = float(v)
      if np.linalg.norm(cam["T"]) > 100:
        raise DataError(f"{at}['T'] = {cam['T'].tolist()} is {np.linalg.norm(cam['T']):.0f} m "
                        "from the origin; expected metres (millimetres? divide by 1000).")
      if (cam["f"] <= 0).any():
        raise DataError(f"{at}['f'] = {cam['f'].tolist()}; expected positive focal lengths.")
      out[subject][str(cam_id)] = cam
  return out


@functools.lru_cache(maxsize=4)
def _read_cached(path: str, stamp) -> dict:
  del stamp  # part of the cache key only.
  try:
    with open(path, "rb") as f:
      table = json.loads(f.read().decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DataError(f"{path}: not a valid JSON calibration file ({e}).") from None
  return validate(table, path)


def read(path: str) -> dict:
  """subject -> camera id -> {R (3, 3), T (3,) metres, f, c (2,) px, k (3,), p (2,), w, h};
  DataError with instructions when the file is missing or malformed."""
  if not os.path.isfile(path):
    raise DataError(f"No Human3.6M camera calibration at {os.path.abspath(path)}.\n"
                    + HELP.format(path=path))
  st = os.stat(path)
  return _read_cached(os.path.abspath(path), (st.st_mtime_ns, st.st_size))


def camera(cameras: dict, subject: str, camera_id: str, path: str = "the calibration") -> dict:
  """One camera of `read`'s table (a copy), DataError naming what is missing."""
  if subject not in cameras:
    raise DataError(f"{path}: no calibration for subject {subject!r}; calibrated subjects: "
                    f"{sorted(cameras)}.")
  if camera_id not in cameras[subject]:
    raise DataError(f"{path}: no camera {camera_id!r} for {subject}; cameras: "
                    f"{sorted(cameras[subject])}.")
  return dict(cameras[subject][camera_id])


def _literal_tables(source: str, where: str) -> tuple[list, dict]:
  """The two literal camera tables of VideoPose3D's common/h36m_dataset.py."""
  try:
    tree = ast.parse(source, where)
  except SyntaxError as e:
    raise DataError(f"{where}: not Python source ({e}).") from None
  found = {}
  for node in tree.body:
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
      name = getattr(node.targets[0], "id", None)
      if name in ("h36m_cameras_intrinsic_params", "h36m_cameras_extrinsic_params"):
        try:
          found[name] = ast.literal_eval(node.value)
        except ValueError as e:
          raise DataError(f"{where}: {name} is not a literal table ({e}).") from None
  missing = [n for n in ("h36m_cameras_intrinsic_params", "h36m_cameras_extrinsic_params")
             if n not in found]
  if missing:
    raise DataError(f"{where}: no {missing}; expected VideoPose3D's common/h36m_dataset.py.")
  return found["h36m_cameras_intrinsic_params"], found["h36m_cameras_extrinsic_params"]


def from_videopose3d(path: str) -> dict:
  """{"about": ..., "cameras": ...} (this module's format) from VideoPose3D's
  common/h36m_dataset.py. Subjects whose extrinsics are empty there (S2-S4) are left out."""
  try:
    with open(path, encoding="utf-8") as f:
      source = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"Cannot read {path}: {e}") from None
  intrinsics, extrinsics = _literal_tables(source, path)
  if not isinstance(intrinsics, list) or not isinstance(extrinsics, dict):
    raise DataError(f"{path}: expected a list of intrinsics and a dict of extrinsics.")
  cameras = {}
  try:
    for subject, views in extrinsics.items():
      if len(views) != len(intrinsics):
        raise DataError(f"{path}: {subject} has {len(views)} extrinsics for "
                        f"{len(intrinsics)} cameras.")
      if not all(views):
        continue
      cameras[subject] = {}
      for intr, extr in zip(intrinsics, views):
        cameras[subject][str(intr["id"])] = {
            "R": quaternion_to_matrix(extr["orientation"]).tolist(),
            "T": (np.asarray(extr["translation"], np.float64) / 1000.0).tolist(),
            "f": list(intr["focal_length"]), "c": list(intr["center"]),
            "k": list(intr["radial_distortion"]), "p": list(intr["tangential_distortion"]),
            "w": int(intr["res_w"]), "h": int(intr["res_h"])}
  except (KeyError, TypeError) as e:
    raise DataError(f"{path}: unexpected camera table layout (missing or bad {e}).") from None
  table = {"about": f"Human3.6M calibration converted from {os.path.abspath(path)} by "
                    "posemachine.data.h36m_calibration; x_world = R @ x_cam + T (metres).",
           "cameras": cameras}
  validate(table, path)
  return table


def write(table: dict, path: str) -> None:
  """Writes a calibration table atomically."""
  io_utils.atomic_write_text(path, json.dumps(table, indent=1) + "\n")


def main(argv=None) -> int:
  import argparse  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(
      prog="python -m posemachine.data.h36m_calibration",
      description="Convert VideoPose3D's Human3.6M camera tables into the JSON the "
                  "Human3.6M loader reads.")
  parser.add_argument("--videopose3d", required=True,
                      help="path to VideoPose3D's common/h36m_dataset.py")
  parser.add_argument("--out", required=True, help="output JSON, e.g. /data/h36m/" + FILE_NAME)
  args = parser.parse_args(argv)
  try:
    table = from_videopose3d(args.videopose3d)
    write(table, args.out)
  except DataError as e:
    parser.exit(2, f"{parser.prog}: error: {e}\n")
  except OSError as e:
    parser.exit(2, f"{parser.prog}: error: cannot write {args.out}: {e.strerror or e}\n")
  n = sum(len(v) for v in table["cameras"].values())
  print(f"wrote {args.out}: {n} cameras of subjects {sorted(table['cameras'])}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
