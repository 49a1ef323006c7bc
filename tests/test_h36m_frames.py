"""Real Human3.6M frames: a tiny extracted-frames tree in the default (MMPose) layout next to
tiny VideoPose3D files. Every frame shows the 17 joints as green dots and one probe joint as
a red dot, drawn where the 2D file says; the crops must put the red dot where joints_2d says.
Also: the stride, the prefetcher's order and errors, clear errors for a wrong layout, missing
and corrupt frames, and `python -m posemachine.main` training on the frames end to end."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from posemachine import config_defaults, errors, image_train
from posemachine.data import h36m, h36m_calibration, h36m_frames, pipeline

import test_h36m
import tiny_image_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBJECTS = ("S1", "S9")
SCALE = 0.25      # the frames are extracted at a quarter of the camera resolution.
SIGMA = 2.0       # dot radius (Gaussian sigma), image pixels.


def probe_joint(frame_index: int, camera: str) -> int:
  return (7 * frame_index + 3 * h36m.CAMERA_ORDER.index(camera)) % 17


def draw_frame(px, probe, w, h):
  """(h, w, 3) uint8: green dots at px (17, 2) image pixels (pixel j spans [j, j + 1]), the
  probe joint red."""
  img = np.zeros((h, w, 3), np.float64)
  ys, xs = np.mgrid[0:h, 0:w] + 0.5
  for j, (u, v) in enumerate(px):
    dot = np.exp(-((xs - u) ** 2 + (ys - v) ** 2) / (2 * SIGMA ** 2))
    img[..., 0 if j == probe else 1] += dot
  return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def write_frames(root, pos2d, subjects=SUBJECTS, actions=test_h36m.ACTIONS):
  """The default layout: S1/S1_Directions_1.54138969/S1_Directions_1.54138969_000001.jpg."""
  for s in subjects:
    for a in actions:
      for c, kp in zip(h36m.CAMERA_ORDER, pos2d[s][a]):
        cam = h36m_calibration.camera(test_h36m.tiny_cameras(), s, c)
        w, h = int(round(cam["w"] * SCALE)), int(round(cam["h"] * SCALE))
        folder = os.path.join(root, s, f"{s}_{a.replace(' ', '_')}.{c}")
        os.makedirs(folder, exist_ok=True)
        for t in range(len(kp)):
          px = kp[t, :, :2] * np.array([w / cam["w"], h / cam["h"]])
          Image.fromarray(draw_frame(px, probe_joint(t, c), w, h)).save(
              os.path.join(folder, f"{os.path.basename(folder)}_{t + 1:06d}.jpg"),
              quality=95, subsampling=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("h36m_frames"))
  _, pos2d = test_h36m.write_tiny_h36m(d, subjects=SUBJECTS)
  frames = os.path.join(d, "frames")
  write_frames(frames, pos2d)
  return d, frames


def config_for(data_dir, frames_dir, **data):
  c = config_defaults.get_config()
  c.data.source, c.data.dir, c.data.frames_dir = "h36m", data_dir, frames_dir
  c.data.h36m.train_subjects, c.data.h36m.test_subjects = "S1", "S9"
  c.render.size = 32
  for k, v in data.items():
    c.data[k] = v
  return c


def frame_data(config, split="train"):
  return h36m_frames.FrameData(pipeline.load_split(config, split), config)


def red_centroids(images):
  """(M, S, S, 3) in [0, 1] -> (M, 2) centroid of the red dot in crop coordinates."""
  size = images.shape[1]
  red = np.clip(images[..., 0] - 0.1, 0, None)
  grid = (np.arange(size) + 0.5) / size * 2 - 1
  total = red.sum((1, 2))
  return np.stack([(red.sum(1) * grid).sum(-1) / total, (red.sum(2) * grid).sum(-1) / total],
                  -1)


def test_crops_put_the_joints_where_joints_2d_says(tiny):
  data = frame_data(config_for(*tiny))
  s = data.seqs
  assert s.num_frames == 12 * 9  # S1: 3 takes x 4 cameras x 9 frames (1 held out).
  idx = np.arange(s.num_frames).reshape(-1, 1)
  mask = np.ones_like(idx, bool)
  seq_ids = np.searchsorted(s.starts, idx[:, 0], side="right") - 1
  batch = data.windows(idx, mask, seq_ids)
  assert batch["images"].shape == (s.num_frames, 1, 32, 32, 3)
  assert batch["images"].dtype == np.float32
  assert 0.0 <= batch["images"].min() and batch["images"].max() <= 1.0
  assert batch["joints_2d"].shape == (s.num_frames, 1, 17, 2)
  np.testing.assert_array_equal(batch["pose_3d"], s.pose_3d[idx])
  # The box holds all joints with the margin: every joint inside [-1/1.35, 1/1.35].
  assert np.abs(batch["joints_2d"]).max() <= 1 / 1.35 + 1e-4
  probe = np.array([probe_joint(int(round(s.extras["frame_index"][n])),
                                h36m_frames.parse_camera(s.camera[q])[0])
                    for n, q in zip(idx[:, 0], seq_ids)])
  want = batch["joints_2d"][np.arange(len(idx)), 0, probe]
  got = red_centroids(batch["images"][:, 0])
  err_px = np.abs(got - want).max() * 32 / 2
  assert err_px < 0.15, err_px  # crop pixels
  # Mismatched probes would be far off: the check can fail.
  other = batch["joints_2d"][np.arange(len(idx)), 0, (probe + 5) % 17]
  assert (np.abs(got - other).max(-1) * 16).mean() > 2.0


def test_read_crop_sub_pixel_and_padding(tmp_path):
  """A dot at a known sub-pixel position of a full-size frame; a box over the image edge."""
  w, h, size = 1000, 1002, 32
  u, v = 903.3, 120.7
  path = str(tmp_path / "f.png")
  Image.fromarray(draw_frame(np.array([[u, v]]), 0, w, h)).save(path)
  box = np.array([850.0, 80.0, 200.0])  # x beyond 1000 is outside the image: zeros.
  crop = h36m_frames.read_crop(path, box, (w, h), size).astype(np.float32) / 255
  got = red_centroids(crop[None])[0]
  want = (np.array([u, v]) - box[:2]) / box[2] * 2 - 1
  np.testing.assert_allclose(got, want, atol=2 * 0.1 / size)
  assert crop[:, -size // 4:].max() == 0.0  # the padded columns (x > 1000).


def test_windows_decode_padding_and_stride(tiny):
  config = config_for(*tiny)
  data = frame_data(config)
  idx, mask = np.array([[0, 1, 2, 2]]), np.array([[True, True, True, False]])
  b = data.windows(idx, mask, np.array([0]))
  np.testing.assert_array_equal(b["images"][0, 3], b["images"][0, 2])
  np.testing.assert_array_equal(b["mask"], [[1, 1, 1, 0]])
  assert b["has_3d"].dtype == np.float32 and b["subject"].dtype == np.int32
  assert data.path(0).endswith(os.path.join("S1", "S1_Eating_2.54138969",
                                             "S1_Eating_2.54138969_000001.jpg"))
  # Every 5th frame extracted (MMPose's default): frames 0 and 5 of each take, files 1 and 6.
  strided = frame_data(config_for(*tiny, frames_stride=5))
  assert strided.seqs.num_frames == 12 * 2
  np.testing.assert_array_equal(strided.seqs.extras["frame_index"][:4], [0, 5, 0, 5])
  assert strided.path(1).endswith("_000006.jpg")
  np.testing.assert_allclose(strided.seqs.pose_3d[1], data.seqs.pose_3d[5])


def test_prefetcher_returns_the_direct_batches_in_order(tiny):
  config = tiny_image_config.get_config()
  config.data.update(source="h36m", dir=tiny[0], frames_dir=tiny[1])
  config.data.h36m.train_subjects, config.data.h36m.test_subjects = "S1", "S9"
  data = image_train.split_data(config, pipeline.load_split(config, "train"))
  steps = range(1, 7)
  direct = [image_train.train_windows(data, config, "transformer", s) for s in steps]
  with h36m_frames.Prefetcher(
      lambda s: image_train.train_windows(data, config, "transformer", s), steps, depth=3,
      workers=3) as p:
    got = list(p)
  assert [k for k, _ in got] == list(steps)
  for a, (_, b) in zip(direct, got):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  # The loop's generator yields the same batches.
  gen = list(image_train.train_batches(data, config, "transformer", steps))
  for a, b in zip(direct, gen):
    np.testing.assert_array_equal(a["images"], b["images"])


def test_prefetcher_keeps_order_and_raises_at_the_failing_key():
  def make(k):
    time.sleep(0.02 * ((k * 7) % 3))  # later keys often finish first.
    if k == 4:
      raise errors.DataError("frame /x/y_000005.jpg: cannot decode")
    return k * 10
  p = h36m_frames.Prefetcher(make, range(8), depth=4, workers=4)
  seen = []
  with pytest.raises(errors.DataError, match="y_000005.jpg") as info:
    for k, v in p:
      seen.append((k, v))
  assert seen == [(0, 0), (1, 10), (2, 20), (3, 30)]
  assert "batch of 4" in "".join(getattr(info.value, "__notes__", []))
  time.sleep(0.1)
  assert not [t for t in threading.enumerate() if t.name.startswith("posemachine-prefetch")]


def test_prefetcher_overlaps_loading_with_the_consumer():
  """Loading that does not need the CPU (I/O; here a sleep) is hidden behind the step."""
  def make(k):
    time.sleep(0.05)
    return k
  t0 = time.perf_counter()
  with h36m_frames.Prefetcher(make, range(10), depth=2) as p:
    for _ in p:
      time.sleep(0.05)  # the step
  fed = time.perf_counter() - t0
  assert fed < 0.8, fed  # serial: 10 x (0.05 + 0.05) = 1.0 s; overlapped: about 0.55 s.
  assert p.wait_s < 0.25, p.wait_s


def copy_tree(tiny, tmp_path):
  frames = str(tmp_path / "frames")
  shutil.copytree(tiny[1], frames)
  return frames


def test_wrong_layout_fails_fast_naming_the_path(tiny, tmp_path):
  with pytest.raises(errors.DataError, match="not a directory"):
    frame_data(config_for(tiny[0], str(tmp_path / "nope")))
  # A pattern that matches nothing: the first frame's path and what does exist.
  flat = "{subject}/{action_name}.{camera}/{frame:06d}.jpg"
  with pytest.raises(errors.DataError) as e:
    frame_data(config_for(*tiny, frames_pattern=flat))
  msg = str(e.value)
  assert os.path.join(tiny[1], "S1", "Eating 2.54138969", "000001.jpg") in msg
  assert "frames_pattern" in msg and "S1_Eating_2.54138969" in msg
  # No folder for a subject (the test split's S9).
  frames = copy_tree(tiny, tmp_path)
  shutil.rmtree(os.path.join(frames, "S9"))
  frame_data(config_for(tiny[0], frames))  # train (S1) is complete.
  with pytest.raises(errors.DataError, match=r"S9_Eating_2\.54138969_000001\.jpg"):
    frame_data(config_for(tiny[0], frames), "test")
  with pytest.raises(errors.ConfigError, match="placeholders"):
    frame_data(config_for(*tiny, frames_pattern="{subject}/{scene}_{frame}.jpg"))
  synthetic = config_for(*tiny)
  synthetic.data.source = "synthetic"
  with pytest.raises(errors.ConfigError, match="for 'h36m' only"):
    h36m_frames.FrameData(pipeline.load_split(config_for(*tiny), "train"), synthetic)


def test_missing_and_corrupt_frames_name_the_file(tiny, tmp_path):
  frames = copy_tree(tiny, tmp_path)
  config = config_for(tiny[0], frames)
  folder = os.path.join(frames, "S1", "S1_Walking_1.55011271")
  first = os.path.join(folder, "S1_Walking_1.55011271_000001.jpg")
  middle = os.path.join(folder, "S1_Walking_1.55011271_000004.jpg")
  last = os.path.join(folder, "S1_Walking_1.55011271_000009.jpg")
  with open(first, "wb") as f:  # not an image: found up front.
    f.write(b"this is not a jpeg")
  with pytest.raises(errors.DataError, match=r"S1_Walking_1\.55011271_000001\.jpg.*cannot read"):
    frame_data(config)
  shutil.copy(os.path.join(folder, "S1_Walking_1.55011271_000002.jpg"), first)
  os.remove(last)  # the last frame of the sequence: found up front.
  with pytest.raises(errors.DataError, match=r"_000009\.jpg.*last frame"):
    frame_data(config)
  shutil.copy(first, last)
  data = frame_data(config)
  seq = next(i for i in range(data.seqs.num_sequences)
             if data.seqs.sequence_name(i) == "S1/Walking/55011271#1")
  idx = data.seqs.starts[seq] + np.array([[2, 3, 4]])  # file numbers 3, 4, 5.
  args = (idx, np.ones((1, 3), bool), np.array([seq]))
  with open(middle, "rb") as f:
    blob = f.read()
  with open(middle, "wb") as f:  # truncated JPEG: found when decoded.
    f.write(blob[:len(blob) // 2])
  with pytest.raises(errors.DataError, match=r"_000004\.jpg: cannot decode"):
    data.windows(*args)
  os.remove(middle)  # missing: named, through the prefetcher too.
  with pytest.raises(errors.DataError, match=r"Missing frame .*_000004\.jpg"):
    list(h36m_frames.Prefetcher(lambda _: data.windows(*args), range(2)))


def test_action_names_and_camera_labels():
  assert h36m_frames.action_names("Photo", "1") == ["Photo 1", "TakingPhoto 1"]
  assert h36m_frames.action_names("WalkDog", "") == ["WalkDog", "WalkingDog"]
  assert h36m_frames.parse_camera("54138969#1@64") == ("54138969", "1")
  assert h36m_frames.parse_camera("60457274") == ("60457274", "")
  assert h36m_frames.frame_path("/r", config_defaults.get_config().data.frames_pattern, "S11",
                                "Directions 1", "54138969", 4) == \
      "/r/S11/S11_Directions_1.54138969/S11_Directions_1.54138969_000005.jpg"


def test_main_trains_on_real_frames(tiny, tmp_path):
  workdir = str(tmp_path / "run")
  cmd = [sys.executable, "-m", "posemachine.main", f"--config={tiny_image_config.PATH}",
         f"--workdir={workdir}", "--config.data.source=h36m", f"--config.data.dir={tiny[0]}",
         f"--config.data.frames_dir={tiny[1]}", "--config.data.h36m.train_subjects=S1",
         "--config.data.h36m.test_subjects=S9", "--config.stages.encoder.steps=2",
         "--config.stages.transformer.steps=1", "--config.stages.projector.steps=0",
         "--config.stages.end_to_end.steps=1"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "Stage 'encoder' input: 2 batches of frames" in r.stderr
  with open(os.path.join(workdir, "eval.json")) as f:
    results = json.load(f)
  o = results["overall"]
  assert 0.0 <= o["pck_2d"] <= 100.0 and o["error_2d_px"] > 0 and o["mpjpe"] > 0
  assert results["checkpoint_step"] == 4
  assert os.path.getsize(os.path.join(workdir, "image_predictions.png")) > 0
