"""Human3.6M from the VideoPose3D files, with the field's protocols.

Files (in `config.data.dir`):
  data_3d_h36m.npz: positions_3d, subject -> action -> (T, 32, 3) float32 world metres
    (Z up), subjects S1 S5 S6 S7 S8 S9 S11.
  data_2d_h36m_<keypoints>.npz: positions_2d, subject -> action -> list of 4 arrays
    (T, 17, 2) pixels (or (T, 17, 3) with a detector score), one per camera in the order
    `CAMERA_ORDER`; metadata (num_joints, keypoints_symmetry, layout_name).

Each (subject, action, camera) becomes one sequence: the 17 joints of `skeleton.H36M_FROM_32`
moved into the camera frame with the user's calibration (`config.data.h36m.cameras`, default
`<data.dir>/h36m_cameras.json`, data/h36m_calibration.py; x_world = R @ x_cam + T),
root-relative (pelvis at 0), metres; 2D normalised as
u / w * 2 - [1, h / w]. 2D sequences a few frames longer than the mocap are trimmed.
Synchronised views: the four cameras of one (subject, action) share a per-frame `view_group`
id and carry their `camera_rotation` (data/views.py; for loss.w_multiview on 2D-only data).
Sequence labels: subject 'S9', action the base name ('Directions' for both 'Directions'
and 'Directions 1', so per-action averages pool the takes as VideoPose3D does), camera
'<id>' or '<id>#<take suffix>' ('54138969#1'). Extra 'frame_index' (N,): each frame's index
in the original 50 fps sequence (kept through the val/train cuts and strides; the real-frame
reader data/h36m_frames.py names image files by it).

Protocols (`config.data.h36m.protocol`):
  'p1': train S1 S5 S6 S7 S8, test S9 S11, all four cameras (MPJPE = protocol #1,
        PA-MPJPE on the same predictions = protocol #2).
  'frontal': as p1, test on the frontal camera only (`h36m.frontal_camera`).
  'p3': train S1 S5 S6 S7 S8 S9, test S11 every `h36m.p3_frame_stride`-th frame (64), all
        cameras; each scored frame is a one-frame test sequence (no temporal context).
Validation never touches test subjects: by default the last `h36m.val_fraction` of every
training sequence is held out (and removed from training); `h36m.val_subjects` holds out
whole training subjects instead.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from posemachine import skeleton
from posemachine.data import h36m_calibration
from posemachine.data import safe_npz
from posemachine.data.sequences import DataError
from posemachine.data.sequences import Sequences

# Camera order of the per-camera lists in the VideoPose3D 2D files.
CAMERA_ORDER: tuple[str, ...] = ("54138969", "55011271", "58860488", "60457274")
SUBJECTS: tuple[str, ...] = ("S1", "S5", "S6", "S7", "S8", "S9", "S11")
# The 15 actions in the column order of the field's tables.
ACTIONS: tuple[str, ...] = (
    "Directions", "Discussion", "Eating", "Greeting", "Phoning", "Photo", "Posing",
    "Purchases", "Sitting", "SittingDown", "Smoking", "Waiting", "WalkDog", "Walking",
    "WalkTogether")
# Raw Human3.6M names that VideoPose3D renames.
_ALIASES = {"TakingPhoto": "Photo", "WalkingDog": "WalkDog"}
PROTOCOLS = {
    "p1": (("S1", "S5", "S6", "S7", "S8"), ("S9", "S11")),
    "frontal": (("S1", "S5", "S6", "S7", "S8"), ("S9", "S11")),
    "p3": (("S1", "S5", "S6", "S7", "S8", "S9"), ("S11",)),
}
FILES_HELP = """\
Human3.6M expects the VideoPose3D-format files in --config.data.dir ({dir}):
  data_3d_h36m.npz           3D mocap (positions_3d: subject -> action -> (T, 32, 3) metres)
  data_2d_h36m_{kp}.npz   2D keypoints (positions_2d: subject -> action -> 4 x (T, 17, 2) px)
