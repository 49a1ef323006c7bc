"""The Human3.6M 17-joint skeleton (the field's common layout) and bone helpers."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
    "spine", "thorax", "neck", "head",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_shoulder", "right_elbow", "right_wrist",
)
NUM_JOINTS = len(JOINT_NAMES)
ROOT = 0
# PARENTS[i] is the parent joint of joint i; -1 for the root.
PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
LEFT: tuple[int, ...] = (4, 5, 6, 11, 12, 13)
RIGHT: tuple[int, ...] = (1, 2, 3, 14, 15, 16)
# Raw Human3.6M mocap has 32 joints; these are the 17 kept, in the order above.
H36M_FROM_32: tuple[int, ...] = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)

# Mean Human3.6M bone lengths in metres, indexed by the bone's child joint (0 for the root):
# the skeleton metadata of the dataset, e.g. thigh 0.443 m. Used as a prior when no 3D
# labels exist, and as the synthetic bodies' nominal proportions.
MEAN_BONE_LENGTHS: tuple[float, ...] = (
    0.0, 0.133, 0.443, 0.454, 0.133, 0.443, 0.454, 0.233, 0.257, 0.121, 0.115,
    0.151, 0.279, 0.252, 0.151, 0.279, 0.252)

# Bones as (child, parent) index pairs, one per non-root joint.
BONES: tuple[tuple[int, int], ...] = tuple((i, p) for i, p in enumerate(PARENTS) if p >= 0)
BONE_CHILD = np.array([c for c, _ in BONES], dtype=np.int32)
BONE_PARENT = np.array([p for _, p in BONES], dtype=np.int32)
# Joint permutation that mirrors left and right (for flip augmentation).
FLIP_PERMUTATION: tuple[int, ...] = tuple(
    (RIGHT + LEFT)[(LEFT + RIGHT).index(i)] if i in LEFT + RIGHT else i
    for i in range(NUM_JOINTS)
)


def bone_vectors(pose, child=BONE_CHILD, parent=BONE_PARENT):
  """Bone vectors child - parent.

  Args:
    pose: (..., K, D) joint positions (numpy or jax array).
  Returns:
    (..., K - 1, D) bone vectors in the units of `pose`.
  """
  return pose[..., child, :] - pose[..., parent, :]


def bone_lengths(pose):
  """(..., K, D) joints -> (..., K - 1) bone lengths."""
  b = bone_vectors(pose)
  return (b ** 2).sum(-1) ** 0.5


def check_num_joints(array, num_joints: int, what: str) -> None:
  """Raises ValueError naming `what` unless array is (..., num_joints, D)."""
  shape = getattr(array, "shape", None)
  if shape is None or len(shape) < 2 or shape[-2] != num_joints:
    raise ValueError(
        f"{what}: expected shape (..., {num_joints}, D) with {num_joints} joints, "
        f"got shape {shape}.")


# HumanEva-I, 15 joints (VideoPose3D's 'humaneva15' layout).
HUMANEVA15_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "thorax", "left_shoulder", "left_elbow", "left_wrist", "right_shoulder",
    "right_elbow", "right_wrist", "left_hip", "left_knee", "left_ankle", "right_hip",
    "right_knee", "right_ankle", "head")
HUMANEVA15_PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 3, 1, 5, 6, 0, 8, 9, 0, 11, 12, 1)
HUMANEVA15_LEFT: tuple[int, ...] = (2, 3, 4, 8, 9, 10)
HUMANEVA15_RIGHT: tuple[int, ...] = (5, 6, 7, 11, 12, 13)


class Layout(NamedTuple):
  """A joint layout: names, parents (-1 root), left/right joints and bone index arrays."""
  joint_names: tuple[str, ...]
  parents: tuple[int, ...]
  left: tuple[int, ...]
  right: tuple[int, ...]
  bone_child: np.ndarray   # (K - 1,) int32
  bone_parent: np.ndarray  # (K - 1,) int32


def _layout(names, parents, left, right) -> Layout:
  bones = [(i, p) for i, p in enumerate(parents) if p >= 0]
  return Layout(names, parents, left, right, np.array([c for c, _ in bones], np.int32),
                np.array([p for _, p in bones], np.int32))


LAYOUTS = {
    NUM_JOINTS: _layout(JOINT_NAMES, PARENTS, LEFT, RIGHT),
    len(HUMANEVA15_PARENTS): _layout(HUMANEVA15_JOINT_NAMES, HUMANEVA15_PARENTS,
                                     HUMANEVA15_LEFT, HUMANEVA15_RIGHT),
}


def for_num_joints(num_joints: int) -> Layout:
  """The layout with `num_joints` joints: 17 (Human3.6M) or 15 (HumanEva-I)."""
  if num_joints not in LAYOUTS:
    raise ValueError(f"No joint layout with {num_joints} joints; known: {sorted(LAYOUTS)} "
                     "(Human3.6M 17, HumanEva-I 15).")
  return LAYOUTS[num_joints]
