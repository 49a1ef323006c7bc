"""BVH: parser, forward kinematics, the 17-joint mapping, and the 'mocap' source.

The real CMU files are read from ../shared/mocap/cmu (next to the repository); those tests
skip cleanly where it is absent. The files are never copied into the repository.
"""

import os

import numpy as np
import pytest

from posemachine import config_defaults, skeleton
from posemachine.data import bvh, pipeline, views
from posemachine.data.sequences import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CMU = os.path.join(REPO, "..", "shared", "mocap", "cmu")
CMU_FILES = sorted(f for f in os.listdir(CMU) if f.endswith(".bvh")) if os.path.isdir(CMU) else []
needs_cmu = pytest.mark.skipif(not CMU_FILES, reason="../shared/mocap/cmu not present")

# A small humanoid rig with Mixamo-style names, Z up, centimetres, ZXY rotation order.
_LIMB = """\
{ind}JOINT {name}
{ind}{{
{ind}  OFFSET {off}
{ind}  CHANNELS 3 Zrotation Xrotation Yrotation
{inner}
{ind}}}"""


def _chain(names_offsets, ind="  ", end=(0, 0, -8)):
  """Nested JOINT blocks, the last with an End Site."""
  if not names_offsets:
    return f"{ind}End Site\n{ind}{{\n{ind}  OFFSET {end[0]} {end[1]} {end[2]}\n{ind}}}"
  (name, off), rest = names_offsets[0], names_offsets[1:]
  return _LIMB.format(ind=ind, name=name, off=" ".join(map(str, off)),
                      inner=_chain(rest, ind + "  ", end))


def mixamo_like_bvh(frames=3, rotation=None):
  """BVH text: Hips(6 ch) with legs, spine chain, arms, head (+ End Site 'HeadTop')."""
  legs = [_chain([(f"mixamorig:{s}UpLeg", (x * 9, 0, -6)), (f"mixamorig:{s}Leg", (0, 0, -42)),
                  (f"mixamorig:{s}Foot", (0, 0, -41))], "  ", (0, 12, -7))
          for s, x in (("Left", 1), ("Right", -1))]
  arms = [_chain([(f"mixamorig:{s}Shoulder", (x * 3, 0, 8)), (f"mixamorig:{s}Arm", (x * 13, 0, 0)),
                  (f"mixamorig:{s}ForeArm", (x * 28, 0, 0)), (f"mixamorig:{s}Hand", (x * 25, 0, 0))],
                 "        ", (x * 8, 0, 0)) for s, x in (("Left", 1), ("Right", -1))]
  head = _chain([("mixamorig:Neck", (0, 0, 14)), ("mixamorig:Head", (0, 2, 10))], "        ",
                (0, 0, 18))
  spine = ("  JOINT mixamorig:Spine\n  {\n    OFFSET 0 0 10\n"
           "    CHANNELS 3 Zrotation Xrotation Yrotation\n"
           "    JOINT mixamorig:Spine1\n    {\n      OFFSET 0 0 12\n"
           "      CHANNELS 3 Zrotation Xrotation Yrotation\n"
           "      JOINT mixamorig:Spine2\n      {\n        OFFSET 0 0 12\n"
           "        CHANNELS 3 Zrotation Xrotation Yrotation\n"
           + "\n".join(arms + [head]) + "\n      }\n    }\n  }")
  text = ("HIERARCHY\nROOT mixamorig:Hips\n{\n  OFFSET 0 0 95\n"
          "  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation\n"
          + "\n".join(legs) + "\n" + spine + "\n}\n")
  num = 6 + 3 * 19  # root + 19 three-channel joints
  motion = np.zeros((frames, num))
  motion[:, 2] = 95.0
  motion[:, 0] = np.arange(frames) * 2.0  # walks along x
  if rotation is not None:
    motion[:, 3:6] = rotation
  lines = [" ".join(f"{v:g}" for v in row) for row in motion]
  return text + f"MOTION\nFrames: {frames}\nFrame Time: 0.0333333\n" + "\n".join(lines) + "\n"


def _rot(axis, deg):
  return bvh.axis_rotation(axis, np.array([deg]))[0]


