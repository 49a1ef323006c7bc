"""BVH export of 3D joint positions: a 17-joint Human3.6M rig, rotations solved per frame.

The rig: `skeleton.JOINT_NAMES` as BVH joints (`BVH_JOINT_NAMES`, index order = the file's
joint order), the pelvis as the root with 6 channels, every other joint with 3 rotation
channels (Zrotation Xrotation Yrotation: R = Rz Rx Ry, degrees). The leaf joints (ankles,
head, wrists) end in a short End Site for display.

Rest pose (the OFFSETs): each bone's length is its mean length over the clip; limbs in a
T-pose (legs down -Y, arms out along +-X, spine and head up +Y); the pelvis's three bones
(hips, spine) and the thorax's three bones (neck, shoulders) keep the clip's mean shape,
measured in a frame of their own (`_frame`), so a rigid torso is reproduced exactly.

Rotations per frame: the pelvis and thorax from the frame of their children (x = the
left-right line, y = the spine / neck direction, z = x cross y); every joint with one child
by the minimal rotation (swing) that turns the bone, as its parent carries it, onto the
observed bone direction (its twist is the parent's); leaf joints carry no rotation of their
own. Re-imported, the file gives every bone's observed direction at its mean length, the
pelvis and thorax bones as their best rigid fit (`write_bvh` returns these positions).
With `stretch=True` every joint also carries position channels (its exact offset from its
parent per frame) and the file reproduces the input joints exactly.

Axes and units (written in the file's header comment): metres; BVH X = camera x (right),
Y = up (= -camera y), Z = towards the camera (= -camera z), right-handed, so the
character faces +Z when it faces the camera. Blender: File > Import > Motion Capture (.bvh)
with its defaults (Scale 1.0, Forward -Z, Up Y) gives a metre-sized armature facing the front
view (-Y). Root translation: the pelvis trajectory when one is given (e.g.
`inference.estimate_root_trajectory`), relative to its first frame; else 0.
"""

from __future__ import annotations

import os

import numpy as np

from posemachine import io_utils, skeleton
from posemachine.errors import DataError

BVH_JOINT_NAMES: tuple[str, ...] = (
    "Hips", "RightUpLeg", "RightLeg", "RightFoot", "LeftUpLeg", "LeftLeg", "LeftFoot",
    "Spine", "Thorax", "Neck", "Head", "LeftArm", "LeftForeArm", "LeftHand",
    "RightArm", "RightForeArm", "RightHand")
ROTATION_CHANNELS = ("Zrotation", "Xrotation", "Yrotation")
# Camera frame (x right, y down, z forward) -> BVH frame (X right, Y up, Z to the camera).
CAMERA_TO_BVH = np.diag([1.0, -1.0, -1.0])
_PELVIS, _THORAX = 0, 8
# (joint whose children define the frame, left child, right child, "up" child).
_GROUPS = ((_PELVIS, 4, 1, 7), (_THORAX, 11, 14, 9))
# T-pose directions of the bones ending at single-child joints' children (BVH frame).
_TPOSE = {2: (0, -1, 0), 3: (0, -1, 0), 5: (0, -1, 0), 6: (0, -1, 0), 8: (0, 1, 0),
          10: (0, 1, 0), 12: (1, 0, 0), 13: (1, 0, 0), 15: (-1, 0, 0), 16: (-1, 0, 0)}
# End Site offsets of the leaves, as fractions of the leaf's own bone (display only).
_END_SITE = {3: (0, 0, 0.25), 6: (0, 0, 0.25), 10: (0, 0.5, 0), 13: (0.3, 0, 0),
             16: (-0.3, 0, 0)}


def _children(parents):
  out = [[] for _ in parents]
  for j, p in enumerate(parents):
    if p >= 0:
      out[p].append(j)
  return out


def _normalize(v, eps=1e-12):
  n = np.linalg.norm(v, axis=-1, keepdims=True)
  return v / np.maximum(n, eps)


def _frame(pos, left, right, up, origin):
  """(..., 3, 3) rotation with columns x = left - right, y = up - origin (orthogonalised)."""
  x = _normalize(pos[..., left, :] - pos[..., right, :])
  y = pos[..., up, :] - pos[..., origin, :]
  y = _normalize(y - (y * x).sum(-1, keepdims=True) * x)
  return np.stack([x, y, np.cross(x, y)], -1)


