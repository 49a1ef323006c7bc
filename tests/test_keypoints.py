"""Users' keypoint files: reading, COCO -> Human3.6M mapping, gap filling, bad inputs."""

import json

import numpy as np
import pytest

from posemachine import keypoints, skeleton
from posemachine.errors import DataError


def coco_pose(t=6, seed=0):
  """(T, 17, 2) COCO-order pixel keypoints of a roughly human layout, slowly moving."""
  rng = np.random.default_rng(seed)
  base = np.array([
      [500, 300], [510, 290], [490, 290], [520, 295], [480, 295],   # nose, eyes, ears
      [540, 350], [460, 350], [560, 420], [440, 420], [570, 480], [430, 480],  # arms
      [525, 500], [475, 500], [530, 600], [470, 600], [535, 700], [465, 700]], float)
  drift = np.arange(t)[:, None, None] * np.array([3.0, 0.5])
  return base + drift + rng.normal(0, 0.5, (t, 17, 2))


def write_json(path, dets):
  path.write_text(json.dumps(dets))
  return str(path)


def detections(xy, score=0.9, frames=None):
  frames = range(len(xy)) if frames is None else frames
  return [{"image_id": int(f), "category_id": 1, "score": 0.95,
           "keypoints": np.concatenate([xy[i], np.full((17, 1), score)], 1).ravel().tolist()}
          for i, f in enumerate(frames)]


def test_coco_to_h36m_mapping_is_as_documented():
  xy = coco_pose(1)[0]
  out, conf = keypoints.coco_to_h36m(xy, np.full(17, 0.8))
  assert out.shape == (17, 2) and np.isfinite(out).all()
  np.testing.assert_allclose(out[0], (xy[11] + xy[12]) / 2)          # pelvis = mid-hips
  np.testing.assert_allclose(out[8], (xy[5] + xy[6]) / 2)            # thorax = mid-shoulders
  np.testing.assert_allclose(out[7], (out[0] + out[8]) / 2)          # spine = mid pelvis-thorax
  np.testing.assert_allclose(out[9], xy[0])                          # neck/nose = nose
  face = xy[1:5].mean(0)
  np.testing.assert_allclose(out[10], face + keypoints.HEAD_EXTENSION * (face - out[8]))
  for h, c in keypoints.H36M_FROM_COCO_DIRECT.items():
    np.testing.assert_allclose(out[h], xy[c])
    assert skeleton.JOINT_NAMES[h] == keypoints.COCO_JOINT_NAMES[c] or (h, c) == (9, 0)
  np.testing.assert_allclose(conf, 0.8)
  # The head uses only the detected face points; a missing hip makes the pelvis missing.
  score = np.full(17, 0.8)
  score[[3, 4]] = 0.1  # ears below threshold
  score[11] = 0.0
  out, conf = keypoints.coco_to_h36m(xy, score, min_confidence=0.3)
  face = xy[1:3].mean(0)
  np.testing.assert_allclose(out[10], face + keypoints.HEAD_EXTENSION * (face - out[8]))
  assert np.isnan(out[0]).all() and conf[0] == 0 and np.isnan(out[7]).all()
  assert np.isnan(out[4]).all() and conf[4] == 0  # left hip itself


def test_read_json_fill_gaps_and_mask(tmp_path):
  xy = coco_pose(8)
  dets = detections(xy, frames=range(100, 108))
  del dets[3:5]                                   # frames 103, 104 not detected
  kps = np.array(dets[0]["keypoints"]).reshape(17, 3)
  kps[9, 2] = 0.1                                 # frame 100: left wrist low confidence
  dets[0]["keypoints"] = kps.ravel().tolist()
  path = write_json(tmp_path / "k.json", dets)
  kp = keypoints.read_keypoints(path)
  assert kp.num_frames == 8 and list(kp.frame_ids) == list(range(100, 108))
  assert any("2 of 8 frames have no detection" in w for w in kp.warnings)
  prep = keypoints.prepare(kp, min_confidence=0.3)
  assert prep.xy.shape == (8, 17, 2) and np.isfinite(prep.xy).all()
  assert prep.filled[3:5].all() and not prep.filled[[0, 1, 2, 5, 6, 7]][:, :13].any()
  assert prep.filled[0, 13] and prep.confidence[0, 13] == 0   # H36M left wrist (13) masked
  assert (prep.confidence[3:5] == 0).all()
  # Linear interpolation per joint between frames 102 and 105.
  h36m, _ = keypoints.coco_to_h36m(xy, np.full((8, 17), 0.9))
  for t, w in ((3, 1 / 3), (4, 2 / 3)):
    np.testing.assert_allclose(prep.xy[t], (1 - w) * h36m[2] + w * h36m[5], atol=1e-3)
  # Before the first detection of the wrist: held at its first detected value.
  np.testing.assert_allclose(prep.xy[0, 13], h36m[1, 13], atol=1e-3)


