"""Pictures of a lifted clip: one frame as a PNG, the whole clip as a GIF (or MP4).

Matplotlib with the headless Agg backend. The 2D panel shows the input keypoints in image
pixels (y down, the image's frame drawn as a grey box; hollow markers for joints that were
missing and interpolated), optionally the 3D pose reprojected through the camera; the 3D
panels show the root-relative camera-frame pose in metres, drawn with y up: the front
view looks along the camera's optical axis, the side view from the camera's right. Left
limbs are blue, right limbs red. GIFs use matplotlib's PillowWriter (pillow is a matplotlib
dependency); MP4 needs ffmpeg on PATH.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import matplotlib

matplotlib.use("Agg")
from matplotlib import animation  # pylint: disable=g-import-not-at-top
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
from matplotlib import ticker  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from posemachine import metric_writers, plots, skeleton  # pylint: disable=g-import-not-at-top

_CENTRE, _LEFT, _RIGHT = "#444444", "#1f77b4", "#d62728"
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK
_VIEWS = {"front": (8, -90), "side": (8, 0), "oblique": (15, -65)}


def _colour(joint):
  return _LEFT if joint in skeleton.LEFT else _RIGHT if joint in skeleton.RIGHT else _CENTRE


def _bones(parents):
  return [(c, p) for c, p in enumerate(parents) if p >= 0]


class _Pose2D:
  """Bones and joints of one 2D pose on an image-pixel axis (updatable)."""

  def __init__(self, ax, parents, style="-", alpha=1.0, markers=True, label=None,
               colour=None, lw=2.2, zorder=2):
    self.bones = _bones(parents)
    self.lines = [ax.plot([], [], style, color=colour or _colour(c), lw=lw, alpha=alpha,
                          solid_capstyle="round", zorder=zorder)[0] for c, _ in self.bones]
    self.seen = self.missing = None
    if markers:
      self.seen = ax.scatter([], [], s=14, c=_CENTRE, zorder=3)
      self.missing = ax.scatter([], [], s=30, facecolors="none", edgecolors="#ff00ff",
                                linewidths=1.2, zorder=4, label="interpolated (missing)")
    if label:
      ax.plot([], [], style, color=colour or _CENTRE, alpha=alpha, lw=lw, label=label)

  def set(self, xy, filled=None):
    for line, (c, p) in zip(self.lines, self.bones):
      line.set_data([xy[p, 0], xy[c, 0]], [xy[p, 1], xy[c, 1]])
    if self.seen is not None:
      filled = np.zeros(len(xy), bool) if filled is None else np.asarray(filled, bool)
      self.seen.set_offsets(xy[~filled] if (~filled).any() else np.zeros((0, 2)))
      self.missing.set_offsets(xy[filled] if filled.any() else np.zeros((0, 2)))


class _Pose3D:
  """Bones of one 3D camera-frame pose on a 3D axis, plotted as (x, z, -y)."""

  def __init__(self, ax, parents):
    self.bones = _bones(parents)
    self.lines = [ax.plot([], [], [], color=_colour(c), lw=2.4, solid_capstyle="round")[0]
                  for c, _ in self.bones]

  def set(self, pose):
    px, py, pz = pose[:, 0], pose[:, 2], -pose[:, 1]
    for line, (c, p) in zip(self.lines, self.bones):
      line.set_data_3d([px[p], px[c]], [py[p], py[c]], [pz[p], pz[c]])


def _view_2d(keypoints_px, image_size, margin=0.15):
  """Square pixel window around all keypoints of a clip (the whole image if they fill it)."""
  w, h = image_size
  xy = np.asarray(keypoints_px, np.float64).reshape(-1, 2)
  xy = xy[np.isfinite(xy).all(-1)]
  if not len(xy):
    return (0.0, w), (0.0, h)
  lo, hi = xy.min(0), xy.max(0)
  centre, half = (lo + hi) / 2, (hi - lo).max() / 2 * (1 + 2 * margin) + 10
  if half >= max(w, h) / 2:
    return (-0.02 * w, 1.02 * w), (-0.02 * h, 1.02 * h)
  return (centre[0] - half, centre[0] + half), (centre[1] - half, centre[1] + half)


def _setup_2d(ax, image_size, title, view):
  w, h = image_size
  ax.add_patch(plt.Rectangle((0, 0), w, h, fill=False, ec="#999999", lw=1))
  (x0, x1), (y0, y1) = view
  ax.set_xlim(x0, x1)
  ax.set_ylim(y1, y0)  # image y axis points down.
  ax.set_aspect("equal")
  ax.tick_params(labelsize=6)
  ax.set_title(title, fontsize=9)
  ax.set_xlabel("u (px)", fontsize=7)
  ax.set_ylabel("v (px)", fontsize=7)


def _setup_3d(ax, radius, view, title, tick_labels=True):
  ax.set_xlim(-radius, radius)
  ax.set_ylim(-radius, radius)
  ax.set_zlim(-radius, radius)
  ax.set_box_aspect((1, 1, 1), zoom=1.15)
  ax.view_init(elev=_VIEWS[view][0], azim=_VIEWS[view][1])
  for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
    axis.set_major_locator(ticker.MaxNLocator(3))
  ax.tick_params(labelsize=5, pad=0)
  if not tick_labels:  # text is most of the drawing time of an animation frame.
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
      axis.set_ticklabels([])
  ax.set_xlabel("x (m)", fontsize=6, labelpad=-6)
  ax.set_ylabel("z depth (m)", fontsize=6, labelpad=-6)
  ax.set_zlabel("-y up (m)", fontsize=6, labelpad=-6)
  ax.set_title(title, fontsize=9, pad=0)


def _radius(pose_3d):
  r = np.nanmax(np.abs(np.asarray(pose_3d) - np.asarray(pose_3d)[..., :1, :]))
  return float(r * 1.1) if np.isfinite(r) and r > 0 else 1.0


def _check(keypoints_px, pose_3d, filled):
  kp = np.asarray(keypoints_px, np.float64)
  pose = np.asarray(pose_3d, np.float64)
  if kp.shape[:-1] != pose.shape[:-1] or kp.shape[-1] != 2 or pose.shape[-1] != 3:
    raise ValueError(f"keypoints_px {kp.shape} and pose_3d {pose.shape} must be (..., K, 2) "
                     "and (..., K, 3) with the same leading shape.")
  filled = np.zeros(kp.shape[:-1], bool) if filled is None else np.asarray(filled, bool)
  return kp, pose - pose[..., :1, :], filled


def plot_frame(path, keypoints_px, pose_3d, image_size, filled=None, reprojected_px=None,
               title: str = "", parents=skeleton.PARENTS, radius: float | None = None,
               view_px=None):
  """PNG of one frame: the 2D input overlay and the 3D pose from two viewpoints.

  Args:
    path: output image (written atomically).
    keypoints_px: (K, 2) input keypoints, pixels.
    pose_3d: (K, 3) lifted joints, metres, camera frame (made root-relative here).
    image_size: (w, h) pixels.
    filled: optional (K,) bool, joints that were missing and interpolated.
    reprojected_px: optional (K, 2) the 3D pose projected back into the image.
    title: figure title (e.g. the frame number).
    radius: half-size of the 3D boxes in metres (default from this pose).
    view_px: optional ((x0, x1), (y0, y1)) pixel window of the 2D panel (default: around
      the keypoints; `clip_view` gives one window for a whole clip).
  """
  kp, pose, filled = _check(keypoints_px, pose_3d, filled)
  fig = plt.figure(figsize=(11.5, 4.2))
  ax2 = fig.add_subplot(1, 3, 1)
  _setup_2d(ax2, image_size, "2D input (pixels; grey: the image border)",
            view_px or _view_2d(kp, image_size))
  _Pose2D(ax2, parents, label="2D keypoints").set(kp, filled)
  if reprojected_px is not None:  # on top, thin: where it hides the input, they agree.
    _Pose2D(ax2, parents, "--", 0.9, markers=False, label="3D reprojected", colour="#111111",
            lw=1.0, zorder=5).set(np.asarray(reprojected_px))
  ax2.legend(loc="lower right", fontsize=6)
  r = radius or _radius(pose)
  for i, view in enumerate(("front", "side")):
    ax = fig.add_subplot(1, 3, 2 + i, projection="3d")
    _setup_3d(ax, r, view, f"3D, {view} view" + (" (from the camera)" if view == "front"
                                                     else " (from the camera's right)"))
    _Pose3D(ax, parents).set(pose)
  for colour, name in ((_LEFT, "left"), (_RIGHT, "right"), (_CENTRE, "centre")):
    fig.axes[1].plot([], [], color=colour, label=name)
  fig.legend(*fig.axes[1].get_legend_handles_labels(), loc="lower center", ncol=3,
             fontsize=7, frameon=False)
  if title:
    fig.suptitle(title, fontsize=10)
  plots.save_figure(fig, path, dpi=90)


def animate(path, keypoints_px, pose_3d, image_size, fps: float = 50.0, filled=None,
            frame_ids=None, max_frames: int = 300, dpi: int = 72, progress: bool = False,
            parents=skeleton.PARENTS) -> str:
  """Animation of a clip, 2D input beside the 3D pose (oblique view).

  Args:
    path: output file, '.gif' (PillowWriter) or '.mp4' (ffmpeg; ValueError when ffmpeg is
      not on PATH). Written to a temporary file, then renamed.
    keypoints_px: (T, K, 2) pixels. pose_3d: (T, K, 3) metres, camera frame.
    image_size: (w, h) pixels. fps: the clip's frame rate.
    filled: optional (T, K) bool, interpolated joints. frame_ids: (T,) labels.
    max_frames: longer clips are subsampled evenly (the GIF keeps the clip's duration).
    progress: print progress lines while rendering.
  Returns:
    path.
  """
  kp, pose, filled = _check(keypoints_px, pose_3d, filled)
  t = len(kp)
  frame_ids = np.arange(t) if frame_ids is None else np.asarray(frame_ids)
  step = max(1, int(np.ceil(t / max_frames)))
  frames = np.arange(0, t, step)
  ext = os.path.splitext(os.fspath(path))[1].lower()
  if ext == ".mp4":
    if not animation.FFMpegWriter.isAvailable():
      raise ValueError("MP4 needs ffmpeg on PATH; use a .gif path instead.")
    writer = animation.FFMpegWriter(fps=fps / step, bitrate=1800)
  elif ext == ".gif":
    writer = animation.PillowWriter(fps=min(fps / step, 50.0))
  else:
    raise ValueError(f"{path}: unknown animation type {ext!r}; expected .gif or .mp4.")

  fig = plt.figure(figsize=(8.4, 4.0))
  ax2 = fig.add_subplot(1, 2, 1)
  _setup_2d(ax2, image_size, "2D input (pixels)", _view_2d(kp, image_size))
  p2 = _Pose2D(ax2, parents)
  ax3 = fig.add_subplot(1, 2, 2, projection="3d")
  r = _radius(pose)
  _setup_3d(ax3, r, "oblique", f"3D, root-relative (box {2 * r:.1f} m)", tick_labels=False)
  p3 = _Pose3D(ax3, parents)
  label = fig.suptitle("", fontsize=10)
  fig.subplots_adjust(left=0.06, right=0.98, bottom=0.08, top=0.88, wspace=0.15)
  bar = metric_writers.Progress(len(frames), every_seconds=5.0,
                                enabled=progress and len(frames) > 50)

  def update(i):
    f = frames[i]
    p2.set(kp[f], filled[f])
    p3.set(pose[f])
    label.set_text(f"frame {frame_ids[f]}  ({f + 1}/{t})")
    bar.update(i + 1)
    return []

  anim = animation.FuncAnimation(fig, update, frames=len(frames), blit=False)
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=ext)
  os.close(fd)
  try:
    anim.save(tmp, writer=writer, dpi=dpi)
    os.chmod(tmp, _FILE_MODE)  # mkstemp makes it private; a normal new file's mode.
    os.replace(tmp, path)
    bar.done()
  finally:
    plt.close(fig)
    if os.path.exists(tmp):
      os.unlink(tmp)
  return os.fspath(path)


def clip_view(keypoints_px, image_size):
  """The 2D panels' pixel window for a whole clip (T, K, 2)."""
  return _view_2d(keypoints_px, image_size)


def ffmpeg_available() -> bool:
  return shutil.which("ffmpeg") is not None
