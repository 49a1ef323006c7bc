"""Lift your own 2D keypoints to 3D with a trained checkpoint.

  python -m posemachine.predict --workdir=runs/synthetic --input=keypoints.json \
      --output=out/clip --camera=54138969

Input: COCO-17 keypoints of one person per frame, as a COCO results JSON or a (T, 17, 3)
.npy/.npz (see `posemachine.keypoints` for the formats, the COCO -> Human3.6M mapping and
how missing, crowded and NaN detections are handled), plus the image size (--image_size)
or a Human3.6M camera (--camera, which also gives the intrinsics for a root trajectory).

Outputs, next to the --output prefix (OUT.npz ...; a directory writes DIR/<input name>.*):
  OUT.npz, OUT.json  3D joints (T, 17, 3) in metres, camera frame (x right, y down,
                     z forward), root-relative (pelvis at 0), Human3.6M-17 order; units,
                     axes, joint names and the input's frame numbers are stored with them.
                     With camera intrinsics also 'root_trajectory' (T, 3): the pelvis in the
                     camera frame estimated from the 2D keypoints and the 3D pose.
  OUT.bvh            the motion on a 17-joint rig (`posemachine.export_bvh`), metres, Y up.
  OUT.png            one frame (--png_frame): 2D input overlay + 3D from two viewpoints.
  OUT.gif / OUT.mp4  the whole clip, 2D beside 3D (--animation; MP4 needs ffmpeg).
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import flags
import numpy as np

from posemachine import errors, io_utils, keypoints, skeleton

FLAGS = flags.FlagValues()  # private: no clash with other absl entry points.
flags.DEFINE_string("workdir", None, "Training workdir holding the checkpoint.",
                    flag_values=FLAGS)
flags.DEFINE_string("input", None, "Keypoints: COCO results .json, or .npy/.npz (T, 17, 3).",
                    flag_values=FLAGS)
flags.DEFINE_string("output", None, "Output prefix (OUT.npz, OUT.json, ...) or directory/.",
                    flag_values=FLAGS)
flags.DEFINE_string("image_size", None, "W,H of the video in pixels.", flag_values=FLAGS)
flags.DEFINE_string("camera", None, "A Human3.6M camera id (its image size and intrinsics), "
                    "e.g. 54138969.", flag_values=FLAGS)
flags.DEFINE_float("focal_length", None, "Focal length in pixels (with --image_size): "
                   "enables the root trajectory for your own camera.", flag_values=FLAGS)
flags.DEFINE_enum("format", "coco", list(keypoints.FORMATS), "Joint order of the input.",
                  flag_values=FLAGS)
flags.DEFINE_integer("png_frame", None, "Frame number (as in the input) for OUT.png; "
                     "default the middle frame.", flag_values=FLAGS)
flags.DEFINE_enum("animation", "gif", ["gif", "mp4", "none"], "Clip animation: gif; mp4 "
                  "(if ffmpeg is on PATH, else gif); none.", flag_values=FLAGS)
flags.DEFINE_enum("bvh", "rigid", ["rigid", "stretch", "none"], "BVH rig: rigid (bone "
                  "lengths fixed), stretch (exact positions), none.", flag_values=FLAGS)
flags.DEFINE_enum("multi_person", "highest", ["highest", "error"], "Several detections on a "
                  "frame: keep the highest-scoring one (warn), or stop.", flag_values=FLAGS)
flags.DEFINE_float("min_confidence", 0.3, "Keypoints scored below this are masked and "
                   "interpolated.", flag_values=FLAGS)
flags.DEFINE_enum("nan", "missing", ["missing", "error"], "NaN/Inf keypoints: treat as "
                  "missed detections (warn), or stop.", flag_values=FLAGS)
flags.DEFINE_enum("windows", "slide", ["slide", "tile", "sequence"], "How the clip is cut "
                  "into model windows (see inference.lift_sequence).", flag_values=FLAGS)
flags.DEFINE_string("checkpoint", "latest", "latest, best, or a step number.",
                    flag_values=FLAGS)
flags.DEFINE_float("fps", 50.0, "Frame rate of the video (BVH frame time, animation speed).",
                   flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 64, "Windows per model call.", flag_values=FLAGS)
flags.DEFINE_integer("max_animation_frames", 300, "Longer clips are subsampled evenly in "
                     "the animation.", flag_values=FLAGS)

UNITS = "metres"
COORDINATE_FRAME = ("camera frame: x right, y down, z forward (the optical axis); "
                    "root-relative: the pelvis (joint 0) at the origin")
ROOT_FRAME = ("camera frame: x right, y down, z forward, metres; estimated per frame from "
              "the 2D keypoints, the 3D pose and the camera intrinsics (not learned)")
_OUTPUT_EXTS = (".npz", ".json", ".bvh", ".png", ".gif", ".mp4")


def _say(msg: str) -> None:
  print(f"posemachine.predict: {msg}", file=sys.stderr, flush=True)


def _output_stem(output: str, input_path: str) -> str:
  """OUT of OUT.npz, OUT.json, ...; checked before any work: its folder can be written and
  no output would replace the input file."""
  if not output:
    raise errors.PoseMachineError("--output is empty; give an output prefix (OUT) or a "
                                  "directory ending in '/'.")
  if output.endswith(os.sep) or os.path.isdir(output):
    stem = os.path.join(output, os.path.splitext(os.path.basename(input_path))[0])
  else:
    base, ext = os.path.splitext(output)
    stem = base if ext.lower() in _OUTPUT_EXTS else output
  if "\0" in output:
    raise errors.PoseMachineError(f"--output={output!r} contains a NUL character.")
  # Nothing is created yet (a run that fails later leaves no folders): the nearest existing
  # ancestor of the output folder must be a writable directory.
  folder = os.path.dirname(os.path.abspath(stem))
  existing = folder
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise errors.PoseMachineError(f"--output={output}: cannot create the folder {folder} "
                                  f"({existing} is a file).")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise errors.PoseMachineError(f"--output={output}: the folder {existing} is not writable.")
  if not os.path.isfile(input_path):
    return stem  # nothing to overwrite; reading the input names the problem.
  for ext in _OUTPUT_EXTS:
    target = stem + ext
    if os.path.exists(target) and os.path.samefile(target, input_path):  # links too
      raise errors.PoseMachineError(
          f"--output={output} would overwrite the input file {input_path} (with "
          f"{os.path.basename(target)}); choose another --output.")
  return stem


def _make_folder(stem: str) -> None:
  folder = os.path.dirname(os.path.abspath(stem))
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:
    raise errors.PoseMachineError(f"cannot create the output folder {folder} "
                                  f"({e.strerror or e}).") from None


def _camera(image_size, camera, focal_length):
  """(w, h), geometry.Camera or None from the flags."""
  from posemachine import geometry  # pylint: disable=g-import-not-at-top
  if (image_size is None) == (camera is None):
    raise errors.PoseMachineError("Give exactly one of --image_size=W,H (your video's size in "
                                  "pixels) or --camera=<Human3.6M camera id> "
                                  f"({', '.join(geometry.H36M_CAMERA_IDS)}).")
  if camera is not None:
    if focal_length is not None:
      raise errors.PoseMachineError("--focal_length goes with --image_size, not --camera.")
    try:
      cam = geometry.Camera.h36m(camera)
    except ValueError as e:
      raise errors.PoseMachineError(str(e)) from e
    return (float(cam.w), float(cam.h)), cam
  given = image_size
  if isinstance(image_size, str):
    try:
      image_size = tuple(float(v) for v in image_size.split(","))
    except ValueError:
      image_size = ()
  if len(image_size) != 2 or not all(np.isfinite(v) and v > 0 for v in image_size):
    raise errors.PoseMachineError(f"--image_size={given}: expected W,H in pixels, "
                                  "e.g. 1920,1080.")
  w, h = image_size
  cam = None
  if focal_length is not None:
    if not focal_length > 0:
      raise errors.PoseMachineError(f"--focal_length={focal_length}: expected > 0 pixels.")
    cam = geometry.Camera(f=np.array([focal_length] * 2, np.float32),
                          c=np.array([w / 2, h / 2], np.float32), k=np.zeros(3, np.float32),
                          p=np.zeros(2, np.float32), w=np.float32(w), h=np.float32(h))
  return (w, h), cam


def _check_pixels(xy, image_size, source):
  """Warnings for keypoints that look like the wrong units or the wrong image size."""
  w, h = image_size
  finite = xy[np.isfinite(xy).all(-1)]
  out = []
  if len(finite) and np.abs(finite).max() <= 1.5 and max(w, h) > 16:
    out.append(f"{source}: all keypoints lie within [-1.5, 1.5]: they look normalised; this "
               "command expects pixels.")
  elif len(finite):
    inside = ((finite[:, 0] >= -0.1 * w) & (finite[:, 0] <= 1.1 * w)
              & (finite[:, 1] >= -0.1 * h) & (finite[:, 1] <= 1.1 * h)).mean()
    if inside < 0.5:
      out.append(f"{source}: only {100 * inside:.0f}% of the keypoints lie inside the "
                 f"{w:g} x {h:g} image: is --image_size right?")
  return out


# Beyond this many pixels a coordinate is not a keypoint (and nears float32's range).
MAX_PIXELS = 1e7


def _check_magnitude(kp) -> None:
  """PoseMachineError naming the first finite keypoint coordinate beyond MAX_PIXELS."""
  big = np.isfinite(kp.xy) & (np.abs(kp.xy) > MAX_PIXELS)
  if big.any():
    f, j, d = np.argwhere(big)[0]
    raise errors.PoseMachineError(
        f"{kp.source}: frame {kp.frame_ids[f]}, keypoint {j} ({kp.fmt} order): {'xy'[d]} = "
        f"{kp.xy[f, j, d]:.4g} is not a pixel coordinate (|value| > {MAX_PIXELS:g}).")


def _write_json(path, obj):
  """One top-level key per line (units and axes first), arrays compact."""
  body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}"
                    for k, v in obj.items())
  io_utils.atomic_write_text(path, "{\n" + body + "\n}\n")


def run(workdir: str, input_path: str, output: str, *, image_size=None, camera=None,
        focal_length=None, fmt: str = "coco", png_frame=None, animation: str = "gif",
        bvh: str = "rigid", multi_person: str = "highest", min_confidence: float = 0.3,
        on_nan: str = "missing", windows: str = "slide", checkpoint="latest",
        fps: float = 50.0, batch_size: int = 64, max_animation_frames: int = 300,
        progress: bool = True) -> dict:
  """Lifts a keypoint file and writes the outputs (see the module docstring).

  Returns:
    dict: 'files' (kind -> path), 'pose_3d' (T, 17, 3) metres, 'root_trajectory' (T, 3) or
    None, 'frame_ids' (T,), 'keypoints_px' (T, 17, 2), 'confidence', 'filled' (T, 17),
    'warnings', 'checkpoint_step'.
  """
  # Imported here: `--help` and input errors answer without loading jax and matplotlib.
  from posemachine import animate, export_bvh, geometry, inference  # pylint: disable=g-import-not-at-top,line-too-long
  t0 = time.time()
  if not (np.isfinite(fps) and fps > 0):
    raise errors.PoseMachineError(f"--fps={fps}: expected a positive frame rate.")
  for name, value in (("batch_size", batch_size),
                      ("max_animation_frames", max_animation_frames)):
    if int(value) < 1:
      raise errors.PoseMachineError(f"--{name}={value}: expected an integer >= 1.")
  size, cam = _camera(image_size, camera, focal_length)
  stem = _output_stem(output, input_path)
  kp = keypoints.read_keypoints(input_path, fmt, multi_person)
  _check_magnitude(kp)
  warnings = _check_pixels(kp.xy, size, input_path)
  prep = keypoints.prepare(kp, min_confidence, on_nan)
  warnings += prep.warnings
  for w in warnings:
    _say(f"warning: {w}")
  ckpt = inference.load_checkpoint(workdir, checkpoint)
  config = ckpt.config
  if config.data.num_joints != skeleton.NUM_JOINTS:
    raise errors.PoseMachineError(f"{workdir}: the model has {config.data.num_joints} joints; "
                                  f"this command lifts the {skeleton.NUM_JOINTS}-joint layout.")
  source_cfg = config.data.get(config.data.source)  # e.g. data.synthetic, data.mocap.
  train_fps = float(source_cfg.get("fps", 50.0)) if hasattr(source_cfg, "get") else 50.0
  if abs(fps / train_fps - 1) > 0.2:
    _say(f"warning: --fps={fps:g} but the model was trained on {train_fps:g} fps motion; "
         "its temporal context will see motion at a different speed.")
  t = kp.num_frames
  _say(f"lifting {t} frames ({int(prep.filled.sum())} of {prep.filled.size} joint-frames "
       f"interpolated) with {workdir} step {ckpt.step} ({config.model.direction}, "
       f"windows={windows}).")
  x = keypoints.normalize_pixels(prep.xy, size).astype(np.float32)
  pose = inference.lift_sequence(ckpt.params, config, x, prep.confidence, windows=windows,
                                 batch_size=batch_size, progress=progress)
  root = reproj = None
  if cam is not None:
    root = inference.estimate_root_trajectory(pose, prep.xy, prep.confidence, cam)
    reproj = np.asarray(geometry.project_to_2d(pose + root[:, None].astype(np.float32), cam))

  bad = ~np.isfinite(pose).all(axis=(1, 2))
  if bad.any():  # nothing is written from a non-finite lift.
    raise errors.PoseMachineError(
        f"{input_path}: the model gave non-finite 3D poses on {int(bad.sum())} of {t} frames "
        f"(first: frame {prep.frame_ids[int(np.argmax(bad))]}); nothing was written. Check "
        f"the keypoints and the checkpoint ({workdir}, step {ckpt.step}).")
  _make_folder(stem)
  files = {}
  source = {"input": os.path.abspath(input_path), "format": fmt, "image_size": list(size),
            "camera": camera, "focal_length": focal_length,
            "workdir": os.path.abspath(workdir), "checkpoint_step": ckpt.step,
            "model_direction": config.model.direction, "windows": windows,
            "min_confidence": min_confidence}
  arrays = {
      "pose_3d": pose.astype(np.float32), "frame_ids": prep.frame_ids,
      "keypoints_2d": prep.xy, "confidence": prep.confidence, "interpolated": prep.filled,
      "joint_names": np.array(skeleton.JOINT_NAMES), "parents": np.array(skeleton.PARENTS),
      "fps": np.float32(fps), "image_size": np.array(size, np.float32),
      "units": np.array(UNITS), "coordinate_frame": np.array(COORDINATE_FRAME),
      "keypoints_2d_units": np.array("pixels, Human3.6M-17 order, missing joints filled"),
      "source": np.array(json.dumps(source)),
  }
  if root is not None:
    arrays["root_trajectory"] = root.astype(np.float32)
    arrays["root_trajectory_frame"] = np.array(ROOT_FRAME)
  files["npz"] = stem + ".npz"
  io_utils.atomic_savez(files["npz"], **arrays)
  files["json"] = stem + ".json"
  _write_json(files["json"], {
      "format": "posemachine 3D poses v1", "units": UNITS, "coordinate_frame": COORDINATE_FRAME,
      "shape": "pose_3d[frame][joint] = [x, y, z]", "joint_names": list(skeleton.JOINT_NAMES),
      "parents": list(skeleton.PARENTS), "fps": fps, "num_frames": t,
      "frame_ids": prep.frame_ids.tolist(),
      "pose_3d": np.round(pose.astype(np.float64), 5).tolist(),
      "root_trajectory": None if root is None else {
          "units": UNITS, "coordinate_frame": ROOT_FRAME,
          "positions": np.round(root, 5).tolist()},
      "confidence": np.round(prep.confidence.astype(np.float64), 3).tolist(),
      "interpolated": prep.filled.astype(int).tolist(),
      "source": source, "warnings": warnings})
  if bvh != "none":
    files["bvh"] = stem + ".bvh"
    export_bvh.write_bvh(files["bvh"], pose, fps, root_trajectory=root,
                         stretch=bvh == "stretch",
                         comment=f"Source: {os.path.basename(input_path)}; checkpoint step "
                                 f"{ckpt.step} of {os.path.basename(os.path.abspath(workdir))}.")
  # Pictures.
  ids = list(prep.frame_ids)
  if png_frame is None:
    row = t // 2
  elif int(png_frame) in ids:
    row = ids.index(int(png_frame))
  else:
    raise errors.PoseMachineError(f"--png_frame={png_frame} is not a frame of {input_path} "
                                  f"(frames {ids[0]}..{ids[-1]}).")
  files["png"] = stem + ".png"
  animate.plot_frame(files["png"], prep.xy[row], pose[row], size, filled=prep.filled[row],
                     reprojected_px=None if reproj is None else reproj[row],
                     title=f"{os.path.basename(input_path)}: frame {ids[row]}",
                     radius=animate._radius(pose),  # pylint: disable=protected-access
                     view_px=animate.clip_view(prep.xy, size))
  if animation != "none":
    ext = ".gif"
    if animation == "mp4":
      if animate.ffmpeg_available():
        ext = ".mp4"
      else:
        _say("warning: ffmpeg is not on PATH; writing a GIF instead of an MP4.")
    files["animation"] = stem + ext
    animate.animate(files["animation"], prep.xy, pose, size, fps=fps, filled=prep.filled,
                    frame_ids=prep.frame_ids, max_frames=max_animation_frames,
                    progress=progress)
  _say(f"wrote {', '.join(files.values())} in {time.time() - t0:.1f} s.")
  return {"files": files, "pose_3d": pose, "root_trajectory": root,
          "frame_ids": prep.frame_ids, "keypoints_px": prep.xy, "confidence": prep.confidence,
          "filled": prep.filled, "warnings": warnings, "checkpoint_step": ckpt.step}


def main(argv) -> int:
  """Entry point; argv as sys.argv (program name first). Returns the exit status."""
  if any(a in ("--help", "-h", "--helpfull") for a in argv[1:]):
    print(__doc__ + "\nFlags:\n" + FLAGS.get_help(), file=sys.stderr)
    return 0
  FLAGS.unparse_flags()  # defaults again: main() may run more than once in a process.
  try:
    FLAGS(argv)
  except flags.Error as e:
    print(f"posemachine.predict: {e} (--help lists the flags).", file=sys.stderr)
    return 2
  missing = [n for n in ("workdir", "input", "output") if FLAGS[n].value is None]
  if missing:
    print(f"posemachine.predict: missing --{', --'.join(missing)}.\n"
          f"usage: python -m posemachine.predict --workdir=DIR --input=KEYPOINTS "
          "--output=OUT (--image_size=W,H | --camera=ID) [options]; --help for all.",
          file=sys.stderr)
    return 2
  try:
    run(FLAGS.workdir, FLAGS.input, FLAGS.output, image_size=FLAGS.image_size,
        camera=FLAGS.camera, focal_length=FLAGS.focal_length, fmt=FLAGS.format,
        png_frame=FLAGS.png_frame, animation=FLAGS.animation, bvh=FLAGS.bvh,
        multi_person=FLAGS.multi_person, min_confidence=FLAGS.min_confidence,
        on_nan=FLAGS.nan, windows=FLAGS.windows, checkpoint=FLAGS.checkpoint,
        fps=FLAGS.fps, batch_size=FLAGS.batch_size,
        max_animation_frames=FLAGS.max_animation_frames)
  except errors.PoseMachineError as e:
    print(f"posemachine.predict: error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
