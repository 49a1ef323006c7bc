"""Human3.6M from tiny files in the exact VideoPose3D format, built here from synthetic motion.

Covers the calibration file (its reader, VideoPose3D converter and errors; world -> camera
-> pixels and back), the reader's values,
the protocols' splits, clear errors (missing file/subject, wrong joint count, truncated or
malicious file), the per-action table, and `python -m posemachine.main` end to end.
"""

import json
import math
import os
import subprocess
import sys

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from posemachine import config_defaults, geometry, skeleton, tables
from posemachine.data import h36m, h36m_calibration, pipeline, synthetic, views
from posemachine.data.sequences import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_CAMERAS = os.path.join(REPO, "..", "shared", "h36m", "cameras.json")
FRAMES = 10
ACTIONS = ("Walking", "Walking 1", "Eating 2")


def y_up_to_h36m_world(p):
  """Synthetic world (Y up) -> Human3.6M world (Z up): (x, y, z) -> (x, -z, y)."""
  return np.stack([p[..., 0], -p[..., 2], p[..., 1]], -1)


def look_at(centre, target):
  """Camera-to-world rotation (columns: camera x right, y down, z forward) of a camera at
  `centre` looking at `target`, Z up."""
  z = np.asarray(target, float) - centre
  z /= np.linalg.norm(z)
  x = np.cross(z, [0.0, 0.0, 1.0])
  x /= np.linalg.norm(x)
  return np.stack([x, np.cross(z, x), z], axis=1)


def tiny_calibration(subjects=h36m.SUBJECTS) -> dict:
  """A plausible Human3.6M-like calibration (the package ships none; the real one is the
  user's): four cameras 4.5-5.5 m from the capture volume at the VideoPose3D azimuths,
  with the real intrinsics of `geometry.H36M_INTRINSICS`."""
  cameras = {}
  for i, s in enumerate(subjects):
    cameras[s] = {}
    for j, (cam_id, (f, c, k, p, (w, h))) in enumerate(geometry.H36M_INTRINSICS.items()):
      az = math.radians((70, -70, 110, -110)[j] + 3 * i)
      centre = np.array([5.0 * math.cos(az), 5.0 * math.sin(az), 1.5 + 0.05 * i])
      cameras[s][cam_id] = {"R": look_at(centre, [0.0, 0.0, 0.9]).tolist(),
                            "T": centre.tolist(), "f": list(f), "c": list(c), "k": list(k),
                            "p": list(p), "w": w, "h": h}
  return {"cameras": cameras}


def tiny_cameras(subjects=h36m.SUBJECTS) -> dict:
  return h36m_calibration.validate(tiny_calibration(subjects), "tiny")


def make_world(seed, frames):
  rng = np.random.default_rng(seed)
  body = synthetic.sample_body(rng)
  world17 = y_up_to_h36m_world(synthetic.simulate_motion("squat", body, rng, frames, 50.0))
  raw = world17[:, :1] + rng.normal(0, 0.05, size=(frames, 32, 3))  # unused joints: noise.
  raw[:, skeleton.H36M_FROM_32] = world17
  return raw.astype(np.float32)


def write_tiny_h36m(directory, keypoints="gt", subjects=h36m.SUBJECTS, actions=ACTIONS,
                    frames=FRAMES, extra_2d=2, joints_3d=32):
  """data_3d_h36m.npz + data_2d_h36m_<keypoints>.npz exactly as VideoPose3D writes them,
  and h36m_cameras.json (`tiny_calibration`).

  The 2D is the calibration's projection of the 17 joints, `extra_2d` frames longer than
  the mocap (as in the real files). Returns (positions_3d, positions_2d).
  """
  os.makedirs(directory, exist_ok=True)
  h36m_calibration.write(tiny_calibration(),
                         os.path.join(directory, h36m_calibration.FILE_NAME))
  cameras = tiny_cameras()
  pos3d, pos2d = {}, {}
  for i, s in enumerate(subjects):
    pos3d[s], pos2d[s] = {}, {}
    for j, a in enumerate(actions):
      raw = make_world([i, j], frames + extra_2d)
      pos3d[s][a] = raw[:frames, :joints_3d]
      views = []
      for cam_id in h36m.CAMERA_ORDER:
        cam = h36m_calibration.camera(cameras, s, cam_id)
        pc = h36m.world_to_camera(raw[:, skeleton.H36M_FROM_32], cam["R"], cam["T"])
        views.append(h36m.project(pc, cam).astype(np.float32))
      pos2d[s][a] = views
  np.savez_compressed(os.path.join(directory, "data_3d_h36m.npz"), positions_3d=pos3d)
  metadata = {"num_joints": 17, "keypoints_symmetry": [list(skeleton.LEFT),
                                                       list(skeleton.RIGHT)]}
  if keypoints != "gt":
    metadata["layout_name"] = "h36m"
  np.savez_compressed(os.path.join(directory, f"data_2d_h36m_{keypoints}.npz"),
                      positions_2d=pos2d, metadata=metadata)
  return pos3d, pos2d


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("h36m"))
  pos3d, pos2d = write_tiny_h36m(d)
  return d, pos3d, pos2d


