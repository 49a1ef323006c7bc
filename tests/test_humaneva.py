"""HumanEva-I from tiny files in the VideoPose3D format ('Train/S1' -> 'Walking 1 chunk0')."""

import os

import numpy as np
import pytest

from posemachine import config_defaults, skeleton, tables
from posemachine.data import h36m, humaneva, pipeline, synthetic, views
from posemachine.data.sequences import DataError

# HumanEva-I joints from the 17-joint layout (pelvis, thorax, left arm, right arm, left leg,
# right leg, head).
FROM_17 = (0, 8, 11, 12, 13, 14, 15, 16, 4, 5, 6, 1, 2, 3, 10)
SUBJECTS = ("Train/S1", "Train/S2", "Train/S3", "Validate/S1", "Validate/S2", "Validate/S3")
ACTIONS = ("Walking 1 chunk0", "Walking 1 chunk2", "Jog 1 chunk0", "Box 1 chunk0",
           "Gestures 1 chunk0")
FRAMES = 8


def write_tiny_humaneva(directory, subjects=SUBJECTS, frames=FRAMES):
  """data_3d_humaneva15.npz + data_2d_humaneva15_gt.npz; 2D from a plain pinhole (f 1000 px)
  at the files' camera poses, one camera missing (None) for one sequence."""
  os.makedirs(directory, exist_ok=True)
  pos3d, pos2d = {}, {}
  for i, s in enumerate(subjects):
    pos3d[s], pos2d[s] = {}, {}
    for j, a in enumerate(ACTIONS):
      rng = np.random.default_rng([i, j])
      m = synthetic.simulate_motion("walk", synthetic.sample_body(rng), rng, frames + 1, 60.0)
      world = np.stack([m[..., 0], -m[..., 2], m[..., 1]], -1)[:, FROM_17]  # Z up
      pos3d[s][a] = world[:frames].astype(np.float32)
      views = []
      for c in range(3):
        cam = humaneva.camera_params(s, c)
        pc = h36m.world_to_camera(world, cam["R"], cam["T"])
        views.append((1000 * pc[..., :2] / pc[..., 2:] + [320, 240]).astype(np.float32))
      if a == "Box 1 chunk0":
        views[2] = None  # no detections for this camera
      pos2d[s][a] = views
  np.savez_compressed(os.path.join(directory, "data_3d_humaneva15.npz"), positions_3d=pos3d)
  meta = {"layout_name": "humaneva15", "num_joints": 15,
          "keypoints_symmetry": [list(skeleton.HUMANEVA15_LEFT),
                                 list(skeleton.HUMANEVA15_RIGHT)]}
  np.savez_compressed(os.path.join(directory, "data_2d_humaneva15_gt.npz"),
                      positions_2d=pos2d, metadata=meta)
  return pos3d, pos2d


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("humaneva"))
  return (d,) + write_tiny_humaneva(d)


def config_for(directory):
  c = config_defaults.get_config()
  c.data.source = "humaneva"
  c.data.num_joints = 15
  c.data.dir = directory
  return c


def test_layout_and_cameras():
  lay = skeleton.for_num_joints(15)
  assert lay.parents == (-1, 0, 1, 2, 3, 1, 5, 6, 0, 8, 9, 0, 11, 12, 1)
  assert len(lay.bone_child) == 14 and lay.bone_child.max() == 14
  assert skeleton.for_num_joints(17).parents == skeleton.PARENTS
  for s in ("S1", "S2", "S3"):
    for c in range(3):
      cam = humaneva.camera_params(f"Validate/{s}", c)
      np.testing.assert_allclose(cam["R"] @ cam["R"].T, np.eye(3), atol=1e-6)
      assert np.linalg.det(cam["R"]) == pytest.approx(1.0)
      # Cameras stand 1.4-1.6 m above the floor, about 4 m from the centre, looking at it.
      assert 1.4 < cam["T"][2] < 1.6 and 3.5 < np.linalg.norm(cam["T"][:2]) < 4.5
      assert (cam["R"][:, 2] @ -cam["T"]) > 0.9 * np.linalg.norm(cam["T"])
  with pytest.raises(DataError, match="no camera calibration for subject 'Train/S4'"):
    humaneva.camera_params("Train/S4", 0)


def test_reader_splits_and_values(tiny):
  d, pos3d, pos2d = tiny
  c = config_for(d)
  train = pipeline.load_split(c, "train")
  val = pipeline.load_split(c, "val")
  test = pipeline.load_split(c, "test")
  assert sorted(set(train.subject)) == ["Train/S1", "Train/S2", "Train/S3"]
  assert sorted(set(val.subject)) == ["Train/S1", "Train/S2", "Train/S3"]
  assert sorted(set(test.subject)) == ["Validate/S1", "Validate/S2", "Validate/S3"]
  assert set(test.action) == {"Walk", "Jog", "Box"}  # Gestures filtered out.
  # 3 subjects x (2 walk + 1 jog) x 3 cameras + 3 x box x 2 cameras (one is None).
  assert test.num_sequences == 3 * 3 * 3 + 3 * 2
  assert set(train.lengths) == {7} and set(val.lengths) == {1}
  i = test.sequence_name(0)
  assert i == "Validate/S1/Box/C1#1_chunk0"  # file actions in sorted order
  k = [test.sequence_name(j) for j in range(test.num_sequences)].index(
      "Validate/S2/Jog/C3#1_chunk0")
  seq = test.sequence(k)
  cam = humaneva.camera_params("Validate/S2", 2)
  pc = h36m.world_to_camera(pos3d["Validate/S2"]["Jog 1 chunk0"], cam["R"], cam["T"])
  np.testing.assert_allclose(seq["pose_3d"], pc - pc[:, :1], atol=1e-5)
  px = pos2d["Validate/S2"]["Jog 1 chunk0"][2][:FRAMES]  # 2D one frame longer: trimmed
  np.testing.assert_allclose(seq["pose_2d"], px / 640 * 2 - [1, 480 / 640], atol=1e-5)
  assert test.pose_3d.shape[1:] == (15, 3)


