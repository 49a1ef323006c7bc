"""BVH export: files re-import (project parser and an independent reader) to the joints."""

import numpy as np
import pytest

from posemachine import export_bvh, skeleton
from posemachine.data import synthetic
from posemachine.errors import DataError

MM = 1e-3


def mini_fk(text):
  """An independent minimal BVH reader + forward kinematics: (F, J, 3), no End Sites.

  Rotation channels compose in the order listed (R = R1 R2 R3); position channels replace
  the OFFSET (the BVH convention, and Blender's).
  """
  rows = [l.split() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
  m = next(i for i, r in enumerate(rows) if r[0] == "MOTION")
  parents, offsets, channels, stack, current = [], [], [], [], None
  for r in rows[:m]:
    if r[0] in ("ROOT", "JOINT"):
      parents.append(stack[-1] if stack else -1)
      offsets.append(None)
      channels.append([])
      current = len(parents) - 1
    elif r[0] == "End":
      current = -1
    elif r[0] == "{":
      stack.append(current)
    elif r[0] == "}":
      stack.pop()
    elif r[0] == "OFFSET" and current >= 0:
      offsets[current] = np.array(r[1:4], float)
    elif r[0] == "CHANNELS":
      channels[current] = r[2:]
  assert rows[m + 1][0] == "Frames:" and rows[m + 2][:2] == ["Frame", "Time:"]
  motion = np.array(rows[m + 3:], float)
  assert motion.shape == (int(rows[m + 1][1]), sum(map(len, channels)))

  def rot(axis, deg):
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    r = np.zeros(a.shape + (3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r[..., axis, axis], r[..., i, i], r[..., j, j] = 1, c, c
    r[..., i, j], r[..., j, i] = -s, s
    return r

  f = len(motion)
  pos, glob, col = np.zeros((f, len(parents), 3)), np.zeros((f, len(parents), 3, 3)), 0
  for j, p in enumerate(parents):
    t = np.tile(offsets[j], (f, 1))
    r = np.tile(np.eye(3), (f, 1, 1))
    for ch in channels[j]:
      axis = "XYZ".index(ch[0])
      if ch.endswith("position"):
        t[:, axis] = motion[:, col]
      else:
        r = r @ rot(axis, motion[:, col])
      col += 1
    pos[:, j] = t if p < 0 else pos[:, p] + np.einsum("fij,fj->fi", glob[:, p], t)
    glob[:, j] = r if p < 0 else glob[:, p] @ r
  return pos


def project_fk(path):
  """Re-import through posemachine.data.bvh, header comments (units, axes) included."""
  bvh = pytest.importorskip("posemachine.data.bvh")
  with open(path) as f:
    assert "#" in f.read()  # the units/axes comment is there, and the parser skips it
  data = bvh.read_bvh(path)
  assert data.joint_names == list(export_bvh.BVH_JOINT_NAMES)
  np.testing.assert_array_equal(data.parents, skeleton.PARENTS)
  return bvh.forward_kinematics(data)


def walk(frames=60, seed=0):
  """A rigid-body synthetic walk: world joints (T, 17, 3) metres, Y up, and camera-frame."""
  body = synthetic.sample_body(np.random.default_rng(seed))
  world = synthetic.simulate_motion("walk", body, np.random.default_rng(seed + 1), frames, 50.0)
  return world, world * np.array([1.0, -1.0, -1.0])  # camera axes: y down, z forward.


def test_rigid_motion_reimports_within_1mm(tmp_path):
  world, cam = walk()
  path = str(tmp_path / "walk.bvh")
  encoded = export_bvh.write_bvh(path, cam, fps=50.0, root_trajectory=cam[:, 0])
  expected = world - world[:1, :1]          # BVH frame = world (Y up); root from frame 0.
  with open(path) as f:
    text = f.read()
  for fk in (mini_fk(text), project_fk(path)):
    assert fk.shape == (60, 17, 3)
    assert np.abs(fk - expected).max() < 1 * MM
  assert np.abs(encoded - expected).max() < 1 * MM


def test_stretch_reimports_any_input_within_1mm(tmp_path):
  _, cam = walk(40)
  noisy = cam + np.random.default_rng(2).normal(0, 0.02, cam.shape)  # bones change length
  path = str(tmp_path / "noisy.bvh")
  export_bvh.write_bvh(path, noisy, stretch=True)
  with open(path) as f:
    text = f.read()
  assert "CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation" in text
  expected = noisy * np.array([1.0, -1.0, -1.0])
  for fk in (mini_fk(text), project_fk(path)):
    assert np.abs(fk - expected).max() < 1 * MM


def test_rigid_fit_of_noisy_input(tmp_path):
  _, cam = walk(40)
  noisy = cam + np.random.default_rng(3).normal(0, 0.01, cam.shape)
  path = str(tmp_path / "rigid.bvh")
  encoded = export_bvh.write_bvh(path, noisy)
  fk = project_fk(path)
  assert np.abs(fk - encoded).max() < 1 * MM       # the file holds what write_bvh reports
  target = noisy * np.array([1.0, -1.0, -1.0])
  lengths = skeleton.bone_lengths(fk)
  np.testing.assert_allclose(lengths, np.broadcast_to(lengths[0], lengths.shape), atol=1e-5)
  np.testing.assert_allclose(lengths[0], skeleton.bone_lengths(target).mean(0), atol=1e-5)
  # Bones below single-child joints keep the observed direction exactly.
  for c, p in skeleton.BONES:
    if p not in (0, 8):
      d_fk = fk[:, c] - fk[:, p]
      d_in = target[:, c] - target[:, p]
      cos = (d_fk * d_in).sum(-1) / np.linalg.norm(d_fk, axis=-1) / np.linalg.norm(d_in, axis=-1)
      assert cos.min() > 1 - 1e-9, skeleton.JOINT_NAMES[c]


def test_header_units_axes_and_blender_layout(tmp_path):
  _, cam = walk(5)
  path = tmp_path / "h.bvh"
  export_bvh.write_bvh(str(path), cam, fps=25.0, comment="source: test")
  lines = path.read_text().splitlines()
  assert lines[0] == "HIERARCHY"              # Blender requires it first.
  root = next(i for i, l in enumerate(lines) if l.startswith("ROOT"))
  header = "\n".join(lines[1:root])
  assert all(l.startswith("#") for l in lines[1:root])
  assert not any(l.lstrip().startswith("#") for l in lines[root:])
  for words in ("metres", "Y up", "towards the camera", "Zrotation Xrotation Yrotation",
                "source: test"):
    assert words in header
  assert "Frames: 5" in lines and "Frame Time: 0.04000000" in lines
  assert sum(l.strip().startswith(("ROOT", "JOINT")) for l in lines) == 17


def test_comment_free_file_reads_with_the_project_parser(tmp_path):
  bvh = pytest.importorskip("posemachine.data.bvh")
  world, cam = walk(10)
  path = str(tmp_path / "plain.bvh")
  export_bvh.write_bvh(path, cam, root_trajectory=cam[:, 0], comments=False)
  fk = bvh.forward_kinematics(bvh.read_bvh(path))
  assert np.abs(fk - (world - world[:1, :1])).max() < 1 * MM


def test_euler_round_trip_and_bad_input(tmp_path):
  angles = np.random.default_rng(0).uniform(-180, 180, (500, 3))
  r = export_bvh.rotation_zxy(angles)
  np.testing.assert_allclose(export_bvh.rotation_zxy(export_bvh.euler_zxy(r)), r, atol=1e-9)
  gimbal = export_bvh.rotation_zxy(np.array([[30.0, 90.0, 40.0]]))
  np.testing.assert_allclose(export_bvh.rotation_zxy(export_bvh.euler_zxy(gimbal)), gimbal,
                             atol=1e-9)
  _, cam = walk(4)
  cam[2, 13, 1] = np.nan
  with pytest.raises(DataError, match=r"frame 2, joint 13 \(LeftHand\)"):
    export_bvh.write_bvh(str(tmp_path / "x.bvh"), cam)
  with pytest.raises(DataError, match=r"\(T>0, 17, 3\)"):
    export_bvh.write_bvh(str(tmp_path / "x.bvh"), cam[:, :16])
