"""Users' 2D keypoints: reading, COCO -> Human3.6M mapping, gap filling, masking.

Inputs (one person per frame):
  * COCO results JSON: a list (or {"annotations": [...]}) of detections
    {"image_id": frame, "keypoints": [x1, y1, s1, ..., x17, y17, s17], "score": s}, the
    COCO-17 keypoints in pixels with per-keypoint scores. `image_id` is the frame number
    (an int, or a string whose last run of digits is the frame number, "frame_0042.jpg");
    the clip spans the smallest to the largest frame number and frames with no detection
    are missed detections (filled, see below).
  * A (T, 17, 3) [x, y, score] or (T, 17, 2) [x, y] array in a .npy, or in a .npz under
    'keypoints' (or its only array), with optional 'scores' (T, 17) and 'frame_ids' (T,).

Joint orders: `fmt='coco'` (COCO-17, mapped to Human3.6M-17 here) or `fmt='h36m'`
(already in the order of `skeleton.JOINT_NAMES`).

Handling of imperfect detections (all documented in README "Use it on your own keypoints"):
  * Several people on a frame: `multi_person='highest'` keeps the detection with the highest
    "score" (the mean keypoint score where a detection has none) and warns, naming the frames;
    `multi_person='error'` raises `DataError` naming the file and frame.
  * Missing: a keypoint is missing when its score is below `min_confidence`, when its x or y
    is NaN/Inf or its score NaN (`on_nan='missing'`, the default, warns; `on_nan='error'`
    raises naming the file, frame and joint), or when its frame has no detection.
  * Missing joints are filled per joint by linear interpolation in time between the nearest
    frames where that joint was detected (held constant before the first and after the last)
    and passed to the model with confidence 0 (masked); detected joints keep their score.
    A joint never detected in the whole clip takes its parent's (filled) position, with
    confidence 0 and a warning; if the pelvis (both hips) is never detected, DataError.

COCO -> Human3.6M-17 (pixels; c = confidence, a joint is missing if any input is missing):
  pelvis   = (l_hip + r_hip) / 2                            c = min of the two
  r_hip, r_knee, r_ankle, l_hip, l_knee, l_ankle, l_shoulder, l_elbow, l_wrist,
  r_shoulder, r_elbow, r_wrist: the COCO joints of the same name
  thorax   = (l_shoulder + r_shoulder) / 2                  c = min of the two
  spine    = (pelvis + thorax) / 2                          c = min of the two
  neck     = nose  (Human3.6M's "neck/nose" joint sits at the nose)
  head     = f + HEAD_EXTENSION * (f - thorax), f = the mean of the detected eyes and ears
             (those with score >= min_confidence), c = the highest of their scores; missing
             when no eye or ear is detected. Human3.6M's head joint is about 0.22 m above the
             thorax, the eyes and ears of an adult about 0.19 m above the shoulder line: 0.2.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np

from posemachine import skeleton
from posemachine.errors import DataError

COCO_JOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
COCO_PARENTS: tuple[int, ...] = (-1, 0, 0, 1, 2, 0, 0, 5, 6, 7, 8, 5, 6, 11, 12, 13, 14)
COCO_LEFT: tuple[int, ...] = (1, 3, 5, 7, 9, 11, 13, 15)
COCO_RIGHT: tuple[int, ...] = (2, 4, 6, 8, 10, 12, 14, 16)
# H36M joints that are a COCO joint as is: H36M index -> COCO index.
H36M_FROM_COCO_DIRECT: dict[int, int] = {
    1: 12, 2: 14, 3: 16, 4: 11, 5: 13, 6: 15, 9: 0,
    11: 5, 12: 7, 13: 9, 14: 6, 15: 8, 16: 10}
HEAD_EXTENSION = 0.2
FORMATS = ("coco", "h36m")
NUM_KEYPOINTS = 17
_FACE = (1, 2, 3, 4)  # COCO eyes and ears.


def joint_names(fmt: str) -> tuple[str, ...]:
  _check_format(fmt)
  return COCO_JOINT_NAMES if fmt == "coco" else skeleton.JOINT_NAMES


def _check_format(fmt):
  if fmt not in FORMATS:
    raise DataError(f"Unknown keypoint format {fmt!r}; expected one of {list(FORMATS)}.")


@dataclasses.dataclass
class Keypoints:
  """One person's 2D keypoints over a clip, as read (input joint order).

  Attributes:
    xy: (T, 17, 2) float64 pixels; NaN where the keypoint is missing.
    score: (T, 17) float64 detector scores clipped to [0, 1]; 0 where missing.
    frame_ids: (T,) int64 frame number of each row.
    source: the file (for messages).
    fmt: 'coco' | 'h36m', the joint order of xy/score.
    warnings: human-readable notes on what was repaired (several people, NaN, gaps).
  """
  xy: np.ndarray
  score: np.ndarray
  frame_ids: np.ndarray
  source: str
  fmt: str = "coco"
  warnings: list = dataclasses.field(default_factory=list)

  @property
  def num_frames(self) -> int:
    return len(self.frame_ids)


# ----------------------------------------------------------------------------- reading


_MAX_FRAME = 2**53  # frame numbers beyond this are not frame numbers (and overflow int64).


def _frame_number(image_id, source, entry):
  n = None
  if isinstance(image_id, (int, np.integer)) and not isinstance(image_id, bool):
    n = int(image_id)
  elif isinstance(image_id, float) and image_id.is_integer():
    n = int(image_id)
  elif isinstance(image_id, str):
    digits = re.findall(r"\d+", image_id)
    if digits:
      n = int(digits[-1][-20:])
  if n is not None and abs(n) < _MAX_FRAME:
    return n
  raise DataError(f"{source}: detection {entry} has image_id {image_id!r}; expected the frame "
                  "number (an integer, or a string ending in the frame number).")


def _detection_score(det, kps):
  s = det.get("score")
  if isinstance(s, (int, float)) and not isinstance(s, bool) and np.isfinite(s):
    return float(s)
  return float(np.nanmean(kps[:, 2])) if np.isfinite(kps[:, 2]).any() else -np.inf


def read_coco_json(path: str, multi_person: str = "highest") -> Keypoints:
  """Reads a COCO results JSON of one person per frame (see the module docstring).

  Args:
    path: the .json file.
    multi_person: 'highest' (keep the best-scoring detection, warn) | 'error'.
  Returns:
    Keypoints in COCO order with NaN kept as read (see `check_finite`).
  Raises:
    DataError: unreadable file, no detections, malformed entries, wrong keypoint count, or
      several people on a frame with multi_person='error'.
  """
  if multi_person not in ("highest", "error"):
    raise DataError(f"multi_person={multi_person!r}; expected 'highest' or 'error'.")
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except OSError as e:
    raise DataError(f"{path}: cannot read ({e}).") from e
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DataError(f"{path}: not valid JSON ({e}).") from e
  if isinstance(data, dict):
    if "annotations" not in data:
      raise DataError(f"{path}: expected a list of detections (COCO results format) or a dict "
                      f"with 'annotations'; got a dict with keys {sorted(data)[:10]}.")
    data = data["annotations"]
  if not isinstance(data, list):
    raise DataError(f"{path}: expected a list of detections, got {type(data).__name__}.")
  if not data:
    raise DataError(f"{path}: no detections (empty list); nothing to lift.")
  by_frame: dict[int, list] = {}
  for i, det in enumerate(data):
    if not isinstance(det, dict) or "image_id" not in det or "keypoints" not in det:
      raise DataError(f"{path}: detection {i} must be an object with 'image_id' and "
                      f"'keypoints'; got {str(det)[:100]}.")
    frame = _frame_number(det["image_id"], path, i)
    kps = det["keypoints"]
    if not isinstance(kps, list) or len(kps) % 3:
      raise DataError(f"{path}: detection {i} (frame {frame}): 'keypoints' must be a flat list "
                      f"[x1, y1, s1, ...] of {3 * NUM_KEYPOINTS} numbers.")
    if len(kps) != 3 * NUM_KEYPOINTS:
      raise DataError(
          f"{path}: detection {i} (frame {frame}) has {len(kps)} values = {len(kps) // 3} "
          f"keypoints; expected {3 * NUM_KEYPOINTS} = {NUM_KEYPOINTS} keypoints x (x, y, score)"
          " (COCO-17 or Human3.6M-17; for COCO-WholeBody's 133 keypoints keep the first 17).")
    bad = next((v for v in kps if v is not None and (isinstance(v, bool) or
                                                     not isinstance(v, (int, float)))), None)
    if bad is not None:
      raise DataError(f"{path}: detection {i} (frame {frame}): keypoint value {bad!r:.40} is "
                      "not a number.")
    try:
      arr = np.array([np.nan if v is None else v for v in kps], np.float64)
    except OverflowError:
      raise DataError(f"{path}: detection {i} (frame {frame}): a keypoint value is too large "
                      "for a float.") from None
    by_frame.setdefault(frame, []).append((_detection_score(det, arr.reshape(17, 3)),
                                           arr.reshape(NUM_KEYPOINTS, 3), i))
  warnings = []
  crowded = sorted(f for f, dets in by_frame.items() if len(dets) > 1)
  if crowded:
    counts = {f: len(by_frame[f]) for f in crowded[:5]}
    if multi_person == "error":
      f = crowded[0]
      raise DataError(f"{path}: frame {f} has {len(by_frame[f])} detections; this command lifts "
                      f"one person per frame ({len(crowded)} frames have several). Keep one "
                      "track per file, or use --multi_person=highest.")
    warnings.append(f"{len(crowded)} frame(s) have several people (frame: count "
                    f"{counts}{' ...' if len(crowded) > 5 else ''}); kept the highest-scoring "
                    "detection on each.")
  first, last = min(by_frame), max(by_frame)
  span = last - first + 1
  if len(by_frame) < 0.1 * span:
    raise DataError(f"{path}: image_id spans frames {first}..{last} ({span} frames) but only "
                    f"{len(by_frame)} have detections; image_id must be the frame number.")
  xy = np.full((span, NUM_KEYPOINTS, 2), np.nan)
  score = np.zeros((span, NUM_KEYPOINTS))
  for frame, dets in by_frame.items():
    best = max(dets, key=lambda d: (d[0], -d[2]))[1]
    xy[frame - first] = best[:, :2]
    score[frame - first] = best[:, 2]
  missing = span - len(by_frame)
  if missing:
    warnings.append(f"{missing} of {span} frames have no detection (filled by interpolation).")
  return Keypoints(xy=xy, score=score, frame_ids=np.arange(first, last + 1, dtype=np.int64),
                   source=path, fmt="coco", warnings=warnings)


def _load_arrays(path: str):
  """(keypoints, scores or None, frame_ids or None) as stored in a .npy / .npz."""
  loaded = np.load(path, allow_pickle=False)
  if not isinstance(loaded, np.lib.npyio.NpzFile):
    return loaded, None, None
  with loaded:
    keys = list(loaded.keys())
    if "keypoints" in keys:
      arr = loaded["keypoints"]
    elif len(keys) == 1:
      arr = loaded[keys[0]]
    else:
      raise DataError(f"{path}: expected an array 'keypoints' (or a single array); found "
                      f"{keys}.")
    scores = frame_ids = None
    for name in ("scores", "confidence"):
      if name in keys:
        scores = loaded[name]
    if "frame_ids" in keys:
      frame_ids = loaded["frame_ids"]
  return arr, scores, frame_ids


def read_array(path: str) -> Keypoints:
  """Reads (T, 17, 3) [x, y, score] or (T, 17, 2) keypoints from a .npy or .npz (pixels)."""
  try:
    arr, scores, frame_ids = _load_arrays(path)
  except DataError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (zip, zlib, .npy format errors)
    raise DataError(f"{path}: cannot read as a NumPy file without pickles "
                    f"({type(e).__name__}: {e}).") from None
  for name, a in (("keypoints", arr), ("scores", scores)):
    if a is not None and a.dtype.kind not in "fiu":
      raise DataError(f"{path}: {name} have dtype {a.dtype}; expected numbers.")
  if scores is not None:
    scores = np.asarray(scores, np.float64)
  arr = np.asarray(arr, np.float64)
  if arr.ndim != 3 or arr.shape[1] != NUM_KEYPOINTS or arr.shape[2] not in (2, 3):
    raise DataError(f"{path}: keypoints have shape {arr.shape}; expected (T, {NUM_KEYPOINTS}, 3)"
                    f" [x, y, score] or (T, {NUM_KEYPOINTS}, 2) pixels.")
  if arr.shape[0] == 0:
    raise DataError(f"{path}: no frames (shape {arr.shape}).")
  t = arr.shape[0]
  if scores is None:
    scores = arr[..., 2] if arr.shape[2] == 3 else np.ones((t, NUM_KEYPOINTS))
  if scores.shape != (t, NUM_KEYPOINTS):
    raise DataError(f"{path}: scores have shape {scores.shape}; expected ({t}, {NUM_KEYPOINTS}).")
  if frame_ids is None:
    frame_ids = np.arange(t)
  if frame_ids.shape != (t,) or not np.issubdtype(frame_ids.dtype, np.integer):
    raise DataError(f"{path}: frame_ids must be ({t},) integers; got {frame_ids.dtype} "
                    f"{frame_ids.shape}.")
  step = np.diff(frame_ids.astype(np.int64))
  if (step <= 0).any():
    i = int(np.argmax(step <= 0))
    raise DataError(f"{path}: frame_ids must increase strictly (one row per frame); row "
                    f"{i + 1} has frame {int(frame_ids[i + 1])} after {int(frame_ids[i])}.")
  return Keypoints(xy=arr[..., :2].copy(), score=np.array(scores, np.float64),
                   frame_ids=frame_ids.astype(np.int64), source=path)


def read_keypoints(path: str, fmt: str = "coco", multi_person: str = "highest") -> Keypoints:
  """Reads a .json (COCO results) or .npy/.npz keypoint file; see the module docstring."""
  _check_format(fmt)
  if not os.path.isfile(path):
    what = ("is a directory" if os.path.isdir(path) else
            "is not a regular file" if os.path.exists(path) else "no such file")
    raise DataError(f"{path or '(empty path)'}: {what}.")
  ext = os.path.splitext(path)[1].lower()
  if ext == ".json":
    kp = read_coco_json(path, multi_person)
  elif ext in (".npy", ".npz"):
    kp = read_array(path)
  else:
    raise DataError(f"{path}: unknown keypoint file type {ext!r}; expected .json (COCO "
                    "results), .npy or .npz.")
  kp.fmt = fmt
  return kp


# --------------------------------------------------------------------------- validation


def check_finite(kp: Keypoints, on_nan: str = "missing") -> Keypoints:
  """Marks NaN/Inf keypoints as missing (score 0, xy NaN), or raises on them.

  Args:
    on_nan: 'missing' (warn and treat as missed detections) | 'error' (DataError naming the
      file, frame and joint of the first one).
  """
  if on_nan not in ("missing", "error"):
    raise DataError(f"on_nan={on_nan!r}; expected 'missing' or 'error'.")
  names = joint_names(kp.fmt)
  detected = kp.score > 0
  bad = ~np.isfinite(kp.xy).all(-1) | ~np.isfinite(kp.score)
  # Rows of a frame with no detection are NaN by construction: not an input error.
  bad &= detected | ~np.isfinite(kp.score)
  if bad.any():
    t, j = np.argwhere(bad)[0]
    where = (f"frame {kp.frame_ids[t]} (row {t}), joint {j} ({names[j]}): x, y, score = "
             f"{kp.xy[t, j, 0]}, {kp.xy[t, j, 1]}, {kp.score[t, j]}")
    if on_nan == "error":
      raise DataError(f"{kp.source}: non-finite keypoint at {where}.")
    kp.warnings.append(f"{int(bad.sum())} keypoint(s) are NaN/Inf, first at {where}; treated "
                       "as missed detections.")
  missing = bad | ~detected
  above = ~missing & (kp.score > 1.0)
  if above.any():
    kp.warnings.append(f"{int(above.sum())} score(s) above 1 (largest "
                       f"{float(kp.score[above].max()):g}) were clipped to 1: are the scores "
                       "in [0, 1]?")
  kp.xy = np.where(missing[..., None], np.nan, kp.xy)
  kp.score = np.where(missing, 0.0, np.clip(kp.score, 0.0, 1.0))
  return kp


# ------------------------------------------------------------------------------ mapping


def coco_to_h36m(xy, score, min_confidence: float = 0.3):
  """Maps COCO-17 keypoints to Human3.6M-17 (see the module docstring for each joint).

  Args:
    xy: (..., 17, 2) COCO keypoints, pixels; NaN where missing.
    score: (..., 17) scores in [0, 1].
    min_confidence: keypoints scored below it count as missing.
  Returns:
    (xy (..., 17, 2) H36M order, NaN where missing; score (..., 17), 0 where missing).
  """
  xy = np.asarray(xy, np.float64)
  score = np.asarray(score, np.float64)
  ok = (score >= min_confidence) & np.isfinite(xy).all(-1)
  xy = np.where(ok[..., None], xy, np.nan)
  score = np.where(ok, score, 0.0)
  out = np.full(xy.shape, np.nan)
  conf = np.zeros(score.shape)
  for h, c in H36M_FROM_COCO_DIRECT.items():
    out[..., h, :], conf[..., h] = xy[..., c, :], score[..., c]
  def mid(a, ca, b, cb):
    return (a + b) / 2, np.minimum(ca, cb)
  out[..., 0, :], conf[..., 0] = mid(xy[..., 11, :], score[..., 11], xy[..., 12, :],
                                     score[..., 12])
  out[..., 8, :], conf[..., 8] = mid(xy[..., 5, :], score[..., 5], xy[..., 6, :], score[..., 6])
  out[..., 7, :], conf[..., 7] = mid(out[..., 0, :], conf[..., 0], out[..., 8, :], conf[..., 8])
  face, face_ok = xy[..., _FACE, :], ok[..., _FACE]
  n = face_ok.sum(-1)
  centre = np.where(face_ok[..., None], face, 0.0).sum(-2) / np.maximum(n, 1)[..., None]
  centre = np.where((n > 0)[..., None], centre, np.nan)
  out[..., 10, :] = centre + HEAD_EXTENSION * (centre - out[..., 8, :])
  conf[..., 10] = np.where(n > 0, score[..., _FACE].max(-1), 0.0)
  missing = ~np.isfinite(out).all(-1)
  return np.where(missing[..., None], np.nan, out), np.where(missing, 0.0, conf)


def h36m_to_coco_face(pose_3d):
  """Eyes and ears for a Human3.6M-17 pose, for tests and demos (not a detector model).

  The face points sit at thorax + (head - thorax) / (1 + HEAD_EXTENSION) (the inverse of
  the head rule), spread sideways along the shoulder line: eyes +-0.032 m and 0.03 m in
  front of the head axis, ears +-0.075 m and 0.03 m behind it.

  Args:
    pose_3d: (..., 17, 3) joints, metres, camera frame (x right, y down, z forward).
  Returns:
    (..., 4, 3) left eye, right eye, left ear, right ear.
  """
  p = np.asarray(pose_3d, np.float64)
  thorax, head = p[..., 8, :], p[..., 10, :]
  centre = thorax + (head - thorax) / (1 + HEAD_EXTENSION)
  left = p[..., 11, :] - p[..., 14, :]
  left /= np.linalg.norm(left, axis=-1, keepdims=True)
  up = head - thorax
  up -= (up * left).sum(-1, keepdims=True) * left
  up /= np.linalg.norm(up, axis=-1, keepdims=True)
  fwd = np.cross(left, up)  # body frame (left, up, forward) is right-handed.
  pts = [centre + 0.032 * left + 0.03 * fwd, centre - 0.032 * left + 0.03 * fwd,
         centre + 0.075 * left - 0.03 * fwd, centre - 0.075 * left - 0.03 * fwd]
  return np.stack(pts, -2)


def h36m_to_coco(pose):
  """Human3.6M-17 joints (..., 17, D) -> COCO-17 (..., 17, D) for the joints COCO shares.

  The eyes and ears (COCO 1-4) are not in Human3.6M: they are NaN here (see
  `h36m_to_coco_face` for synthetic ones).
  """
  pose = np.asarray(pose, np.float64)
  out = np.full(pose.shape, np.nan)
  for h, c in H36M_FROM_COCO_DIRECT.items():
    out[..., c, :] = pose[..., h, :]
  return out


# ---------------------------------------------------------------------------- filling


def fill_missing(xy, conf, source: str = "keypoints", frame_ids=None):
  """Fills missing joints by per-joint linear interpolation over time (Human3.6M order).

  Args:
    xy: (T, 17, 2) pixels, NaN where missing.
    conf: (T, 17) confidences, 0 where missing.
    source: for messages.
    frame_ids: (T,) frame numbers for messages (default 0..T-1).
  Returns:
    (xy (T, 17, 2) all finite, conf (T, 17) with 0 on filled joints, filled (T, 17) bool,
    warnings list of str).
  Raises:
    DataError: when the pelvis is missing on every frame.
  """
  xy = np.array(xy, np.float64)
  conf = np.array(conf, np.float64)
  t = xy.shape[0]
  frame_ids = np.arange(t) if frame_ids is None else np.asarray(frame_ids)
  filled = ~np.isfinite(xy).all(-1)
  conf = np.where(filled, 0.0, conf)
  warnings = []
  frames = np.arange(t)
  for j, parent in enumerate(skeleton.PARENTS):
    ok = ~filled[:, j]
    if ok.all():
      continue
    name = skeleton.JOINT_NAMES[j]
    if not ok.any():
      if parent < 0:
        seen = {n: int((~filled[:, skeleton.JOINT_NAMES.index(n)]).sum())
                for n in ("right_hip", "left_hip")}
        raise DataError(
            f"{source}: the pelvis (joint 0; from COCO keypoints the midpoint of both hips) is "
            f"missing on all {t} frames (right hip seen on {seen['right_hip']}, left hip on "
            f"{seen['left_hip']} frame(s), above --min_confidence). Lifting needs it on at "
            "least one frame: from COCO input both hips on one frame; lower --min_confidence "
            "if the detector scores them low.")
      warnings.append(f"joint {j} ({name}) is never detected; placed at its parent "
                      f"{skeleton.JOINT_NAMES[parent]} with confidence 0.")
      xy[:, j] = xy[:, parent]
      continue
    for d in range(2):
      xy[:, j, d] = np.interp(frames, frames[ok], xy[ok, j, d])
    # Longest run of filled frames, for the warning.
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], (~ok).astype(int), [0]]))))[::2]
    if runs.max() > 25:
      first = int(np.argmax(~ok))
      warnings.append(f"joint {j} ({name}) is missing for up to {runs.max()} frames in a row "
                      f"(first missing at frame {frame_ids[first]}); linearly interpolated.")
  return xy, conf, filled, warnings


def normalize_pixels(xy, image_size):
  """Pixels (..., 2) -> normalised screen coordinates u / w * 2 - [1, h / w] (NumPy)."""
  w, h = (float(v) for v in image_size)
  return np.asarray(xy, np.float64) / w * 2 - np.array([1.0, h / w])


@dataclasses.dataclass
class Prepared:
  """Model-ready keypoints of a clip (Human3.6M-17 order).

  Attributes:
    xy: (T, 17, 2) float32 pixels, all finite (missing joints filled).
    confidence: (T, 17) float32 in [0, 1]; 0 on filled (masked) joints.
    filled: (T, 17) bool, True where the joint was missing and interpolated.
    frame_ids: (T,) int64.
    warnings: what was repaired, for the user.
  """
  xy: np.ndarray
  confidence: np.ndarray
  filled: np.ndarray
  frame_ids: np.ndarray
  warnings: list


def prepare(kp: Keypoints, min_confidence: float = 0.3, on_nan: str = "missing") -> Prepared:
  """NaN check, COCO -> H36M (if fmt='coco'), masking below min_confidence, gap filling."""
  if not 0.0 <= min_confidence <= 1.0:
    raise DataError(f"min_confidence={min_confidence}; expected a value in [0, 1].")
  kp = check_finite(kp, on_nan)
  if kp.fmt == "coco":
    xy, conf = coco_to_h36m(kp.xy, kp.score, min_confidence)
  else:
    ok = kp.score >= min_confidence
    xy, conf = np.where(ok[..., None], kp.xy, np.nan), np.where(ok, kp.score, 0.0)
  try:
    xy, conf, filled, warnings = fill_missing(xy, conf, kp.source, kp.frame_ids)
  except DataError as e:  # keep what was noticed on the way (e.g. NaN keypoints).
    if not kp.warnings:
      raise
    raise DataError(f"{e} Before that: {' '.join(kp.warnings)}") from None
  return Prepared(xy=xy.astype(np.float32), confidence=conf.astype(np.float32), filled=filled,
                  frame_ids=kp.frame_ids, warnings=kp.warnings + warnings)