def test_forward_kinematics_follows_the_channel_order():
  text = """HIERARCHY
ROOT Root
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Yrotation Xrotation Zrotation
  JOINT Child
  {
    OFFSET 0 2 0
    CHANNELS 3 Xrotation Zrotation Yrotation
    End Site
    {
      OFFSET 1 0 0
    }
  }
}
MOTION
Frames: 2
Frame Time: 0.01
1 2 3 10 20 30 40 50 60
0 0 0 0 0 0 0 0 0
"""
  b = bvh.parse_bvh(text)
  assert b.joint_names == ["Root", "Child"] and list(b.parents) == [-1, 0]
  assert b.channels[1] == ["Xrotation", "Zrotation", "Yrotation"]
  assert b.motion.shape == (2, 9) and b.fps == pytest.approx(100.0)
  pos = bvh.forward_kinematics(b, end_sites=True)
  assert pos.shape == (2, 3, 3) and b.end_site_names == ["Child_End"]
  r_root = _rot(1, 10) @ _rot(0, 20) @ _rot(2, 30)   # Y X Z, as listed
  r_child = _rot(0, 40) @ _rot(2, 50) @ _rot(1, 60)  # X Z Y
  root = np.array([1.0, 2, 3])
  child = root + r_root @ [0, 2, 0]
  np.testing.assert_allclose(pos[0, 0], root)
  np.testing.assert_allclose(pos[0, 1], child)
  np.testing.assert_allclose(pos[0, 2], child + r_root @ r_child @ [1, 0, 0])
  np.testing.assert_allclose(pos[1], [[0, 0, 0], [0, 2, 0], [1, 2, 0]])
  assert bvh.forward_kinematics(b).shape == (2, 2, 3)


def test_parse_errors_name_the_line():
  good = mixamo_like_bvh(frames=3)
  lines = good.splitlines()
  with pytest.raises(DataError, match=r"<string>: truncated: Frames: 3 but only 2 motion lines"):
    bvh.parse_bvh("\n".join(lines[:-1]))
  bad = list(lines)
  bad[-2] = " ".join(bad[-2].split()[:-1])
  n = len(lines) - 1  # 1-based number of that line
  with pytest.raises(DataError, match=rf"line {n}: 62 values, expected 63"):
    bvh.parse_bvh("\n".join(bad))
  i = next(k for k, l in enumerate(lines) if "Zrotation Xrotation Yrotation" in l and
           "CHANNELS 3" in l)
  bad = list(lines)
  bad[i] = bad[i].replace("Xrotation", "Wrotation")
  with pytest.raises(DataError, match=rf"line {i + 1}: unknown channel 'Wrotation'"):
    bvh.parse_bvh("\n".join(bad))
  bad = list(lines)
  bad[i] = bad[i].replace("Xrotation", "Zrotation")
  with pytest.raises(DataError, match=rf"line {i + 1}: channel Zrotation repeated"):
    bvh.parse_bvh("\n".join(bad))
  bad = list(lines)
  bad[i] = bad[i].replace("CHANNELS 3", "CHANNELS 4")
  with pytest.raises(DataError, match=rf"line {i + 1}: CHANNELS declares 4 channels .* lists 3"):
    bvh.parse_bvh("\n".join(bad))
  with pytest.raises(DataError, match="no MOTION section"):
    bvh.parse_bvh(good[:good.index("MOTION")])
  with pytest.raises(DataError, match=r"f.bvh: line 4: OFFSET value 'x' is not a number"):
    bvh.parse_bvh(good.replace("OFFSET 0 0 95", "OFFSET 0 x 95"), source="f.bvh")
  with pytest.raises(DataError, match=r"Frame Time 33.3 is 0.03003 frames per second.*"
                                      r"milliseconds"):
    bvh.parse_bvh(good.replace("Frame Time: 0.0333333", "Frame Time: 33.3"))
  bad = list(lines)
  bad[i] = bad[i].replace("CHANNELS 3", "CHANNELS -1")
  with pytest.raises(DataError, match=rf"line {i + 1}: CHANNELS count -1 is negative"):
    bvh.parse_bvh("\n".join(bad))