Prepare them with VideoPose3D's data/prepare_data_h36m.py from the Human3.6M release
(https://github.com/facebookresearch/VideoPose3D/blob/main/DATASETS.md); 2D detections
(e.g. cpn_ft_h36m_dbb) come from the same page. The camera calibration is a third file,
h36m_cameras.json, made once with
  python -m posemachine.data.h36m_calibration \\
      --videopose3d=/path/to/VideoPose3D/common/h36m_dataset.py --out={dir}/h36m_cameras.json"""


def split_action(name: str) -> tuple[str, str]:
  """'Directions 1' -> ('Directions', '1'); 'TakingPhoto' -> ('Photo', '')."""
  base, _, rest = name.partition(" ")
  return _ALIASES.get(base, base), rest.strip()


def base_action(name: str) -> str:
  """The action without its take suffix, VideoPose3D spelling ('Eating 2' -> 'Eating')."""
  return split_action(name)[0]


def parse_list(text: str) -> tuple[str, ...]:
  """'S1, S5' -> ('S1', 'S5'); '' -> ()."""
  return tuple(s.strip() for s in str(text).split(",") if s.strip())


# ------------------------------------------------------------------------------ cameras


def world_to_camera(points, rotation, translation):
  """NumPy twin of `geometry.world_to_camera`: x_cam = R^T (x_world - T), (..., 3) metres."""
  return (np.asarray(points, np.float64) - translation) @ rotation


def project(points_cam, cam: dict):
  """NumPy twin of `geometry.project_to_2d` for one camera dict: (..., 3) -> (..., 2) px."""
  xy = points_cam[..., :2] / points_cam[..., 2:3]
  k, p = cam["k"], cam["p"]
  r2 = (xy ** 2).sum(-1, keepdims=True)
  radial = 1 + k[0] * r2 + k[1] * r2 ** 2 + k[2] * r2 ** 3
  xy_d = xy * (radial + (p * xy).sum(-1, keepdims=True)) + p * r2
  return cam["f"] * xy_d + cam["c"]


def unproject(pixels, depth, cam: dict, iterations: int = 20):
  """Inverse of `project` given each point's depth Z (metres): (..., 2), (...,) -> (..., 3).

  The distortion is inverted by fixed-point iteration (converges to well under 1e-6 px
  inside the Human3.6M images).
  """
  xy_d = (np.asarray(pixels, np.float64) - cam["c"]) / cam["f"]
  k, p = cam["k"], cam["p"]
  xy = xy_d.copy()
  for _ in range(iterations):
    r2 = (xy ** 2).sum(-1, keepdims=True)
    radial = 1 + k[0] * r2 + k[1] * r2 ** 2 + k[2] * r2 ** 3
    xy = (xy_d - p * r2) / (radial + (p * xy).sum(-1, keepdims=True))
  z = np.asarray(depth, np.float64)[..., None]
  return np.concatenate([xy * z, z], -1)


def normalize(pixels, w: float, h: float):
  """Pixels (..., 2) -> u / w * 2 - [1, h / w] (`geometry.normalize_screen_coordinates`)."""
  return pixels / w * 2 - np.array([1.0, h / w])


# -------------------------------------------------------------------------------- files


def read_3d(path: str, joints: int = 32) -> dict:
  """positions_3d of a VideoPose3D 3D file: subject -> action -> (T, joints, 3) metres."""
  members = safe_npz.load_npz(path)
  return safe_npz.check_pose_dict(safe_npz.require(members, "positions_3d", path), path,
                                  "positions_3d", lists=False, joints=joints, dims=(3,))


def read_2d(path: str, joints: int = 17, layouts=("h36m",)) -> tuple[dict, dict]:
  """positions_2d and metadata of a VideoPose3D 2D file.

  Returns (subject -> action -> list of per-camera (T, joints, 2 or 3) arrays or None,
  metadata dict). Rejects keypoint layouts other than `layouts` (e.g. COCO order).
  """
  members = safe_npz.load_npz(path)
  meta = members.get("metadata", {})
  meta = safe_npz.check_plain(meta, f"{path}: field 'metadata'")
  if not isinstance(meta, dict):
    raise DataError(f"{path}: field 'metadata' is a {type(meta).__name__}, expected a dict.")
  layout = meta.get("layout_name")
  if layout is not None and layout not in layouts:
    raise DataError(f"{path}: metadata layout_name {layout!r}; this reader takes the "
                    f"{list(layouts)} joint order only (convert the keypoints first).")
  if "num_joints" in meta:
    value = meta["num_joints"]
    try:
      ok = int(value) == value == joints
    except (TypeError, ValueError):
      ok = False
    if not ok:
      raise DataError(f"{path}: metadata['num_joints'] = {value!r}, expected {joints}.")
  pos = safe_npz.check_pose_dict(safe_npz.require(members, "positions_2d", path), path,
                                 "positions_2d", lists=True, joints=joints, dims=(2, 3))
  return pos, meta


def require_subject(subject, subjects, files):
  """Raises DataError unless `subject` is in every (path, table) of `files`."""
  for path, table in files:
    if subject not in table:
      raise DataError(f"{path}: no subject {subject!r} (subjects in the file: "
                      f"{sorted(table)}); the split needs {list(subjects)}.")


def check_files(data_dir: str, names: list[str], help_text: str) -> list[str]:
  """Absolute paths of names in data_dir; DataError listing the missing ones."""
  if not data_dir:
    raise DataError("config.data.dir is not set.\n" + help_text)
  paths = [os.path.join(data_dir, n) for n in names]
  missing = [n for n, p in zip(names, paths) if not os.path.isfile(p)]
  if missing:
    raise DataError(f"Missing {missing} in {os.path.abspath(data_dir)}.\n" + help_text)
  return paths


@functools.lru_cache(maxsize=4)
def _read_cached(path_3d, path_2d, mtimes, joints_3d, joints_2d, layouts):
  del mtimes  # part of the cache key only: a rewritten file is read again.
  return read_3d(path_3d, joints_3d), read_2d(path_2d, joints_2d, layouts)


def read_pair(path_3d, path_2d, joints_3d, joints_2d, layouts):
  """(positions_3d, (positions_2d, metadata)), cached per file version (train/val/test
  splits are cut from the same files)."""
  mtimes = tuple(os.stat(p).st_mtime_ns for p in (path_3d, path_2d))
  return _read_cached(path_3d, path_2d, mtimes, joints_3d, joints_2d, tuple(layouts))


# ---------------------------------------------------------------------------- sequences


def camera_sequence(world, kp, cam: dict, where: str, joints: tuple[int, ...] | None = None):
  """One camera's view of a mocap sequence.

  Args:
    world: (T, J, 3) world joints, metres.
    kp: (T', K, 2 or 3) 2D keypoints in pixels (+ score), T' >= T (trimmed to T).
    cam: one camera of `h36m_calibration.read`'s table.
    joints: indices of the K output joints among world's J (None: all).
  Returns:
    dict pose_3d (T, K, 3) root-relative camera metres, pose_2d (T, K, 2) normalised,
    confidence (T, K), root_3d (T, 3) camera-frame root in metres, camera_rotation
    (T, 3, 3): R with camera = (world - centre) @ R (row vectors; data/views.py).
  """
  n = len(world)
  if len(kp) < n:
    raise DataError(f"{where}: the 2D sequence has {len(kp)} frames, fewer than the "
                    f"{n} of the 3D mocap.")
  kp = np.asarray(kp[:n], np.float64)
  w3 = world if joints is None else world[:, list(joints)]
  cam3 = world_to_camera(w3, cam["R"], cam["T"])
  conf = np.clip(kp[..., 2], 0.0, 1.0) if kp.shape[-1] == 3 else np.ones(kp.shape[:2])
  return {"pose_3d": (cam3 - cam3[:, :1]).astype(np.float32),
          "pose_2d": normalize(kp[..., :2], cam["w"], cam["h"]).astype(np.float32),
          "confidence": conf.astype(np.float32), "root_3d": cam3[:, 0].astype(np.float32),
          "camera_rotation": np.broadcast_to(np.asarray(cam["R"], np.float32), (n, 3, 3))}


def split_tail(items: list[dict], fraction: float) -> tuple[list[dict], list[dict]]:
  """Cuts the last `fraction` of every sequence off: (heads, tails), per-frame arrays cut.

  Sequences too short to give both parts a frame stay whole in the heads.
  """
  heads, tails = [], []
  for it in items:
    n = len(it["pose_2d"])
    cut = n - int(round(n * fraction))
    if fraction <= 0 or cut < 1 or cut >= n:
      heads.append(it)
      continue
    head, tail = dict(it), dict(it)
    for k, v in it.items():
      if isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == n:
        head[k], tail[k] = v[:cut], v[cut:]
    heads.append(head)
    tails.append(tail)
  return heads, tails


def stride_frames(items: list[dict], stride: int, single: bool) -> list[dict]:
  """Every stride-th frame of each sequence: as one sequence, or (single) one per frame."""
  if stride <= 1:
    return items
  out = []
  for it in items:
    n = len(it["pose_2d"])
    arrays = {k: v for k, v in it.items() if isinstance(v, np.ndarray) and len(v) == n}
    if not single:
      out.append({**it, **{k: v[::stride] for k, v in arrays.items()}})
      continue
    for t in range(0, n, stride):
      label = f"{it['camera']}@{t}"
      out.append({**it, **{k: v[t:t + 1] for k, v in arrays.items()}, "camera": label})
  return out


def _subjects(h, split: str) -> tuple[str, ...]:
  if h.protocol not in PROTOCOLS:
    raise DataError(f"config.data.h36m.protocol = {h.protocol!r}; expected one of "
                    f"{list(PROTOCOLS)}.")
  train, test = PROTOCOLS[h.protocol]
  train = parse_list(h.train_subjects) or train
  test = parse_list(h.test_subjects) or test
  overlap = set(train) & set(test)
  if overlap:
    raise DataError(f"Human3.6M: subjects {sorted(overlap)} are in both the training and "
                    "the test split.")
  val = parse_list(h.val_subjects)
  bad = [s for s in val if s in test]
  if bad:
    raise DataError(f"config.data.h36m.val_subjects {list(val)} includes test subjects {bad}.")
  if split == "test":
    return test
  if val:
    rest = tuple(s for s in train if s not in val)
    if not rest:
      raise DataError(f"config.data.h36m.val_subjects {list(val)} holds out every training "
                      f"subject {list(train)}; keep at least one for training.")
    return val if split == "val" else rest
  return train


def load(data_dir: str, keypoints: str, subjects, cameras=CAMERA_ORDER, actions=(),
         source: str = "h36m", calibration: str = "") -> list[dict]:
  """Per-(subject, action, camera) sequence dicts of the given subjects (see module doc).

  Args:
    actions: base action names to keep ('' / () for all).
    calibration: the camera calibration JSON ('': <data_dir>/h36m_cameras.json).
  """
  help_text = FILES_HELP.format(dir=data_dir or "<not set>", kp=keypoints)
  p3d, p2d = check_files(data_dir, ["data_3d_h36m.npz", f"data_2d_h36m_{keypoints}.npz"],
                         help_text)
  calibration = calibration or os.path.join(data_dir, h36m_calibration.FILE_NAME)
  calib = h36m_calibration.read(calibration)
  pos3d, (pos2d, _) = read_pair(p3d, p2d, 32, 17, ("h36m",))
  unknown_cams = [c for c in cameras if c not in CAMERA_ORDER]
  if unknown_cams:
    raise DataError(f"Unknown Human3.6M camera(s) {unknown_cams}; expected ids from "
                    f"{list(CAMERA_ORDER)}.")
  items = []
  group = 0  # view_group id of each (subject, action): its cameras are synchronised views.
  for subject in subjects:
    require_subject(subject, subjects, ((p3d, pos3d), (p2d, pos2d)))
    for action in sorted(pos3d[subject]):
      base, take = split_action(action)
      if actions and base not in actions:
        continue
      if action not in pos2d[subject]:
        raise DataError(f"{p2d}: subject {subject!r} has no action {action!r}, which "
                        f"{p3d} has (2D actions: {sorted(pos2d[subject])}).")
      world = np.asarray(pos3d[subject][action], np.float64)
      views = pos2d[subject][action]
      if len(views) != len(CAMERA_ORDER):
        raise DataError(f"{p2d}: subject {subject!r}, action {action!r} has {len(views)} "
                        f"camera arrays, expected {len(CAMERA_ORDER)} (order "
                        f"{list(CAMERA_ORDER)}).")
      for cam_id in cameras:
        kp = views[CAMERA_ORDER.index(cam_id)]
        if kp is None:
          continue
        where = f"{p2d}: subject {subject!r}, action {action!r}, camera {cam_id}"
        cam = h36m_calibration.camera(calib, subject, cam_id, calibration)
        seq = camera_sequence(world, kp, cam, where, skeleton.H36M_FROM_32)
        seq.update(subject=subject, action=base,
                   camera=f"{cam_id}#{take}" if take else cam_id,
                   frame_index=np.arange(len(world), dtype=np.float32),
                   view_group=np.full(len(world), group, np.int32))
        items.append(seq)
      group += 1
  if not items:
    raise DataError(f"Human3.6M ({data_dir}): no sequences for subjects {list(subjects)}, "
                    f"actions {list(actions) or 'all'}, cameras {list(cameras)}.")
  return items


def load_split(config, split: str) -> Sequences:
  """One split of Human3.6M under `config.data.h36m` (see the module docstring)."""
  d, h = config.data, config.data.h36m
  if d.num_joints != 17:
    raise DataError(f"Human3.6M has 17 joints; config.data.num_joints = {d.num_joints}.")
  actions = parse_list(h.actions)
  unknown = [a for a in actions if a not in ACTIONS]
  if unknown:
    raise DataError(f"config.data.h36m.actions: unknown {unknown}; expected names from "
                    f"{list(ACTIONS)}.")
  if not 0 <= h.val_fraction < 1:
    raise DataError(f"config.data.h36m.val_fraction = {h.val_fraction}; expected [0, 1).")
  subjects = _subjects(h, split)
  cameras = CAMERA_ORDER
  if split == "test" and h.protocol == "frontal":
    cameras = (h.frontal_camera,)
  items = load(d.dir, h.keypoints, subjects, cameras, actions,
               calibration=h36m_calibration.cameras_path(config))
  if split != "test" and not parse_list(h.val_subjects):
    heads, tails = split_tail(items, h.val_fraction)
    items = heads if split == "train" else tails
    if not items:
      n = max(len(i["pose_2d"]) for i in heads)
      raise DataError(
          f"Human3.6M: config.data.h36m.val_fraction = {h.val_fraction} gives no validation "
          f"frames: on sequences of up to {n} frames the held-out tail must round to at "
          "least one frame and leave one for training (e.g. 0.1); or set h36m.val_subjects.")
  if split == "train":
    items = stride_frames(items, int(h.downsample), single=False)
  if split == "test" and h.protocol == "p3":
    items = stride_frames(items, int(h.p3_frame_stride), single=True)
  return Sequences.from_list(items, source=f"h36m:{split} ({d.dir})")