def _swing(a, b):
  """Minimal rotations (..., 3, 3) turning unit vectors a onto unit vectors b."""
  v = np.cross(a, b)
  c = (a * b).sum(-1)
  s = np.linalg.norm(v, axis=-1)
  # Opposite vectors: a half turn about any axis perpendicular to a.
  helper = np.where(np.abs(a[..., :1]) < 0.9, [1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
  perp = _normalize(np.cross(a, helper))
  axis = np.where((s < 1e-9)[..., None], perp, v / np.maximum(s, 1e-12)[..., None])
  angle = np.arctan2(s, c)
  angle = np.where((s < 1e-9) & (c > 0), 0.0, angle)
  k = np.zeros(axis.shape[:-1] + (3, 3))
  k[..., 0, 1], k[..., 0, 2], k[..., 1, 2] = -axis[..., 2], axis[..., 1], -axis[..., 0]
  k = k - np.swapaxes(k, -1, -2)
  sa, ca = np.sin(angle)[..., None, None], np.cos(angle)[..., None, None]
  return np.eye(3) + sa * k + (1 - ca) * k @ k


def euler_zxy(r):
  """Rotation matrices (..., 3, 3) -> (z, x, y) angles in degrees with R = Rz Rx Ry."""
  x = np.arcsin(np.clip(r[..., 2, 1], -1.0, 1.0))
  gimbal = np.abs(r[..., 2, 1]) > 1 - 1e-9
  y = np.where(gimbal, 0.0, np.arctan2(-r[..., 2, 0], r[..., 2, 2]))
  z = np.where(gimbal, np.arctan2(r[..., 1, 0], r[..., 0, 0]),
               np.arctan2(-r[..., 0, 1], r[..., 1, 1]))
  return np.degrees(np.stack([z, x, y], -1))


def rotation_zxy(angles_deg):
  """(..., 3) (z, x, y) degrees -> R = Rz Rx Ry (..., 3, 3); inverse of `euler_zxy`."""
  z, x, y = np.moveaxis(np.radians(np.asarray(angles_deg, np.float64)), -1, 0)
  def rot(axis, a):
    c, s = np.cos(a), np.sin(a)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r = np.zeros(a.shape + (3, 3))
    r[..., axis, axis] = 1.0
    r[..., i, i] = r[..., j, j] = c
    r[..., i, j], r[..., j, i] = -s, s
    return r
  return rot(2, z) @ rot(0, x) @ rot(1, y)


def solve_rig(positions, parents=skeleton.PARENTS):
  """Rest offsets and per-frame global rotations reproducing `positions`.

  Args:
    positions: (T, 17, 3) joints in the BVH frame (Y up), any unit.
  Returns:
    (offsets (17, 3) rest bone vectors in the parent's frame (0 for the root),
     rotations (T, 17, 3, 3) global rotation of each joint's frame).
  """
  pos = np.asarray(positions, np.float64)
  t, k = pos.shape[:2]
  children = _children(parents)
  lengths = np.zeros(k)
  for j, p in enumerate(parents):
    if p >= 0:
      lengths[j] = np.linalg.norm(pos[:, j] - pos[:, p], axis=-1).mean()
  offsets = np.zeros((k, 3))
  frames = {}
  for origin, left, right, up in _GROUPS:
    f = _frame(pos, left, right, up, origin)  # (T, 3, 3)
    frames[origin] = f
    for c in children[origin]:
      local = np.einsum("tji,tj->ti", f, _normalize(pos[:, c] - pos[:, origin]))
      offsets[c] = lengths[c] * _normalize(local.mean(0))
  for c, d in _TPOSE.items():
    offsets[c] = lengths[c] * np.asarray(d, np.float64)
  rest = offsets.copy()
  rest_frames = {}
  for origin, left, right, up in _GROUPS:
    # Rest positions of the group's joints, relative to its origin.
    rp = np.zeros((k, 3))
    for c in children[origin]:
      rp[c] = rest[c]
    rest_frames[origin] = _frame(rp, left, right, up, origin)
  rot = np.zeros((t, k, 3, 3))
  for j, p in enumerate(parents):
    parent_rot = np.broadcast_to(np.eye(3), (t, 3, 3)) if p < 0 else rot[:, p]
    if j in frames:
      rot[:, j] = frames[j] @ rest_frames[j].T
    elif len(children[j]) == 1:
      c = children[j][0]
      observed = pos[:, c] - pos[:, j]
      carried = _normalize(np.einsum("tij,j->ti", parent_rot, offsets[c]))
      swing = _swing(carried, _normalize(observed))
      degenerate = np.linalg.norm(observed, axis=-1) < 1e-9
      swing[degenerate] = np.eye(3)
      rot[:, j] = swing @ parent_rot
    else:
      rot[:, j] = parent_rot
  return offsets, rot


def forward_kinematics(offsets, rotations, root, parents=skeleton.PARENTS):
  """Joint positions (T, K, 3) from rest offsets, global rotations and the root position."""
  t, k = rotations.shape[:2]
  pos = np.zeros((t, k, 3))
  for j, p in enumerate(parents):
    pos[:, j] = root if p < 0 else pos[:, p] + rotations[:, p] @ offsets[j]
  return pos


def _fmt(x):
  s = f"{x:.6f}"
  return "0.000000" if s == "-0.000000" else s


def write_bvh(path, pose_3d, fps: float = 50.0, root_trajectory=None, *,
              stretch: bool = False, comments: bool = True, comment: str = "",
              parents=skeleton.PARENTS, names=BVH_JOINT_NAMES) -> np.ndarray:
  """Writes a clip of camera-frame 3D joints as a BVH file (see the module docstring).

  Args:
    path: output .bvh file (written atomically).
    pose_3d: (T, 17, 3) joints in metres, camera frame (x right, y down, z forward),
      root-relative or not.
    fps: frames per second of the clip (Frame Time = 1 / fps).
    root_trajectory: optional (T, 3) camera-frame pelvis positions, metres; the root
      translation is this minus its first frame (None: pose_3d's own pelvis).
    stretch: False (default): a rigid rig (bone lengths fixed at their means). True: every
      joint also gets Xposition Yposition Zposition channels holding its exact offset from
      its parent on each frame, so the file reproduces the input positions exactly (bones
      stretch in animation tools; Blender imports such channels as bone locations).
    comments: write the '#' header comment lines (units, axes) after HIERARCHY. Blender
      skips them; strict BVH readers may not: comments=False writes none.
    comment: extra header comment lines (e.g. the source file).
  Returns:
    (T, 17, 3) the joint positions the file encodes, in the BVH frame (metres, Y up): what a
    BVH reader's forward kinematics gives back.
  Raises:
    DataError: bad shapes or non-finite values.
  """
  pose = np.asarray(pose_3d, np.float64)
  k = len(parents)
  if pose.ndim != 3 or pose.shape[1:] != (k, 3) or pose.shape[0] == 0:
    raise DataError(f"write_bvh: pose_3d must be (T>0, {k}, 3), got {pose.shape}.")
  bad = ~np.isfinite(pose).all(-1)
  if bad.any():
    t, j = np.argwhere(bad)[0]
    raise DataError(f"write_bvh: non-finite joint at frame {t}, joint {j} ({names[j]}).")
  if not (np.isfinite(fps) and fps > 0):
    raise DataError(f"write_bvh: fps={fps}; expected a positive number.")
  pos = pose @ CAMERA_TO_BVH.T
  if root_trajectory is not None:
    traj = np.asarray(root_trajectory, np.float64).reshape(-1, 3) @ CAMERA_TO_BVH.T
    if len(traj) != len(pos) or not np.isfinite(traj).all():
      raise DataError(f"write_bvh: root_trajectory must be finite ({len(pos)}, 3), got "
                      f"{np.shape(root_trajectory)}.")
    pos = pos - pos[:, :1] + (traj - traj[:1])[:, None]
  offsets, rot = solve_rig(pos, parents)
  children = _children(parents)
  local = rot.copy()
  for j, p in enumerate(parents):
    if p >= 0:
      local[:, j] = np.swapaxes(rot[:, p], -1, -2) @ rot[:, j]
  angles = np.unwrap(euler_zxy(local), axis=0, period=360.0)
  root = pos[:, 0]
  # Exact per-frame offsets in the parent's frame (stretch mode).
  trans = np.zeros_like(pos)
  for j, p in enumerate(parents):
    if p >= 0:
      trans[:, j] = np.einsum("tji,tj->ti", rot[:, p], pos[:, j] - pos[:, p])

  root_note = ("pelvis trajectory relative to frame 0" if root_trajectory is not None
               else "the input's pelvis (0 for root-relative poses)")
  header = ["# posemachine BVH export: Human3.6M 17-joint rig, 3D lifted from 2D keypoints.",
           "# Units: metres. Axes: Y up, X = the camera's right, Z = towards the camera "
           "(right-handed; camera frame x right, y down, z forward -> X = x, Y = -y, Z = -z).",
           "# The character faces +Z when it faces the camera. Blender: File > Import > "
           "Motion Capture (.bvh), Scale 1.0, Forward -Z, Up Y (the defaults).",
           "# Rotations: degrees, channels Zrotation Xrotation Yrotation (R = Rz Rx Ry), "
           "local to the parent joint. Rest pose: T-pose, bone lengths = clip means.",
           f"# Root translation: {root_note}; "
           f"{len(pos)} frames at {fps:g} fps.",
           "# Bones: " + ("stretch (every joint has position channels: exact positions)."
                          if stretch else "rigid (lengths = clip means).")]
  header += [f"# {c}" for c in comment.splitlines() if c.strip()]
  lines = ["HIERARCHY"] + (header if comments else [])

  def write_joint(j, depth):
    ind = "  " * depth
    kind = "ROOT" if parents[j] < 0 else "JOINT"
    lines.append(f"{ind}{kind} {names[j]}")
    lines.append(f"{ind}{{")
    off = np.zeros(3) if parents[j] < 0 else offsets[j]
    lines.append(f"{ind}  OFFSET {' '.join(_fmt(v) for v in off)}")
    has_pos = parents[j] < 0 or stretch
    chans = (("Xposition", "Yposition", "Zposition") if has_pos else ()) + ROTATION_CHANNELS
    lines.append(f"{ind}  CHANNELS {len(chans)} {' '.join(chans)}")
    for c in children[j]:
      write_joint(c, depth + 1)
    if not children[j]:
      end = np.asarray(_END_SITE.get(j, (0, 0.5, 0))) * np.linalg.norm(offsets[j])
      lines.append(f"{ind}  End Site")
      lines.append(f"{ind}  {{")
      lines.append(f"{ind}    OFFSET {' '.join(_fmt(v) for v in end)}")
      lines.append(f"{ind}  }}")
    lines.append(f"{ind}}}")

  write_joint(int(np.flatnonzero(np.asarray(parents) < 0)[0]), 0)
  lines += ["MOTION", f"Frames: {len(pos)}", f"Frame Time: {1.0 / fps:.8f}"]
  # Channel values in the file's joint order (depth first = index order for this rig).
  order = []
  def visit(j):
    order.append(j)
    for c in children[j]:
      visit(c)
  visit(int(np.flatnonzero(np.asarray(parents) < 0)[0]))
  values = []
  for j in order:
    if parents[j] < 0:
      values.append(root)
    elif stretch:
      values.append(trans[:, j])
    values.append(angles[:, j])
  values = np.concatenate(values, axis=1)  # (T, channels)
  lines += [" ".join(_fmt(v) for v in row) for row in values]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  io_utils.atomic_write_text(path, "\n".join(lines) + "\n")
  # What a reader gets back: FK of the written (rounded) values.
  rounded = rotation_zxy(np.round(angles, 6))
  glob = np.zeros_like(rounded)
  for j, p in enumerate(parents):
    glob[:, j] = rounded[:, j] if p < 0 else glob[:, p] @ rounded[:, j]
  if stretch:
    out = np.zeros_like(pos)
    out[:, 0] = np.round(root, 6)
    for j, p in enumerate(parents):
      if p >= 0:
        out[:, j] = out[:, p] + np.einsum("tij,tj->ti", glob[:, p], np.round(trans[:, j], 6))
    return out
  return forward_kinematics(np.round(offsets, 6), glob, np.round(root, 6), parents)