def test_generic_rig_mapping_units_and_resampling():
  b = bvh.parse_bvh(mixamo_like_bvh(frames=5))
  assert bvh.auto_scale(b) == 0.01  # centimetres
  x = bvh.to_h36m17(b, up_axis="z")  # (F, 17, 3) metres, Y up
  assert x.shape == (5, 17, 3)
  w = bvh.h36m_mapping(b)
  names = b.joint_names + b.end_site_names
  pick = {skeleton.JOINT_NAMES[k]: [names[j] for j in np.flatnonzero(w[k])] for k in range(17)}
  assert pick["left_shoulder"] == ["mixamorig:LeftArm"]  # not the clavicle 'Shoulder'
  assert pick["left_wrist"] == ["mixamorig:LeftHand"]
  assert pick["thorax"] == ["mixamorig:Neck"] and pick["neck"] == ["mixamorig:Head"]
  assert pick["head"] == ["mixamorig:Head_End"]
  assert pick["pelvis"] == ["mixamorig:LeftUpLeg", "mixamorig:RightUpLeg"]
  assert pick["spine"] == ["mixamorig:Spine1"]
  # Upright, Y up: head above pelvis above ankles; the root moves 2 cm per frame along x.
  assert (x[:, 10, 1] > x[:, 0, 1]).all() and (x[:, 0, 1] > x[:, 3, 1]).all()
  np.testing.assert_allclose(np.diff(x[:, 0, 0]), 0.02, atol=1e-9)
  np.testing.assert_allclose(x[0, 4, 0] - x[0, 1, 0], 0.18, atol=1e-9)  # hips 18 cm apart
  # Resampling 30 -> 15 fps keeps every other frame; 30 -> 60 interpolates.
  np.testing.assert_allclose(bvh.resample(x, 30.0, 15.0), x[::2])
  up = bvh.resample(x, 30.0, 60.0)
  assert len(up) == 9
  np.testing.assert_allclose(up[1], (x[0] + x[1]) / 2)


def _limb(x, chain):
  return sum(np.linalg.norm(x[:, a] - x[:, b], axis=-1) for a, b in zip(chain[:-1], chain[1:]))


@needs_cmu
@pytest.mark.parametrize("name", CMU_FILES)
def test_cmu_files_give_plausible_upright_bodies(name):
  b = bvh.read_bvh(os.path.join(CMU, name))
  assert b.num_joints == 31 and sum(map(len, b.channels)) == 96
  assert b.fps == pytest.approx(120.0, rel=1e-3)
  assert bvh.auto_scale(b) == pytest.approx(0.0254 / 0.45)
  x = bvh.to_h36m17(b)  # metres, Y up
  # Standing height: the body straightened, from the sole (the lowest foot point of the
  # standing reference frame 0) through ankle, knee, hip, spine, thorax, neck, head top.
  feet = bvh.forward_kinematics(b, end_sites=True)[0] * bvh.CMU_UNIT
  sole = x[0, (3, 6), 1].mean() - feet[:, 1].min()
  legs = (_limb(x, (4, 5, 6)) + _limb(x, (1, 2, 3))).mean() / 2
  trunk = _limb(x, (0, 7, 8, 9, 10)).mean()
  height = sole + legs + trunk
  assert 1.4 <= height <= 2.0, height
  # Left and right limbs (from the trunk to the extremity) agree within 5%.
  for left, right in (((0, 4, 5, 6), (0, 1, 2, 3)), ((8, 11, 12, 13), (8, 14, 15, 16))):
    l, r = _limb(x, left).mean(), _limb(x, right).mean()
    assert abs(l - r) / ((l + r) / 2) < 0.05, (left, l, r)
  # Limb bones (one BVH segment each) keep their length in every frame.
  lengths = skeleton.bone_lengths(x)[:, [1, 2, 4, 5, 11, 12, 14, 15]]
  np.testing.assert_allclose(lengths, np.broadcast_to(lengths[0], lengths.shape), atol=1e-9)
  # Upright: the head above the pelvis, the pelvis above both ankles, in every frame.
  assert (x[:, 10, 1] > x[:, 0, 1] + 0.3).all()
  assert (x[:, 0, 1] > x[:, (3, 6), 1].max(-1)).all()