def test_errors(tmp_path, tiny):
  d, _, _ = tiny
  c = config_for(d)
  c.data.num_joints = 17
  with pytest.raises(DataError, match="HumanEva-I has 15 joints; config.data.num_joints = 17"):
    pipeline.load_split(c, "train")
  with pytest.raises(DataError, match=r"(?s)Missing \['data_3d_humaneva15.npz'.*"
                     "prepare_data_humaneva.py"):
    pipeline.load_split(config_for(str(tmp_path)), "train")
  part = str(tmp_path / "part")
  write_tiny_humaneva(part, subjects=SUBJECTS[:4], frames=3)
  with pytest.raises(DataError, match="data_3d_humaneva15.npz: no subject 'Validate/S2'"):
    pipeline.load_split(config_for(part), "test")
  c = config_for(d)
  c.data.humaneva.actions = "Walk,Jogg"
  with pytest.raises(DataError, match=r"actions: \['Jogg'\] not in .*its actions: \["):
    pipeline.load_split(c, "train")


def test_per_action_and_per_subject_tables(tiny):
  d, _, _ = tiny
  seqs = pipeline.load_split(config_for(d), "test")
  rng = np.random.default_rng(0)
  per_sequence = {seqs.sequence_name(i): {"mpjpe": float(v), "pa_mpjpe": float(v) / 2}
                  for i, v in enumerate(rng.uniform(10, 50, seqs.num_sequences))}
  per_action = {a: {"mpjpe": 1.0, "pa_mpjpe": 0.5} for a in ("Box", "Jog", "Walk")}
  results = {"per_action": per_action, "overall": {"mpjpe": 1.0, "pa_mpjpe": 0.5},
             "per_sequence": per_sequence, "source": "humaneva", "checkpoint_step": 3}
  text = tables.format_report(results, seqs)
  assert "| Metric (mm) | Walk | Jog | Box | Avg |" in text
  assert ("| Metric (mm) | Walk S1 | Walk S2 | Walk S3 | Jog S1 | Jog S2 | Jog S3 | Box S1 | "
          "Box S2 | Box S3 | Avg |") in text
  # A cell is the frame-weighted mean of its sequences (here equal lengths: plain mean).
  names = [n for n in per_sequence if n.startswith("Validate/S2/Walk/")]
  cells = tables.subject_action_errors(results, seqs, "mpjpe")
  assert cells[("Validate/S2", "Walk")] == pytest.approx(
      np.mean([per_sequence[n]["mpjpe"] for n in names]))
  row = next(l for l in text.splitlines() if l.startswith("| MPJPE |") and "S" not in l
             and l.count("|") == 12)
  assert float(row.split("|")[2]) == pytest.approx(cells[("Validate/S1", "Walk")], abs=0.05)


def test_trains_and_evaluates_end_to_end_with_15_joints(tiny, tmp_path):
  """15-joint bone terms, refine's torso joints and the per-joint report all follow the layout."""
  import json  # pylint: disable=g-import-not-at-top
  from posemachine import train  # pylint: disable=g-import-not-at-top
  c = config_for(tiny[0])
  c.model.hidden = c.model.projector_hidden = 16
  c.data.window = 4
  t = c.train
  t.num_steps, t.batch_size, t.log_every, t.eval_every, t.warmup_steps = 3, 8, 1, 3, 1
  c.eval.batch_size, c.eval.num_plot_frames = 8, 1
  c.refine.enabled = True
  results = train.train_and_evaluate(c, str(tmp_path))
  assert np.isfinite(results["overall"]["mpjpe"])
  with open(tmp_path / "eval.json") as f:
    saved = json.load(f)
  assert set(saved["per_joint"]) == set(skeleton.HUMANEVA15_JOINT_NAMES)
  assert "mpjpe_unrefined" in saved["overall"]


def test_cameras_are_synchronised_views(tiny):
  """The cameras of a trial chunk are one view group (a chunk with a camera missing keeps
  the other two); rotating one camera's ground truth gives its partner's."""
  d, _, _ = tiny
  seqs = views.attach(pipeline.load_split(config_for(d), "train"))
  pf, rot = seqs.extras["view_partner_frame"].astype(int), seqs.extras["view_rotation"]
  np.testing.assert_allclose(seqs.pose_3d @ rot, seqs.pose_3d[pf], atol=2e-5)
  owner = np.repeat(np.arange(seqs.num_sequences), seqs.lengths)
  for i, p in zip(owner, owner[pf]):
    assert seqs.subject[i] == seqs.subject[p] and seqs.camera[i] != seqs.camera[p]
    assert seqs.camera[i].split("#")[1] == seqs.camera[p].split("#")[1]  # same trial chunk