def config_for(directory, **h36m_overrides):
  c = config_defaults.get_config()
  c.data.source = "h36m"
  c.data.dir = directory
  for k, v in h36m_overrides.items():
    c.data.h36m[k] = v
  return c


def matrix_to_quaternion(r):
  """(3, 3) rotation -> unit quaternion (w, x, y, z), w >= 0 (Shepperd, trace branch and
  the largest-diagonal branches)."""
  t = np.trace(r)
  if t > 0:
    w = math.sqrt(1 + t) / 2
    return np.array([w, (r[2, 1] - r[1, 2]) / (4 * w), (r[0, 2] - r[2, 0]) / (4 * w),
                     (r[1, 0] - r[0, 1]) / (4 * w)])
  i = int(np.argmax(np.diag(r)))
  j, k = (i + 1) % 3, (i + 2) % 3
  q = np.zeros(4)
  q[1 + i] = math.sqrt(1 + r[i, i] - r[j, j] - r[k, k]) / 2
  q[0] = (r[k, j] - r[j, k]) / (4 * q[1 + i])
  q[1 + j] = (r[j, i] + r[i, j]) / (4 * q[1 + i])
  q[1 + k] = (r[k, i] + r[i, k]) / (4 * q[1 + i])
  return q * np.sign(q[0] or 1.0)


def videopose3d_source(table) -> str:
  """A file laid out as VideoPose3D's common/h36m_dataset.py (its imports, a class and the
  two literal camera tables, S2 with empty extrinsics), made from `table`."""
  intr = [{"id": cam_id, "center": list(c), "focal_length": list(f),
           "radial_distortion": list(k), "tangential_distortion": list(p), "res_w": w,
           "res_h": h, "azimuth": 0} for cam_id, (f, c, k, p, (w, h))
          in geometry.H36M_INTRINSICS.items()]
  extr = {"S2": [{}, {}, {}, {}]}
  for s, cams in table["cameras"].items():
    extr[s] = [{"orientation": matrix_to_quaternion(np.asarray(cams[c]["R"])).tolist(),
                "translation": (np.asarray(cams[c]["T"]) * 1000).tolist()}
               for c in h36m.CAMERA_ORDER]
  return ("import numpy as np\nfrom common.skeleton import Skeleton\n\n"
          f"h36m_cameras_intrinsic_params = {intr!r}\n\n"
          f"h36m_cameras_extrinsic_params = {extr!r}\n\n"
          "class Human36mDataset:\n    def __init__(self, path):\n        raise SystemExit\n")


def test_calibration_converted_from_videopose3d(tmp_path):
  table = tiny_calibration(("S1", "S9"))
  src = tmp_path / "h36m_dataset.py"
  src.write_text(videopose3d_source(table))
  out = tmp_path / "h36m_cameras.json"
  assert h36m_calibration.main(["--videopose3d", str(src), "--out", str(out)]) == 0
  got = h36m_calibration.read(str(out))
  assert sorted(got) == ["S1", "S9"]  # S2's empty extrinsics are left out.
  want = tiny_cameras(("S1", "S9"))
  for s in want:
    for c in h36m.CAMERA_ORDER:
      for k in ("R", "T", "f", "c", "k", "p", "w", "h"):
        np.testing.assert_allclose(got[s][c][k], want[s][c][k], atol=1e-9, err_msg=k)
  # Intrinsics agree with the ones the synthetic data uses.
  for cam_id, (f, c, k, p, (w, h)) in geometry.H36M_INTRINSICS.items():
    cam = h36m_calibration.camera(got, "S9", cam_id)
    np.testing.assert_allclose(cam["f"], f)
    assert (cam["w"], cam["h"]) == (w, h)