def test_several_people_highest_or_error(tmp_path):
  xy = coco_pose(4)
  dets = detections(xy)
  other = detections(xy + 300, frames=[2])[0]
  other["score"] = 0.5
  dets.insert(1, other)
  path = write_json(tmp_path / "k.json", dets)
  kp = keypoints.read_keypoints(path, multi_person="highest")
  np.testing.assert_allclose(kp.xy[2], xy[2])     # the 0.95-scored person kept
  assert any("several people" in w and "2: 2" in w for w in kp.warnings)
  with pytest.raises(DataError, match=r"k\.json: frame 2 has 2 detections"):
    keypoints.read_keypoints(path, multi_person="error")


@pytest.mark.parametrize("content, match", [
    ("[]", r"no detections \(empty list\)"),
    ("", r"not valid JSON"),
    ('{"images": []}', r"expected a list of detections"),
    ('[{"image_id": 0}]', r"detection 0 must be an object with 'image_id' and 'keypoints'"),
    ('[{"image_id": 0, "keypoints": [1, 2, 3]}]',
     r"detection 0 \(frame 0\) has 3 values = 1 keypoints; expected 51"),
    ('[{"image_id": 5, "keypoints": ' + json.dumps([1.0] * 54) + "}]",
     r"detection 0 \(frame 5\) has 54 values = 18 keypoints"),
    ('[{"image_id": "abc", "keypoints": ' + json.dumps([1.0] * 51) + "}]",
     r"image_id 'abc'; expected the frame number"),
    ('[{"image_id": 0, "keypoints": ' + json.dumps([1.0] * 51) + '}, {"image_id": 397133, '
     '"keypoints": ' + json.dumps([1.0] * 51) + "}]", r"image_id must be the frame number"),
])
def test_bad_json_inputs_name_the_problem(tmp_path, content, match):
  path = tmp_path / "bad.json"
  path.write_text(content)
  with pytest.raises(DataError, match=match) as e:
    keypoints.read_keypoints(str(path))
  assert "bad.json" in str(e.value)


def test_nan_keypoints_are_missing_or_an_error(tmp_path):
  xy = coco_pose(5)
  dets = detections(xy)
  kps = np.array(dets[2]["keypoints"]).reshape(17, 3)
  kps[13, 0] = np.nan                             # frame 2, COCO left knee
  dets[2]["keypoints"] = kps.ravel().tolist()
  path = tmp_path / "nan.json"
  path.write_text(json.dumps(dets))               # Python writes NaN as a bare token.
  kp = keypoints.read_keypoints(str(path))
  with pytest.raises(DataError, match=r"nan\.json: non-finite keypoint at frame 2 \(row 2\), "
                                      r"joint 13 \(left_knee\)"):
    keypoints.prepare(kp, on_nan="error")
  prep = keypoints.prepare(keypoints.read_keypoints(str(path)), on_nan="missing")
  assert any("NaN/Inf" in w and "left_knee" in w for w in prep.warnings)
  assert prep.filled[2, 5] and prep.confidence[2, 5] == 0 and np.isfinite(prep.xy).all()


def test_arrays_npy_npz_and_wrong_shapes(tmp_path):
  xy = coco_pose(5)
  arr = np.concatenate([xy, np.full((5, 17, 1), 0.9)], -1)
  np.save(tmp_path / "k.npy", arr)
  kp = keypoints.read_keypoints(str(tmp_path / "k.npy"))
  np.testing.assert_allclose(kp.xy, xy)
  np.savez(tmp_path / "k.npz", keypoints=xy, scores=np.full((5, 17), 0.7),
           frame_ids=np.arange(10, 15))
  kp = keypoints.read_keypoints(str(tmp_path / "k.npz"))
  assert list(kp.frame_ids) == list(range(10, 15)) and np.allclose(kp.score, 0.7)
  # Human3.6M order passes through unchanged.
  kp = keypoints.read_keypoints(str(tmp_path / "k.npy"), fmt="h36m")
  np.testing.assert_allclose(keypoints.prepare(kp).xy, xy, rtol=1e-6)
  np.save(tmp_path / "bad.npy", arr[:, :16])
  with pytest.raises(DataError, match=r"bad\.npy: keypoints have shape \(5, 16, 3\); "
                                      r"expected \(T, 17, 3\)"):
    keypoints.read_keypoints(str(tmp_path / "bad.npy"))
  np.save(tmp_path / "empty.npy", np.zeros((0, 17, 3)))
  with pytest.raises(DataError, match="no frames"):
    keypoints.read_keypoints(str(tmp_path / "empty.npy"))
  np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
  with pytest.raises(DataError, match="without pickles"):
    keypoints.read_keypoints(str(tmp_path / "obj.npy"))
  (tmp_path / "k.csv").write_text("1,2")
  with pytest.raises(DataError, match=r"k\.csv: unknown keypoint file type '\.csv'"):
    keypoints.read_keypoints(str(tmp_path / "k.csv"))


