"""HumanEva-I from the VideoPose3D-style files (15 joints, 3 colour cameras, 60 fps).

Files (in `config.data.dir`):
  data_3d_humaneva15.npz: positions_3d, subject -> action -> (T, 15, 3) world metres.
    Subjects are 'Train/S1' ... 'Validate/S3' (VideoPose3D's split of each trial into the
    HumanEva 'train' and 'validation' frame ranges); actions are 'Walking 1 chunk0',
    'Jog 1 chunk0', 'Box 1 chunk0', ... (mocap dropouts split a trial into chunks).
  data_2d_humaneva15_<keypoints>.npz: positions_2d, same keys -> list of 3 arrays (T, 15, 2)
    pixels for cameras C1 C2 C3 (None where a camera has no detections); metadata.

Joints (`skeleton.HUMANEVA15_*`, parents as VideoPose3D's humaneva15): 0 pelvis (root), 1 thorax,
2-4 left shoulder/elbow/wrist, 5-7 right arm, 8-10 left hip/knee/ankle, 11-13 right leg,
14 head. Extrinsics per subject (`CAMERAS`, from the HumanEva-I calibration as VideoPose3D
lists it): orientation quaternion (w, x, y, z) and centre t, x_world = R(q) x_cam + t.

The usual protocol: train on Train/S1-S3, test on Validate/S1-S3, actions Walk, Jog, Box
(a file action belongs to 'Walk' when its name starts with 'Walk', as VideoPose3D filters).
Validation: the last `humaneva.val_fraction` of each training sequence.
Synchronised views: the cameras of one trial chunk share a per-frame `view_group` id and carry
their `camera_rotation` (data/views.py; for loss.w_multiview on 2D-only data).
Sequence labels: subject as in the file ('Validate/S1'), action the table name ('Walk',
'Jog', 'Box', ...), camera 'C1#1_chunk0' (camera, then the trial and chunk).
"""

from __future__ import annotations

import numpy as np

from posemachine import skeleton
from posemachine.data import h36m
from posemachine.data.h36m_calibration import quaternion_to_matrix
from posemachine.data.sequences import DataError
from posemachine.data.sequences import Sequences

NUM_JOINTS = len(skeleton.HUMANEVA15_PARENTS)  # 15
JOINT_NAMES = skeleton.HUMANEVA15_JOINT_NAMES
PARENTS = skeleton.HUMANEVA15_PARENTS
CAMERA_ORDER: tuple[str, ...] = ("C1", "C2", "C3")
IMAGE_SIZE = (640.0, 480.0)  # w, h pixels, every camera.
# Table names of the file's action names (by prefix), in table order.
ACTIONS: tuple[str, ...] = ("Walk", "Jog", "Box", "ThrowCatch", "Gestures")

# Extrinsics: (orientation quaternion w, x, y, z; camera centre in world millimetres).
CAMERAS = {
    "S1": (((0.424207, -0.4983646, -0.5802981, 0.4847012), (4062.227, 663.2477, 1528.397)),
           ((0.6503354, -0.7481602, -0.0919284, 0.0941766), (844.8131, -3805.2092, 1504.9929)),
           ((0.0664734, -0.0690535, 0.7416416, -0.6639132), (-797.67377, 3916.3174, 1433.6602))),
    "S2": (((0.4214752, -0.4961493, -0.5838273, 0.4851187), (4112.9121, 626.4929, 1545.2988)),
           ((0.6501393, -0.7476588, -0.0954617, 0.0959808), (923.5740, -3877.9243, 1504.5518)),
           ((0.0699353, -0.0712403, 0.7421637, -0.662742), (-781.4915, 3838.8853, 1444.9929))),
    "S3": (((0.424207, -0.4983646, -0.5802981, 0.4847012), (4062.2271, 663.2477, 1528.3970)),
           ((0.6503354, -0.7481602, -0.0919284, 0.0941766), (844.8131, -3805.2092, 1504.9929)),
           ((0.0664734, -0.0690535, 0.7416416, -0.6639132), (-797.6738, 3916.3174, 1433.6602))),
}
FILES_HELP = """\
HumanEva-I expects the VideoPose3D-format files in --config.data.dir ({dir}):
  data_3d_humaneva15.npz          3D mocap (positions_3d: 'Train/S1' -> 'Walking 1 chunk0' -> (T, 15, 3) m)
  data_2d_humaneva15_{kp}.npz  2D keypoints (positions_2d: same keys -> 3 x (T, 15, 2) px)
Prepare them with VideoPose3D's data/prepare_data_humaneva.py (see its DATASETS.md)."""


def base_subject(subject: str) -> str:
  """'Validate/S1' or 'Unlabeled/Train/S2' -> 'S1' / 'S2'."""
  return subject.rsplit("/", 1)[-1]