def test_shared_calibration_reads_and_matches_the_intrinsics():
  if not os.path.exists(SHARED_CAMERAS):
    pytest.skip("../shared/h36m/cameras.json not present")
  cams = h36m_calibration.read(SHARED_CAMERAS)
  # VideoPose3D's S1 / 54138969 orientation (w, x, y, z, camera-to-world) is this R.
  q = [0.1407056450843811, -0.1500701755285263, -0.755240797996521, 0.6223280429840088]
  np.testing.assert_allclose(h36m_calibration.quaternion_to_matrix(q),
                             cams["S1"]["54138969"]["R"], atol=1e-6)
  np.testing.assert_allclose(np.array([1841.1070556640625, 4955.28466796875,
                                       1563.4454345703125]) / 1000,
                             cams["S1"]["54138969"]["T"], atol=1e-6)
  for s in h36m.SUBJECTS:
    assert sorted(cams[s]) == sorted(h36m.CAMERA_ORDER)
  for cam_id, (f, c, k, p, (w, h)) in geometry.H36M_INTRINSICS.items():
    cam = h36m_calibration.camera(cams, "S9", cam_id)
    np.testing.assert_allclose(cam["f"], f, atol=1e-3)
    np.testing.assert_allclose(cam["c"], c, atol=1e-3)
    np.testing.assert_allclose(cam["k"], k, atol=1e-5)
    assert (cam["w"], cam["h"]) == (w, h)


def test_calibration_errors(tmp_path):
  missing = tmp_path / "none" / "h36m_cameras.json"
  with pytest.raises(DataError, match="python -m posemachine.data.h36m_calibration"):
    h36m_calibration.read(str(missing))
  table = tiny_calibration(("S1",))
  cases = [
      ("R", [[1, 0], [0, 1]], r"\['R'\] has shape \(2, 2\)"),
      ("T", [0, float("nan"), 1], "non-finite"),
      ("w", 0, r"\['w'\] = 0; expected a positive image size"),
      ("h", float("inf"), r"\['h'\] = inf; expected a positive image size"),
      ("f", [-1, 1000], "positive focal lengths"),
      ("T", [1841.1, 4955.3, 1563.4], r"expected metres \(millimetres"),
  ]
  for i, (field, value, message) in enumerate(cases):
    bad = json.loads(json.dumps(table))
    bad["cameras"]["S1"]["54138969"][field] = value
    path = tmp_path / f"bad_{i}.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(DataError, match=message):
      h36m_calibration.read(str(path))
  skew = json.loads(json.dumps(table))
  skew["cameras"]["S1"]["54138969"]["R"] = [[1, 0.5, 0], [0, 1, 0], [0, 0, 1]]
  (tmp_path / "skew.json").write_text(json.dumps(skew))
  with pytest.raises(DataError, match="not a rotation matrix"):
    h36m_calibration.read(str(tmp_path / "skew.json"))
  (tmp_path / "trunc.json").write_text(json.dumps(table)[:200])
  with pytest.raises(DataError, match="trunc.json: not a valid JSON"):
    h36m_calibration.read(str(tmp_path / "trunc.json"))
  del table["cameras"]["S1"]["54138969"]["k"]
  (tmp_path / "nok.json").write_text(json.dumps(table))
  with pytest.raises(DataError, match=r"missing field\(s\) \['k'\]"):
    h36m_calibration.read(str(tmp_path / "nok.json"))
  with pytest.raises(DataError, match="no calibration for subject 'S7'"):
    h36m_calibration.camera(tiny_cameras(("S1",)), "S7", "54138969")
  # A file that is not VideoPose3D's h36m_dataset.py.
  (tmp_path / "other.py").write_text("x = 1\n")
  with pytest.raises(DataError, match="h36m_cameras_intrinsic_params"):
    h36m_calibration.from_videopose3d(str(tmp_path / "other.py"))