@needs_cmu
def test_both_cmu_rig_namings_map_to_the_same_anatomy():
  mb = bvh.read_bvh(os.path.join(CMU, "08_05.bvh"))      # LeftUpLeg / LeftArm / Neck1
  tds = bvh.read_bvh(os.path.join(CMU, "131_01.bvh"))    # LeftHip / LeftShoulder / Neck
  for b, expect in ((mb, {"left_hip": "LeftUpLeg", "left_shoulder": "LeftArm",
                          "left_wrist": "LeftHand", "thorax": "Neck1", "neck": "Head",
                          "head": "Head_End", "spine": "Spine"}),
                    (tds, {"left_hip": "LeftHip", "left_shoulder": "LeftShoulder",
                           "left_wrist": "LeftWrist", "thorax": "Neck", "neck": "Head",
                           "head": "Head_End", "spine": "Chest"})):
    w = bvh.h36m_mapping(b)
    names = b.joint_names + b.end_site_names
    for joint, name in expect.items():
      assert [names[j] for j in np.flatnonzero(w[skeleton.JOINT_NAMES.index(joint)])] == [name]
  # Same anatomy: the two subjects' bones within 25% of each other (the hip width, pelvis
  # to hip, is left out: 99 mm vs 69 mm in the files' own offsets).
  a, c = (np.delete(skeleton.bone_lengths(bvh.to_h36m17(b)).mean(0), [0, 3])
          for b in (mb, tds))
  assert (np.abs(a - c) / c < 0.25).all(), (a, c)


@needs_cmu
def test_mocap_source_splits_and_cameras(tmp_path):
  c = config_defaults.get_config()
  c.data.source = "mocap"
  m = c.data.mocap
  m.train_dir = m.test_dir = CMU
  m.train_glob, m.test_glob = "09_04.bvh,16_41.bvh", "02_03.bvh"
  m.cameras_per_clip, m.test_cameras_per_clip = 2, 1
  train = pipeline.load_split(c, "train")
  val = pipeline.load_split(c, "val")
  test = pipeline.load_split(c, "test")
  assert set(train.action) == {"09_04", "16_41"} and set(train.subject) == {"09", "16"}
  assert set(test.action) == {"02_03"} and test.num_sequences == 1
  # 120 -> 30 fps after dropping the T-pose frame: 137 frames -> 35, 160 -> 40.
  n09 = [n for n, a in zip(train.lengths, train.action) if a == "09_04"]
  v09 = [n for n, a in zip(val.lengths, val.action) if a == "09_04"]
  assert n09[0] + v09[0] == 35 and v09[0] == 4 and len(n09) == 2
  assert np.abs(train.pose_3d[:, 0]).max() == 0  # root-relative
  assert test.extras["root_3d"][:, 2].min() > 1.0  # in front of the camera
  # The cameras of one clip are synchronised views (data/views.py): one rotated into the
  # other gives the other's ground truth.
  paired = views.attach(train)
  np.testing.assert_allclose(train.pose_3d @ paired.extras["view_rotation"],
                             train.pose_3d[paired.extras["view_partner_frame"]], atol=1e-5)
  # The same config gives the same cameras; the test split has its own.
  again = pipeline.load_split(c, "test")
  np.testing.assert_array_equal(again.pose_2d, test.pose_2d)
  c.data.mocap.test_camera_seed = 7
  assert not np.allclose(pipeline.load_split(c, "test").pose_2d, test.pose_2d)
  c.data.mocap.test_dir = str(tmp_path)
  with pytest.raises(DataError, match="No files matching"):
    pipeline.load_split(c, "test")


@needs_cmu
def test_mocap_config_trains_and_evaluates(tmp_path):
  import importlib.util  # pylint: disable=g-import-not-at-top
  from posemachine import train  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("mocap_config",
                                                os.path.join(REPO, "configs", "mocap.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  m = c.data.mocap
  m.train_dir = m.test_dir = CMU
  m.train_glob, m.test_glob = "16_41.bvh", "09_04.bvh"
  m.cameras_per_clip = m.test_cameras_per_clip = 1
  c.model.hidden = c.model.projector_hidden = 16
  c.data.window = 8
  t = c.train
  t.num_steps, t.batch_size, t.eval_every, t.log_every, t.warmup_steps, t.num_devices = (
      2, 8, 2, 1, 1, 1)
  c.eval.batch_size, c.eval.num_plot_frames = 8, 1
  results = train.train_and_evaluate(c, str(tmp_path))
  assert set(results["per_action"]) == {"09_04"}
  assert results["num_frames"] == 35 and results["baseline_mean_pose"]["mpjpe"] > 0
  assert "| Metric (mm) | 09_04 | Avg |" in (tmp_path / "eval_table.md").read_text()