def test_never_detected_joint_and_missing_pelvis():
  xy, conf = keypoints.coco_to_h36m(coco_pose(4), np.full((4, 17), 0.9))
  xy[:, 16] = np.nan                              # right wrist never seen
  conf[:, 16] = 0
  filled_xy, c, filled, warnings = keypoints.fill_missing(xy, conf, "clip")
  np.testing.assert_allclose(filled_xy[:, 16], filled_xy[:, 15])   # at its parent, the elbow
  assert filled[:, 16].all() and (c[:, 16] == 0).all()
  assert any("right_wrist" in w and "never detected" in w for w in warnings)
  xy[:, 0] = np.nan
  with pytest.raises(DataError, match="clip: the pelvis .* missing on all 4 frames"):
    keypoints.fill_missing(xy, conf, "clip")
  # One hip never seen (COCO input): the message says how often each hip was.
  coco_conf = np.full((4, 17), 0.9)
  coco_conf[:, 12] = 0.05                         # COCO right hip under the threshold
  xy, conf = keypoints.coco_to_h36m(coco_pose(4), coco_conf, min_confidence=0.3)
  with pytest.raises(DataError, match=r"right hip seen on 0, left hip on 4 frame\(s\)"):
    keypoints.fill_missing(xy, conf, "clip")


def test_synthetic_face_points_map_back_to_the_head():
  from posemachine.data import synthetic  # pylint: disable=g-import-not-at-top
  body = synthetic.sample_body(np.random.default_rng(0))
  world = synthetic.simulate_motion("walk", body, np.random.default_rng(1), 20, 50.0)
  cam = world * np.array([1.0, -1.0, -1.0]) + np.array([0, 0, 5.0])  # y down, in front
  coco = keypoints.h36m_to_coco(cam)
  coco[:, 1:5] = keypoints.h36m_to_coco_face(cam)
  # Weak perspective is enough here: compare in 3D, dropping z after the mapping.
  out, _ = keypoints.coco_to_h36m(coco[..., :2], np.ones((20, 17)))
  err = np.linalg.norm(out - cam[..., :2], axis=-1)
  assert err[:, 10].max() < 0.01      # head rebuilt from eyes/ears within 1 cm
  assert err.max() < 0.03             # derived pelvis/spine/thorax within 3 cm


def test_frame_ids_order_scores_above_one_and_all_nan(tmp_path):
  np.savez(tmp_path / "dup.npz", keypoints=np.ones((3, 17, 3)), frame_ids=np.array([0, 0, 1]))
  with pytest.raises(DataError, match=r"dup.npz: frame_ids must increase strictly .*row 1 "
                     r"has frame 0 after 0"):
    keypoints.read_keypoints(str(tmp_path / "dup.npz"), "coco", "highest")
  a = np.random.default_rng(0).uniform(100, 900, (5, 17, 3))
  a[..., 2] = 7.0
  np.save(tmp_path / "s7.npy", a)
  kp = keypoints.read_keypoints(str(tmp_path / "s7.npy"), "coco", "highest")
  assert any("85 score(s) above 1 (largest 7)" in w
             for w in keypoints.prepare(kp, 0.3, "missing").warnings)
  np.save(tmp_path / "nan.npy", np.full((4, 17, 3), np.nan))
  kp = keypoints.read_keypoints(str(tmp_path / "nan.npy"), "coco", "highest")
  with pytest.raises(DataError, match=r"(?s)pelvis .* missing on all 4 frames.*Before that: "
                     r"68 keypoint\(s\) are NaN/Inf"):
    keypoints.prepare(kp, 0.3, "missing")