def test_world_camera_pixels_round_trip():
  rng = np.random.default_rng(0)
  world = rng.uniform([-1, -1, 0], [1, 1, 2], size=(50, 3))  # the capture volume, metres.
  cameras = tiny_cameras()
  for subject in ("S1", "S11"):
    for cam_id in h36m.CAMERA_ORDER:
      cam = h36m_calibration.camera(cameras, subject, cam_id)
      pc = h36m.world_to_camera(world, cam["R"], cam["T"])
      assert (pc[:, 2] > 2).all()  # in front of every camera
      # The NumPy twins agree with posemachine.geometry (the JAX functions).
      np.testing.assert_allclose(
          pc, np.asarray(geometry.world_to_camera(jnp.asarray(world), cam["R"], cam["T"])),
          atol=1e-5)
      px = h36m.project(pc, cam)
      jcam = geometry.Camera(f=cam["f"], c=cam["c"], k=cam["k"], p=cam["p"], w=cam["w"],
                             h=cam["h"])
      np.testing.assert_allclose(px, np.asarray(geometry.project_to_2d(jnp.asarray(pc), jcam)),
                                 atol=1e-3)
      assert ((px > 0) & (px < 1000)).all()
      # Back: pixels + depth -> camera -> world.
      back = np.asarray(geometry.camera_to_world(
          jnp.asarray(h36m.unproject(px, pc[:, 2], cam)), cam["R"], cam["T"]))
      np.testing.assert_allclose(back, world, atol=1e-5)
      norm = h36m.normalize(px, cam["w"], cam["h"])
      np.testing.assert_allclose(norm, np.asarray(
          geometry.normalize_screen_coordinates(jnp.asarray(px), cam["w"], cam["h"])),
                                 atol=1e-5)
      np.testing.assert_allclose(np.asarray(geometry.image_coordinates(
          jnp.asarray(norm), cam["w"], cam["h"])), px, atol=1e-3)


def test_reader_values_trim_and_labels(tiny):
  d, pos3d, pos2d = tiny
  seqs = pipeline.load_split(config_for(d, val_fraction=0.0), "test")
  assert sorted(set(seqs.subject)) == ["S11", "S9"]
  assert seqs.num_sequences == 2 * len(ACTIONS) * 4
  assert set(seqs.action) == {"Walking", "Eating"}
  i = seqs.camera.index("55011271#1")  # 'Walking 1' seen by the second camera.
  assert seqs.subject[i] == "S9" and seqs.action[i] == "Walking"
  seq = seqs.sequence(i)
  assert len(seq["pose_3d"]) == FRAMES  # 2D was 2 frames longer: trimmed.
  cam = h36m_calibration.camera(tiny_cameras(), "S9", "55011271")
  pc = h36m.world_to_camera(pos3d["S9"]["Walking 1"][:, skeleton.H36M_FROM_32], cam["R"],
                            cam["T"])
  np.testing.assert_allclose(seq["pose_3d"], pc - pc[:, :1], atol=1e-5)
  np.testing.assert_allclose(seq["root_3d"], pc[:, 0], atol=1e-5)
  assert np.abs(seq["pose_3d"][:, 0]).max() == 0
  px = pos2d["S9"]["Walking 1"][1][:FRAMES]
  np.testing.assert_allclose(seq["pose_2d"], px / 1000 * 2 - [1, 1000 / 1000], atol=1e-5)
  np.testing.assert_array_equal(seq["confidence"], 1.0)
  # The 2D of the file is the projection of the camera-frame 3D (consistent calibration).
  np.testing.assert_allclose(h36m.project(pc, cam), px, atol=1e-2)


def test_protocol_splits(tiny):
  d, _, _ = tiny
  train = pipeline.load_split(config_for(d), "train")
  val = pipeline.load_split(config_for(d), "val")
  assert sorted(set(train.subject)) == ["S1", "S5", "S6", "S7", "S8"]
  assert sorted(set(val.subject)) == ["S1", "S5", "S6", "S7", "S8"]
  assert set(train.lengths) == {9} and set(val.lengths) == {1}  # the last 10% held out.
  v = pipeline.load_split(config_for(d, val_subjects="S8"), "val")
  t = pipeline.load_split(config_for(d, val_subjects="S8"), "train")
  assert set(v.subject) == {"S8"} and "S8" not in t.subject and set(v.lengths) == {FRAMES}
  frontal = pipeline.load_split(config_for(d, protocol="frontal"), "test")
  assert {c.split("#")[0] for c in frontal.camera} == {"58860488"}
  assert sorted(set(frontal.subject)) == ["S11", "S9"]
  p3 = config_for(d, protocol="p3", p3_frame_stride=4)
  assert "S9" in pipeline.load_split(p3, "train").subject
  test = pipeline.load_split(p3, "test")
  assert set(test.subject) == {"S11"} and set(test.lengths) == {1}
  assert test.num_sequences == len(ACTIONS) * 4 * 3  # frames 0, 4, 8 of 10.
  eating = pipeline.load_split(config_for(d, actions="Eating"), "test")
  assert set(eating.action) == {"Eating"}
  with pytest.raises(DataError, match="val_subjects.*test subjects"):
    pipeline.load_split(config_for(d, val_subjects="S9"), "val")
  with pytest.raises(DataError, match="protocol = 'p9'"):
    pipeline.load_split(config_for(d, protocol="p9"), "test")


