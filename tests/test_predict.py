"""End to end: a trained tiny checkpoint, a COCO results JSON of a synthetic clip, predict."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from posemachine import config_defaults, geometry, inference, keypoints, predict, train
from posemachine.data import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMES = 48


def tiny_config():
  """Like tests/test_train.py's, causal, trained longer. 64 wide, not 16: a 16-wide model
  does not beat the mean pose on a held-out subject in a few hundred steps; this one does
  in about 10 s (300 steps)."""
  c = config_defaults.get_config()
  c.model.hidden = c.model.projector_hidden = 64
  c.model.direction = "causal"
  c.loss.distance = "euclidean"
  s = c.data.synthetic
  s.num_subjects.train, s.num_subjects.val, s.num_subjects.test = 2, 1, 1
  s.sequences_per_action, s.frames_per_sequence, s.cameras_per_sequence = 1, FRAMES, 2
  s.actions = ("walk", "squat")
  c.data.window = 8
  t = c.train
  t.num_steps, t.batch_size, t.log_every, t.eval_every, t.warmup_steps = 300, 16, 100, 300, 10
  t.learning_rate = 3e-3
  t.num_devices = 1  # no cross-device collectives: conftest's 8 fake devices share 2 cores.
  c.eval.batch_size, c.eval.num_plot_frames = 8, 2
  return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run"))
  config = tiny_config()
  train.train_and_evaluate(config, workdir)
  return workdir, config


def coco_detections(pose_cam, camera):
  """COCO results entries for camera-frame H36M joints (T, 17, 3): pixels through the camera,
  eyes and ears from `keypoints.h36m_to_coco_face`, scores 0.9."""
  px = np.asarray(geometry.project_to_2d(pose_cam.astype(np.float32), camera), np.float64)
  face = keypoints.h36m_to_coco_face(pose_cam).astype(np.float32)
  coco = keypoints.h36m_to_coco(px)
  coco[:, 1:5] = np.asarray(geometry.project_to_2d(face, camera))
  return [{"image_id": f, "category_id": 1, "score": 0.95,
           "keypoints": np.concatenate([coco[f], np.full((17, 1), 0.9)], 1).ravel().tolist()}
          for f in range(len(px))]


def mpjpe_mm(a, b):
  return float(np.linalg.norm(a - b, axis=-1).mean() * 1000)


def test_predict_end_to_end(trained, tmp_path):
  workdir, config = trained
  test = synthetic.generate(config.data.synthetic, "test")
  seq = test.sequence(0)                                   # held-out subject, walking
  cam_id = test.camera[0].split("#")[0]
  camera = geometry.Camera.h36m(cam_id)
  dets = coco_detections(seq["pose_3d"] + seq["root_3d"][:, None], camera)
  # What real detectors do: two missed frames, a low-confidence wrist, a second person.
  kps = np.array(dets[20]["keypoints"]).reshape(17, 3)
  kps[9, 2] = 0.05                                         # frame 20: left wrist
  dets[20]["keypoints"] = kps.ravel().tolist()
  other = dict(dets[30], score=0.4,
               keypoints=(np.array(dets[30]["keypoints"]) + 150).tolist())
  dets = dets[:10] + dets[12:] + [other]
  path = tmp_path / "clip.json"
  path.write_text(json.dumps(dets))
  out = str(tmp_path / "out" / "clip")

  rc = predict.main(["predict", f"--workdir={workdir}", f"--input={path}", f"--output={out}",
                     f"--camera={cam_id}", "--png_frame=20", "--animation=gif",
                     "--bvh=stretch", "--max_animation_frames=12"])
  assert rc == 0
  for ext, magic in ((".npz", b"PK"), (".json", b"{"), (".bvh", b"HIERARCHY"),
                     (".png", b"\x89PNG"), (".gif", b"GIF8")):
    with open(out + ext, "rb") as f:
      assert f.read(len(magic)) == magic, ext

  z = np.load(out + ".npz")
  pose, root = z["pose_3d"], z["root_trajectory"]
  assert pose.shape == (FRAMES, 17, 3) and np.isfinite(pose).all()
  assert str(z["units"]) == "metres" and "x right, y down, z forward" in str(z["coordinate_frame"])
  assert list(z["frame_ids"]) == list(range(FRAMES))
  assert z["interpolated"][10:12].all() and z["interpolated"][20, 13]      # H36M left wrist
  assert z["confidence"][20, 13] == 0 and z["confidence"][21, 13] > 0.8
  with open(out + ".json") as f:
    text = f.read()
  doc = json.loads(text)
  assert list(doc)[:3] == ["format", "units", "coordinate_frame"] and doc["units"] == "metres"
  np.testing.assert_allclose(np.array(doc["pose_3d"]), pose, atol=1e-5)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(out + ".gif") as gif:
    assert gif.n_frames == 12

  # 1. The pipeline (COCO mapping, gap filling, normalisation, windows) feeds the model what
  #    it was trained on: its output is close to lifting the clip's own H36M-17 2D directly
  #    (measured about 10 mm; the derived pelvis/spine/thorax/head differ by 1-2 cm).
  params, _ = inference.load(workdir)
  direct = inference.lift_sequence(params, config, seq["pose_2d_clean"],
                                   np.full((FRAMES, 17), 0.9, np.float32))
  assert mpjpe_mm(pose, direct) < 25.0
  # 2. Honest accuracy of a 10-second model on a held-out subject: better than predicting the
  #    training set's mean pose (measured about 136 vs 158 mm MPJPE), not good.
  train_seqs = synthetic.generate(config.data.synthetic, "train")
  mean_pose = train_seqs.pose_3d.mean(0)
  assert mpjpe_mm(pose, seq["pose_3d"]) < mpjpe_mm(mean_pose[None], seq["pose_3d"])
  # 3. The root trajectory from the camera intrinsics: depth within 10 % (measured ~4 %).
  err = np.linalg.norm(root - seq["root_3d"], axis=-1) / seq["root_3d"][:, 2]
  assert err.mean() < 0.10
  # 4. The BVH (stretch rig) re-imports through the project's parser to the same joints
  #    within 1 mm: the pose plus the root trajectory from frame 0, in BVH axes (Y up).
  bvh = pytest.importorskip("posemachine.data.bvh")
  with open(out + ".bvh") as f:
    body = "\n".join(l for l in f.read().splitlines() if not l.lstrip().startswith("#"))
  fk = bvh.forward_kinematics(bvh.parse_bvh(body, out + ".bvh"))
  expected = (pose + (root - root[:1])[:, None]) * np.array([1.0, -1.0, -1.0])
  assert np.abs(fk - expected).max() < 1e-3


def test_predict_cli_reports_bad_inputs(tmp_path, capsys):
  empty = tmp_path / "empty.json"
  empty.write_text("[]")
  args = ["predict", "--workdir=nowhere", f"--input={empty}", f"--output={tmp_path}/o"]
  assert predict.main(args) == 1
  assert "--image_size=W,H" in capsys.readouterr().err
  assert predict.main(args + ["--image_size=1000,1000", "--camera=54138969"]) == 1
  assert "exactly one of" in capsys.readouterr().err
  assert predict.main(args + ["--image_size=1000"]) == 1
  assert "expected W,H in pixels" in capsys.readouterr().err
  assert predict.main(args + ["--image_size=abc"]) == 1
  assert "--image_size=abc: expected W,H in pixels" in capsys.readouterr().err
  assert predict.main(args + ["--camera=54138969"]) == 1
  err = capsys.readouterr().err
  assert "empty.json: no detections (empty list)" in err
  assert predict.main(["predict", "--input=x"]) == 2
  assert "missing --workdir, --output" in capsys.readouterr().err
  # Checked before the model is loaded ('nowhere' is no workdir).
  good = tmp_path / "clip.json"
  good.write_text(json.dumps([{"image_id": 0, "keypoints": [500.0, 500.0, 0.9] * 17}]))
  base = ["predict", "--workdir=nowhere", f"--input={good}", "--image_size=1000,1000"]
  for extra, message in (
      ([f"--output={tmp_path}/"], "would overwrite the input file"),
      ([f"--output={good}"], "would overwrite the input file"),
      (["--output="], "--output is empty"),
      ([f"--output={good}/sub/o"], "cannot create the folder"),
      ([f"--output={tmp_path}/o", "--batch_size=0"], "--batch_size=0: expected an integer"),
      ([f"--output={tmp_path}/o", "--max_animation_frames=0"], "expected an integer >= 1")):
    assert predict.main(base + extra) == 1, extra
    assert message in capsys.readouterr().err, extra
  link = tmp_path / "link"
  link.symlink_to(tmp_path, target_is_directory=True)  # the input's folder by another name
  assert predict.main(base + [f"--output={link}/"]) == 1
  assert "would overwrite the input file" in capsys.readouterr().err
  assert predict.main(base + [f"--output={tmp_path}/new/deeper/o"]) == 1  # fails on workdir
  assert not (tmp_path / "new").exists()  # a failed run creates no output folders
  assert json.loads(good.read_text())[0]["image_id"] == 0  # the input is untouched.
  huge = tmp_path / "huge.json"
  huge.write_text(json.dumps([{"image_id": 7, "keypoints": [500.0, 500.0, 0.9] * 3
                               + [1e300, 500.0, 0.9] + [500.0, 500.0, 0.9] * 13}]))
  assert predict.main(["predict", "--workdir=nowhere", f"--input={huge}",
                       "--image_size=1000,1000", f"--output={tmp_path}/h"]) == 1
  assert "frame 7, keypoint 3 (coco order): x = 1e+300 is not a pixel" in capsys.readouterr().err
  r = subprocess.run([sys.executable, "-m", "posemachine.predict", "--help"], cwd=REPO,
                     capture_output=True, text=True, timeout=60)
  assert r.returncode == 0 and "--min_confidence" in r.stderr and "metres" in r.stderr
