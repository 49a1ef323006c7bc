"""Real Human3.6M video frames for the image mode: find, decode, crop and prefetch them.

Frames are image files (JPEG/PNG, anything Pillow reads) under `config.data.frames_dir`, one
per video frame, at the path `config.data.frames_pattern` formats with:
  {subject}      'S1'
  {action}       the take's name with spaces as underscores: 'Directions_1', 'Eating'
  {action_name}  the take's name as in the Human3.6M video files: 'Directions 1'
  {base}, {take} 'Directions', '1' ('' for a take without suffix)
  {camera}       '54138969'
  {frame}        1-based frame number (ffmpeg's %06d numbering: frame index + 1)
  {index}        0-based frame index in the 50 fps video
The default, MMPose's tools/dataset_converters/preprocess_h36m.py layout:
  {subject}/{subject}_{action}.{camera}/{subject}_{action}.{camera}_{frame:06d}.jpg
  (S1/S1_Directions_1.54138969/S1_Directions_1.54138969_000001.jpg)
Other layouts, by pattern:
  ffmpeg into a folder per video:  {subject}/{action_name}.{camera}/{frame:06d}.jpg
  anibali/h36m-fetch (one take per action):
                                   {subject}/{base}/imageSequence/{camera}/img_{frame:06d}.jpg
(CHUNYUWANG/H36M-Toolbox numbers actions and takes per subject, s_01_act_02_subact_01_ca_01:
link its folders to one of the layouts above.) The take names are VideoPose3D's ('Photo',
'WalkDog'); where a subject's files use the raw Human3.6M names ('TakingPhoto', 'WalkingDog')
those are found too.

`config.data.frames_stride` = s: only every s-th video frame was extracted (MMPose's default
is 5: files 000001, 000006, ...); the sequences keep the frames whose index is a multiple of s.

Crops follow the renderer (data/render.py): a square box around the frame's 2D pose (the
sequence's pose_2d, i.e. the keypoints file of data.h36m.keypoints: the 2D annotations for
'gt'), side = margin (config.render.margin) x the pose's larger extent + 1 px, cut from the
image with zero padding outside it and resized to config.render.size (bilinear, antialiased,
Pillow); joints_2d are the same 2D in crop coordinates [-1, 1] (x right, y down; a pixel spans
[j, j + 1] so its centre is at j + 0.5). Frames extracted at a lower resolution than the
camera's w x h are fine: the 2D is scaled by image size / camera size. JPEGs are decoded at
half resolution when the box is over twice config.render.size pixels wide.

Decoding runs on a thread pool (config.data.frames_workers; Pillow releases the GIL while it
decodes and resizes), and `Prefetcher` prepares the next config.data.frames_prefetch training
batches while the device runs the current step.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import threading
import time
import weakref

import numpy as np

from posemachine import errors, geometry
from posemachine.data import sequences as seq_lib

PLACEHOLDERS = ("subject", "action", "action_name", "base", "take", "camera", "frame",
                "index")
# VideoPose3D's action names -> the raw Human3.6M names some subjects' files use.
_RAW_NAMES = {"Photo": "TakingPhoto", "WalkDog": "WalkingDog"}
LAYOUT_HELP = """\
Extract the Human3.6M videos to one image per frame, e.g. with MMPose's
tools/dataset_converters/preprocess_h36m.py (the default layout, every 5th frame:
--config.data.frames_stride=5), or with ffmpeg per video:
  ffmpeg -i "S1/Videos/Directions 1.54138969.mp4" -qscale:v 3 "S1/S1_Directions_1.54138969/S1_Directions_1.54138969_%06d.jpg"
and point --config.data.frames_dir at the root. Another layout: set
--config.data.frames_pattern (placeholders {subject} {action} {action_name} {base} {take}
{camera} {frame} {index}; see posemachine/data/h36m_frames.py)."""


def parse_camera(label: str) -> tuple[str, str]:
  """A Human3.6M sequence's camera label -> (camera id, take): '54138969#1@64' -> ('54138969',
  '1')."""
  cam, _, take = label.split("@")[0].partition("#")
  return cam, take


def action_names(base: str, take: str) -> list[str]:
  """The take names to try for a sequence: VideoPose3D's, then the raw Human3.6M one."""
  names = [f"{base} {take}" if take else base]
  if base in _RAW_NAMES:
    raw = _RAW_NAMES[base]
    names.append(f"{raw} {take}" if take else raw)
  return names


def frame_path(root: str, pattern: str, subject: str, name: str, camera: str,
               index: int) -> str:
  """The file of 0-based frame `index` of take `name` ('Directions 1')."""
  base, _, take = name.partition(" ")
  return os.path.join(root, pattern.format(
      subject=subject, action=name.replace(" ", "_"), action_name=name, base=base, take=take,
      camera=camera, frame=index + 1, index=index))