def test_missing_files_and_subjects(tmp_path, tiny):
  d, _, _ = tiny
  with pytest.raises(DataError, match=r"(?s)Missing \['data_3d_h36m.npz', "
                     r"'data_2d_h36m_gt.npz'\].*prepare_data_h36m.py"):
    pipeline.load_split(config_for(str(tmp_path)), "train")
  with pytest.raises(DataError, match=r"(?s)Missing \['data_2d_h36m_cpn_ft_h36m_dbb.npz'\]"):
    pipeline.load_split(config_for(d, keypoints="cpn_ft_h36m_dbb"), "train")
  part = str(tmp_path / "part")
  write_tiny_h36m(part, subjects=("S1", "S5", "S6", "S7", "S8", "S9"), actions=("Eating",),
                  frames=3)
  with pytest.raises(DataError, match=r"data_3d_h36m.npz: no subject 'S11'"):
    pipeline.load_split(config_for(part), "test")


def test_bad_files_give_clear_errors(tmp_path):
  d = str(tmp_path / "joints")
  write_tiny_h36m(d, actions=("Eating",), frames=3, joints_3d=17)
  with pytest.raises(DataError, match=r"positions_3d', subject 'S1', action 'Eating': 17 "
                     r"joints \(shape \(3, 17, 3\)\), expected 32"):
    pipeline.load_split(config_for(d), "train")
  d = str(tmp_path / "short")
  write_tiny_h36m(d, actions=("Eating",), frames=3, extra_2d=0)
  p = os.path.join(d, "data_2d_h36m_gt.npz")
  with np.load(p, allow_pickle=True) as z:  # our own trusted file
    pos2d, meta = z["positions_2d"].item(), z["metadata"].item()
  pos2d["S9"]["Eating"][2] = pos2d["S9"]["Eating"][2][:2]
  np.savez_compressed(p, positions_2d=pos2d, metadata=meta)
  with pytest.raises(DataError, match=r"subject 'S9', action 'Eating', camera 58860488: the "
                     r"2D sequence has 2 frames, fewer than the 3"):
    pipeline.load_split(config_for(d), "test")
  # Truncated download.
  p = os.path.join(d, "data_3d_h36m.npz")
  with open(p, "rb") as f:
    data = f.read()
  with open(p, "wb") as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(DataError, match=r"data_3d_h36m.npz: cannot read it as an .npz file"):
    pipeline.load_split(config_for(d), "train")
  # COCO-ordered detections are refused, not silently misread.
  d = str(tmp_path / "coco")
  write_tiny_h36m(d, keypoints="detectron_pt_coco", actions=("Eating",), frames=3)
  p = os.path.join(d, "data_2d_h36m_detectron_pt_coco.npz")
  with np.load(p, allow_pickle=True) as z:
    pos2d = z["positions_2d"].item()
  np.savez_compressed(p, positions_2d=pos2d, metadata={"layout_name": "coco", "num_joints": 17})
  with pytest.raises(DataError, match="layout_name 'coco'"):
    pipeline.load_split(config_for(d, keypoints="detectron_pt_coco"), "train")
  for value in ("seventeen", [17], 16):
    np.savez_compressed(p, positions_2d=pos2d, metadata={"num_joints": value})
    with pytest.raises(DataError, match=r"metadata\['num_joints'\] = .*expected 17"):
      pipeline.load_split(config_for(d, keypoints="detectron_pt_coco"), "train")


def test_split_settings_that_leave_nothing_are_named(tiny):
  d, _, _ = tiny
  with pytest.raises(DataError, match="val_subjects .* holds out every training subject"):
    pipeline.load_split(config_for(d, val_subjects="S1,S5,S6,S7,S8"), "train")
  with pytest.raises(DataError, match="val_fraction = 0.99 gives no validation frames"):
    pipeline.load_split(config_for(d, val_fraction=0.99), "val")


class _Payload:
  """Unpickling this runs os.system(command): what a malicious data file would do."""

  def __init__(self, command):
    self.command = command

  def __reduce__(self):
    return (os.system, (self.command,))