def camera_params(subject: str, index: int) -> dict:
  """Calibration dict (as `h36m_calibration.camera`) of camera `index` (0-2) for a subject key.

  Only R, T, w and h are used: the 2D keypoints come from the files.
  """
  s = base_subject(subject)
  if s not in CAMERAS:
    raise DataError(f"HumanEva-I: no camera calibration for subject {subject!r} "
                    f"(calibrated: {sorted(CAMERAS)}).")
  q, t = CAMERAS[s][index]
  return {"R": quaternion_to_matrix(q), "T": np.asarray(t, np.float64) / 1000.0,
          "w": IMAGE_SIZE[0], "h": IMAGE_SIZE[1]}


def action_name(file_action: str) -> tuple[str, str]:
  """'Walking 1 chunk0' -> ('Walk', '1_chunk0'); unknown prefixes keep their first word."""
  first, _, rest = file_action.partition(" ")
  name = next((a for a in ACTIONS if first.startswith(a)), first)
  return name, rest.strip().replace(" ", "_")


def load(data_dir: str, keypoints: str, subjects, actions=ACTIONS[:3]) -> list[dict]:
  """Per-(subject, action, camera) sequence dicts (see module doc)."""
  help_text = FILES_HELP.format(dir=data_dir or "<not set>", kp=keypoints)
  p3d, p2d = h36m.check_files(
      data_dir, ["data_3d_humaneva15.npz", f"data_2d_humaneva15_{keypoints}.npz"], help_text)
  pos3d, (pos2d, _) = h36m.read_pair(p3d, p2d, NUM_JOINTS, NUM_JOINTS, ("humaneva15",))
  present = sorted({action_name(a)[0] for s in pos3d.values() for a in s})
  unknown = [a for a in actions if a not in present]
  if unknown:
    raise DataError(f"config.data.humaneva.actions: {unknown} not in {p3d} (its actions: "
                    f"{present}).")
  items = []
  group = 0  # view_group id of each (subject, trial chunk): synchronised camera views.
  for subject in subjects:
    h36m.require_subject(subject, subjects, ((p3d, pos3d), (p2d, pos2d)))
    for file_action in sorted(pos3d[subject]):
      name, rest = action_name(file_action)
      if actions and name not in actions:
        continue
      if file_action not in pos2d[subject]:
        raise DataError(f"{p2d}: subject {subject!r} has no action {file_action!r}, which "
                        f"{p3d} has.")
      views = pos2d[subject][file_action]
      if len(views) != len(CAMERA_ORDER):
        raise DataError(f"{p2d}: subject {subject!r}, action {file_action!r} has "
                        f"{len(views)} camera arrays, expected {len(CAMERA_ORDER)}.")
      world = np.asarray(pos3d[subject][file_action], np.float64)
      for c, kp in enumerate(views):
        if kp is None:
          continue
        where = f"{p2d}: subject {subject!r}, action {file_action!r}, camera {CAMERA_ORDER[c]}"
        seq = h36m.camera_sequence(world, kp, camera_params(subject, c), where)
        seq.update(subject=subject, action=name,
                   camera=f"{CAMERA_ORDER[c]}#{rest}" if rest else CAMERA_ORDER[c],
                   view_group=np.full(len(world), group, np.int32))
        items.append(seq)
      group += 1
  if not items:
    raise DataError(f"HumanEva-I ({data_dir}): no sequences for subjects {list(subjects)} "
                    f"and actions {list(actions)}.")
  return items


def load_split(config, split: str) -> Sequences:
  """One split under `config.data.humaneva`: train/val from train_subjects (val = the tail
  val_fraction of each sequence), test from test_subjects."""
  d, h = config.data, config.data.humaneva
  if d.num_joints != NUM_JOINTS:
    raise DataError(f"HumanEva-I has {NUM_JOINTS} joints; config.data.num_joints = "
                    f"{d.num_joints} (configs/humaneva.py sets 15).")
  train, test = h36m.parse_list(h.train_subjects), h36m.parse_list(h.test_subjects)
  overlap = set(train) & set(test)
  if overlap:
    raise DataError(f"HumanEva-I: subjects {sorted(overlap)} are in both the training and "
                    "the test split.")
  if not 0 <= h.val_fraction < 1:
    raise DataError(f"config.data.humaneva.val_fraction = {h.val_fraction}; expected [0, 1).")
  actions = h36m.parse_list(h.actions)
  items = load(d.dir, h.keypoints, test if split == "test" else train, actions)
  if split != "test":
    heads, tails = h36m.split_tail(items, h.val_fraction)
    items = heads if split == "train" else tails
    if not items:
      raise DataError(f"HumanEva-I: config.data.humaneva.val_fraction = {h.val_fraction} "
                      "gives no validation frames (the held-out tail must round to at least "
                      "one frame and leave one for training; e.g. 0.1).")
  if split == "train":
    items = h36m.stride_frames(items, int(h.downsample), single=False)
  return Sequences.from_list(items, source=f"humaneva:{split} ({d.dir})")