def check_pattern(pattern: str) -> None:
  """ConfigError unless pattern formats with the known placeholders only."""
  try:
    frame_path("", pattern, "S1", "Directions 1", "54138969", 0)
  except (KeyError, IndexError, ValueError) as e:
    raise errors.ConfigError(
        f"config.data.frames_pattern = {pattern!r} does not format ({type(e).__name__}: "
        f"{e}); placeholders: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}.") from e
  if "{frame" not in pattern and "{index" not in pattern:
    raise errors.ConfigError(f"config.data.frames_pattern = {pattern!r} has no {{frame}} or "
                             "{index} placeholder: every frame needs its own file.")


def crop_boxes(px, margin: float):
  """NumPy twin of render.crop_boxes (no jitter): (..., K, 2) pixels -> (..., 3) [x0, y0,
  side] pixels."""
  lo, hi = px.min(-2), px.max(-2)
  side = (hi - lo).max(-1) * margin + 1.0
  return np.concatenate([(lo + hi) / 2 - side[..., None] / 2, side[..., None]], -1)


def _missing_help(path: str, root: str) -> str:
  """What exists on the way to a missing path: the deepest existing folder and its entries."""
  parent = os.path.dirname(path)
  while parent and len(parent) >= len(root) and not os.path.isdir(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    return ""
  try:
    entries = sorted(os.listdir(parent))
  except OSError:
    return ""
  shown = ", ".join(entries[:6]) + (", ..." if len(entries) > 6 else "")
  return f" The deepest existing folder on that path is {parent} ({len(entries)} entries: " \
         f"{shown or 'empty'})."


def read_crop(path: str, box, cam_wh, size: int):
  """Decodes one frame and cuts the box out of it.

  Args:
    path: the image file.
    box: (3,) [x0, y0, side] in camera pixels (w x h of cam_wh).
    cam_wh: (w, h) the camera's image size in pixels (the 2D's frame).
    size: output side in pixels.
  Returns:
    (size, size, 3) uint8.
  Raises:
    DataError naming the path when the file is missing or cannot be decoded.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top  (Pillow: via matplotlib)
  try:
    with Image.open(path) as im:
      full_w, full_h = im.size
      sx, sy = full_w / cam_wh[0], full_h / cam_wh[1]
      if abs(sx / sy - 1.0) > 0.02:
        raise errors.DataError(
            f"{path}: the image is {full_w} x {full_h} px, which is not the camera's "
            f"{cam_wh[0]:g} x {cam_wh[1]:g} px at any one scale; frames must keep the video's "
            "aspect ratio (the 2D annotations are in the camera's pixels).")
      if im.format == "JPEG" and box[2] * sx > 2 * size:
        # Decode at half resolution (DCT scaling; ~40% faster). Not 1/4 or 1/8: those shift
        # small features by up to ~1.5 px of the full image.
        im.draft("RGB", (-(-full_w // 2), -(-full_h // 2)))
      kx, ky = im.size[0] / cam_wh[0], im.size[1] / cam_wh[1]  # decoded px per camera px.
      im = im.convert("RGB")
      x0, y0, x1, y1 = box[0] * kx, box[1] * ky, (box[0] + box[2]) * kx, (box[1] + box[2]) * ky
      ix0, iy0 = int(np.floor(x0)), int(np.floor(y0))
      ix1, iy1 = max(int(np.ceil(x1)), ix0 + 1), max(int(np.ceil(y1)), iy0 + 1)
      # crop() pads outside the image with zeros; resize's box keeps the sub-pixel offset.
      patch = im.crop((ix0, iy0, ix1, iy1))
      out = patch.resize((size, size), Image.Resampling.BILINEAR,
                         box=(x0 - ix0, y0 - iy0, x1 - ix0, y1 - iy0))
      return np.asarray(out, np.uint8)
  except FileNotFoundError as e:
    raise errors.DataError(f"Missing frame {path}.{_missing_help(path, '')}\n"
                           + LAYOUT_HELP) from e
  except errors.DataError:
    raise
  except (OSError, SyntaxError, ValueError) as e:  # PIL: unreadable, truncated, bad header.
    raise errors.DataError(f"{path}: cannot decode the frame ({type(e).__name__}: {e}); "
                           "expected a complete JPEG/PNG image. Re-extract this video's "
                           "frames.") from e


class FrameData:
  """A split of Human3.6M as real, cropped video frames (the interface of image_train.ClipData).

  Attributes: seqs (the split's Sequences, only frames with an image file: every
  data.frames_stride-th), boxes (N, 3) crop boxes in camera pixels, joints_2d (N, 17, 2)
  crop coordinates; path(n) is frame n's image file (formatted on demand: a full-rate split
  has millions of frames).
  """

  def __init__(self, seqs: seq_lib.Sequences, config):
    d = config.data
    if d.source != "h36m":
      raise errors.ConfigError(f"config.data.frames_dir is set but config.data.source = "
                               f"{d.source!r}: real frames are read for 'h36m' only.")
    if "frame_index" not in seqs.extras:
      raise errors.DataError(f"{seqs.source}: no per-frame 'frame_index'; real frames need "
                             "the Human3.6M loader (posemachine/data/h36m.py).")
    stride, workers = int(d.frames_stride), int(d.frames_workers)
    for key, val in (("frames_stride", stride), ("frames_workers", workers),
                     ("frames_prefetch", int(d.frames_prefetch))):
      if val < 1:
        raise errors.ConfigError(f"config.data.{key} = {val}; expected a positive integer.")
    check_pattern(d.frames_pattern)
    self.root = d.frames_dir
    if not os.path.isdir(self.root):
      raise errors.DataError(f"config.data.frames_dir = {self.root!r} is not a directory.\n"
                             + LAYOUT_HELP)
    self.size = int(config.render.size)
    self.seqs = self._subsample(seqs, stride)
    s = self.seqs
    index = np.rint(s.extras["frame_index"]).astype(np.int64)
    cams = [parse_camera(c)[0] for c in s.camera]
    unknown = sorted(set(cams) - set(geometry.H36M_INTRINSICS))
    if unknown:
      raise errors.DataError(f"{seqs.source}: camera id(s) {unknown} are not Human3.6M's "
                             f"{list(geometry.H36M_INTRINSICS)}.")
    # Image size of each sequence's camera (the same for every subject).
    wh = np.array([geometry.H36M_INTRINSICS[c][4] for c in cams], np.float64)  # (S, 2)
    seq_of = np.repeat(np.arange(s.num_sequences), s.lengths)
    self.cam_wh = wh[seq_of]                                               # (N, 2)
    w = self.cam_wh[:, None, :1]                                           # (N, 1, 1)
    offset = np.stack([np.ones(len(w)), self.cam_wh[:, 1] / self.cam_wh[:, 0]], -1)
    px = (s.pose_2d.astype(np.float64) + offset[:, None]) * w / 2         # (N, 17, 2) px
    self.boxes = crop_boxes(px, float(config.render.margin))               # (N, 3)
    self.joints_2d = ((px - self.boxes[:, None, :2]) / self.boxes[:, None, 2:]
                      * 2.0 - 1.0).astype(np.float32)
    self._pattern, self._cams, self._index, self._seq_of = d.frames_pattern, cams, index, seq_of
    self._takes = self._find_takes(s, cams, d.frames_pattern)
    names_all = sorted(set(s.subject))
    self.subject_index = np.array([names_all.index(x) for x in s.subject], np.int32)
    self._check_ends()
    self._pool = concurrent.futures.ThreadPoolExecutor(workers,
                                                       thread_name_prefix="posemachine-decode")
    self._finalizer = weakref.finalize(self, self._pool.shutdown, wait=False,
                                       cancel_futures=True)

  @staticmethod
  def _subsample(seqs, stride: int) -> seq_lib.Sequences:
    """The frames whose video frame index is a multiple of stride (those have files)."""
    if stride == 1:
      return seqs
    items = []
    for i in range(seqs.num_sequences):
      fr = seqs.sequence(i)
      keep = np.rint(fr["frame_index"]).astype(np.int64) % stride == 0
      if keep.any():
        items.append({**{k: v[keep] for k, v in fr.items()}, "subject": seqs.subject[i],
                      "action": seqs.action[i], "camera": seqs.camera[i],
                      "has_3d": bool(seqs.has_3d[i])})
    if not items:
      raise errors.DataError(f"{seqs.source}: no frame index is a multiple of "
                             f"config.data.frames_stride = {stride}, so no frame has an "
                             "image file (a protocol that keeps single frames, such as "
                             "'p3', needs a stride dividing its frame stride).")
    return seq_lib.Sequences.from_list(items, source=seqs.source)

  def _find_takes(self, s, cams, pattern) -> list[str]:
    """Per sequence, the take name whose first frame exists (DataError naming the path
    tried when none does)."""
    out = []
    for i in range(s.num_sequences):
      first = int(np.rint(s.extras["frame_index"][s.starts[i]]))
      tried = []
      for name in action_names(s.action[i], parse_camera(s.camera[i])[1]):
        p = frame_path(self.root, pattern, s.subject[i], name, cams[i], first)
        tried.append(p)
        if os.path.isfile(p):
          out.append(name)
          break
      else:
        raise errors.DataError(
            f"Missing frame {tried[0]}: the first frame of sequence {s.sequence_name(i)} "
            f"(video frame index {first}, file number {first + 1}) under "
            f"config.data.frames_dir = {self.root!r} with config.data.frames_pattern = "
            f"{pattern!r}" + (f" (also tried {', '.join(tried[1:])})" if len(tried) > 1
                              else "") + f".{_missing_help(tried[0], self.root)}\n"
            + LAYOUT_HELP)
    return out

  def _check_ends(self) -> None:
    """Every sequence's first frame opens as an image and its last frame exists."""
    from PIL import Image  # pylint: disable=g-import-not-at-top
    s = self.seqs
    for i in range(s.num_sequences):
      first, last = self.path(s.starts[i]), self.path(s.starts[i] + s.lengths[i] - 1)
      try:
        with Image.open(first) as im:
          im.size  # pylint: disable=pointless-statement  (header only)
      except (OSError, SyntaxError, ValueError) as e:
        raise errors.DataError(f"{first}: cannot read the image ({type(e).__name__}: {e}); "
                               f"expected the first frame of sequence {s.sequence_name(i)} "
                               "as a JPEG/PNG image.") from e
      if not os.path.isfile(last):
        raise errors.DataError(
            f"Missing frame {last}: the last frame of sequence {s.sequence_name(i)} "
            f"({s.lengths[i]} frames; the first, {first}, exists). The extraction stopped "
            "early, or config.data.frames_stride is not the extraction's frame step.")

  def path(self, n: int) -> str:
    """The image file of frame n (an index into seqs)."""
    i = self._seq_of[n]
    return frame_path(self.root, self._pattern, self.seqs.subject[i], self._takes[i],
                      self._cams[i], int(self._index[n]))

  def decode(self, frames) -> np.ndarray:
    """Crops of frames (M,) (indices into seqs) -> (M, S, S, 3) uint8, decoded in parallel."""
    jobs = [(self.path(n), self.boxes[n], self.cam_wh[n], self.size) for n in frames]
    return np.stack(list(self._pool.map(lambda a: read_crop(*a), jobs)))

  def windows(self, idx, mask, seq_ids) -> dict:
    """Host batch for frame indices idx (B, T): images (B, T, S, S, 3) float32 in [0, 1],
    joints_2d (B, T, 17, 2) crop coordinates, pose_3d (B, T, 17, 3) metres, mask (B, T),
    has_3d (B,), subject (B,) int32. Each distinct frame is decoded once."""
    s = self.seqs
    uniq, inv = np.unique(idx, return_inverse=True)
    crops = self.decode(uniq)
    images = (crops[inv.reshape(idx.shape)].astype(np.float32) / 255.0)
    return {"images": images, "joints_2d": self.joints_2d[idx], "pose_3d": s.pose_3d[idx],
            "mask": mask.astype(np.float32), "has_3d": s.has_3d[seq_ids].astype(np.float32),
            "subject": self.subject_index[seq_ids]}

  def close(self) -> None:
    self._finalizer()