def test_malicious_pickle_is_refused_without_running(tmp_path):
  d = str(tmp_path / "evil")
  write_tiny_h36m(d, actions=("Eating",), frames=3)
  marker = tmp_path / "pwned"
  p = os.path.join(d, "data_3d_h36m.npz")
  np.savez(p, positions_3d={"S1": {"Eating": _Payload(f"touch {marker}")}})
  with pytest.raises(DataError, match=r"data_3d_h36m.npz \(member 'positions_3d'\): refusing "
                     r"to unpickle '(posix|os|nt)\.system'"):
    pipeline.load_split(config_for(d), "train")
  assert not marker.exists()


def test_per_action_table_layout():
  per_action = {a: {"mpjpe": 40.0 + i, "pa_mpjpe": 30.0 + i}
                for i, a in enumerate(reversed(h36m.ACTIONS))}
  text = tables.action_table(per_action, {"mpjpe": 47.0, "pa_mpjpe": 37.0})
  header, rule, mpjpe, pa = text.splitlines()
  assert header.split("|")[1:-1] == [" Metric (mm) ", " Dir. ", " Disc. ", " Eat ", " Greet ",
                                     " Phone ", " Photo ", " Pose ", " Purch. ", " Sit ",
                                     " SitD. ", " Smoke ", " Wait ", " WalkD. ", " Walk ",
                                     " WalkT. ", " Avg "]
  assert mpjpe.startswith("| MPJPE | 54.0 | 53.0 |") and mpjpe.endswith("| 47.0 |")
  assert pa.startswith("| PA-MPJPE | 44.0 |")
  # Any other action names (the synthetic source) work too, sorted.
  text = tables.action_table({"walk": {"mpjpe": 1.0, "pa_mpjpe": 2.0},
                              "jump": {"mpjpe": 3.0, "pa_mpjpe": 4.0}})
  assert text.splitlines()[0] == "| Metric (mm) | jump | walk | Avg |"
  assert text.splitlines()[2] == "| MPJPE | 3.0 | 1.0 | 2.0 |"


def test_main_end_to_end_writes_the_table(tmp_path, tiny):
  d, _, _ = tiny
  work = tmp_path / "work"
  cmd = [sys.executable, "-m", "posemachine.main", "--config=configs/h36m.py",
         f"--workdir={work}", f"--config.data.dir={d}", "--config.train.num_steps=2",
         "--config.model.hidden=16", "--config.model.projector_hidden=16",
         "--config.train.batch_size=8", "--config.eval.batch_size=8",
         "--config.data.window=4", "--config.train.eval_every=2", "--config.train.log_every=1",
         "--config.train.warmup_steps=1", "--config.eval.num_plot_frames=1"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1")
  r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  with open(work / "eval.json") as f:
    results = json.load(f)
  assert set(results["per_action"]) == {"Walking", "Eating"}
  assert results["num_frames"] == 2 * len(ACTIONS) * 4 * FRAMES
  table = (work / "eval_table.md").read_text()
  assert "| Metric (mm) | Eat | Walk | Avg |" in table
  assert f"| MPJPE | {results['per_action']['Eating']['mpjpe']:.1f} |" in table
  assert "| Metric (mm) | Eat S9 | Eat S11 | Walk S9 | Walk S11 | Avg |" in table
  assert "| Metric (mm) | Eat | Walk | Avg |" in r.stdout  # printed too


def test_cameras_are_synchronised_views(tiny):
  """The four cameras of a (subject, action) are one view group: the ground truth of one
  camera rotated by views.attach's rotation equals its partner's (the shipped calibration's
  geometry, independent of any model), on the train split after the validation cut."""
  d, _, _ = tiny
  config = config_for(d, train_subjects="S1,S5")
  seqs = views.attach(pipeline.load_split(config, "train"))
  pf, rot = seqs.extras["view_partner_frame"].astype(int), seqs.extras["view_rotation"]
  np.testing.assert_allclose(seqs.pose_3d @ rot, seqs.pose_3d[pf], atol=2e-5)
  owner = np.repeat(np.arange(seqs.num_sequences), seqs.lengths)
  partner = owner[pf]
  assert (partner != owner).all()
  for i, p in zip(owner, partner):  # same subject and take, another camera
    assert (seqs.subject[i], seqs.action[i]) == (seqs.subject[p], seqs.action[p])
    assert seqs.camera[i].split("#")[0] != seqs.camera[p].split("#")[0]
  # 'Walking' and 'Walking 1' are separate takes: separate groups of four cameras.
  groups = np.unique(seqs.extras["view_group"])
  assert len(groups) == 2 * len(ACTIONS)
  assert all((seqs.extras["view_group"] == g).sum() == 4 * seqs.lengths[0] for g in groups)