class Prefetcher:
  """Runs make_batch(key) for keys ahead of their use on a background thread pool.

  Iterating yields (key, batch) in the order of keys whatever order the work finishes in;
  at most `depth` batches are prepared or held at once. An exception raised by make_batch
  is raised by the iteration that reaches its key (the same exception, with a note naming
  the key). close() (or leaving a `with` block) cancels what is queued and waits for the
  running work. `wait_s` totals the time the consumer waited for batches.
  """

  def __init__(self, make_batch, keys, depth: int = 2, workers: int = 1,
               name: str = "prefetch"):
    self._make, self._keys = make_batch, iter(keys)
    self._pool = concurrent.futures.ThreadPoolExecutor(workers,
                                                       thread_name_prefix=f"posemachine-{name}")
    self._pending = collections.deque()
    self._lock = threading.Lock()
    self.wait_s, self.count = 0.0, 0
    for _ in range(max(int(depth), 1)):
      self._submit()

  def _submit(self) -> None:
    with self._lock:
      key = next(self._keys, _END)
      if key is not _END:
        self._pending.append((key, self._pool.submit(self._make, key)))

  def __iter__(self):
    return self

  def __next__(self):
    if not self._pending:
      raise StopIteration
    key, future = self._pending.popleft()
    t0 = time.perf_counter()
    try:
      batch = future.result()
    except BaseException as e:
      self.close()
      if isinstance(e, Exception):
        e.add_note(f"(raised while preparing the batch of {key!r} in a loader thread)")
      raise
    finally:
      self.wait_s += time.perf_counter() - t0
    self.count += 1
    self._submit()
    return key, batch

  def close(self) -> None:
    self._pending.clear()
    self._pool.shutdown(wait=True, cancel_futures=True)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


_END = object()
