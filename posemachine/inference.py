"""Lifting with a trained checkpoint from your own code: load, lift, stream, export.

  params, config = inference.load("runs/synthetic")          # latest checkpoint
  lift = inference.make_lift(config)                         # jitted, pure
  pose_3d = lift(params, keypoints_2d, confidence)           # (..., T, 17, 3) metres

`lift(params, keypoints_2d, confidence=None, mask=None, *, config)` is a pure function of
arrays (the config is static): `jax.jit(functools.partial(inference.lift, config=config))`,
`jax.vmap` and `jax.grad` go through it. Streaming (causal models): `make_stream(config)`
carries the LSTM state from frame to frame for real-time use; it equals the offline causal
model on the same clip. `export(...)` serialises the lifter with `jax.export` (weights
included) into one .npz; `load_exported(path)` runs it without flax and without
posemachine's model or training code (this module imports them only inside the functions
that need them).

Units: input 2D keypoints in normalised screen coordinates, u / w * 2 - [1, h / w] (pixels u,
image width w and height h); output 3D joints in metres, camera frame (x right, y down,
z forward), root-relative (pelvis at 0), Human3.6M-17 order (`skeleton.JOINT_NAMES`).
"""

from __future__ import annotations

import functools
import json
import math
import os
import zipfile
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from posemachine import io_utils
from posemachine.errors import CheckpointError, ConfigError, PoseMachineError

EXPORT_FORMAT = "posemachine-exported-lifter-v1"
WINDOW_MODES = ("slide", "tile", "sequence")


def _model(config):
  from posemachine.models import machine  # pylint: disable=g-import-not-at-top
  return machine.from_config(config.model, config.data.num_joints)


# ------------------------------------------------------------------------------ loading


def _merge(config, saved: dict, where: str, prefix: str = ""):
  """Writes the saved JSON values into the default ConfigDict (lists -> tuples)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  for key, value in saved.items():
    name = prefix + key
    if key not in config:
      raise ConfigError(f"{where}: unknown config key '{name}' (a checkpoint from another "
                        "version of posemachine?).")
    ref = config[key]
    if isinstance(ref, ml_collections.ConfigDict):
      if not isinstance(value, dict):
        raise ConfigError(f"{where}: config key '{name}' must be a group, got {value!r}.")
      _merge(ref, value, where, name + ".")
      continue
    if isinstance(ref, tuple) and isinstance(value, list):
      value = tuple(value)
    try:
      config[key] = value
    except (TypeError, ValueError) as e:
      raise ConfigError(f"{where}: config key '{name}' = {value!r}: {e}") from e


def load_config(workdir: str):
  """The training config of a workdir: workdir/config.json on top of the defaults."""
  from posemachine import config_defaults  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "config.json")
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
  except FileNotFoundError as e:
    raise PoseMachineError(f"{path} not found: is {workdir} a training workdir "
                           "(python -m posemachine.main ... --workdir=...)?") from e
  except (OSError, json.JSONDecodeError) as e:
    raise PoseMachineError(f"{path} is unreadable ({e}).") from e
  if not isinstance(saved, dict):
    raise ConfigError(f"{path}: expected a JSON object of config groups, got "
                      f"{type(saved).__name__}.")
  config = config_defaults.get_config()
  _merge(config, saved, path)
  return config_defaults.validate(config)


class Checkpoint(NamedTuple):
  params: Any    # the model's parameter pytree (float32 jax arrays).
  config: Any    # ml_collections.ConfigDict of the training run.
  step: int      # the training step of the checkpoint.


def load_checkpoint(workdir: str, step: int | str | None = None) -> Checkpoint:
  """Restores a checkpoint's parameters and the run's config.

  Args:
    workdir: a training workdir (config.json and checkpoints/).
    step: None or 'latest' (default), 'best' (lowest validation MPJPE) or a step number.
  Returns:
    Checkpoint(params, config, step).
  """
  from posemachine import checkpoints, train  # pylint: disable=g-import-not-at-top
  config = load_config(workdir)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    raise PoseMachineError(f"No checkpoints in {ckpt_dir}; train first.")
  model = _model(config)
  tx = train.make_optimizer(config.train)
  abstract = jax.eval_shape(functools.partial(
      train.init_state, model, tx, num_joints=config.data.num_joints,
      window=config.data.window), jax.random.key(0))
  # This process's own first device (jax.devices()[0] belongs to process 0: on a multi-host
  # run the other processes could not restore onto it).
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          abstract)
  manager = checkpoints.make_manager(workdir, config.train.checkpoint_keep)
  try:
    if step in (None, "latest"):
      step = manager.latest_step()
    elif step == "best":
      step = manager.best_step()
    elif isinstance(step, str):
      step = int(step) if step.isdigit() else step
    if not isinstance(step, int):
      if step is None:
        raise PoseMachineError(f"No checkpoint in {ckpt_dir}; train first.")
      raise PoseMachineError(f"checkpoint step {step!r}: expected 'latest', 'best' or a "
                             "step number.")
    if step not in manager.all_steps():
      raise PoseMachineError(f"No checkpoint of step {step} in {ckpt_dir}; there are "
                             f"{sorted(manager.all_steps())}.")
    try:
      state = checkpoints.restore(manager, abstract, step)
    except CheckpointError as e:
      others = sorted(s for s in manager.all_steps() if s != step)
      raise CheckpointError(
          f"{e}\n"
          + (f"Other steps there: {others}; load one of them (predict: --checkpoint=N)."
             if others else "There is no other step.")
          + (" Rerunning the training command on this workdir moves a damaged latest step "
             "to corrupt_checkpoints/ and resumes from the newest good one."
             if step == max(manager.all_steps()) else "")) from None
  finally:
    manager.close()
  return Checkpoint(state.params, config, int(step))


def load(workdir: str, step: int | str | None = None):
  """(params, config) of the latest (or `step`, or 'best') checkpoint in workdir."""
  ckpt = load_checkpoint(workdir, step)
  return ckpt.params, ckpt.config


# -------------------------------------------------------------------------------- lift


def lift(params, keypoints_2d, confidence=None, mask=None, *, config):
  """Lifts 2D keypoints to 3D. Pure: jit/vmap/grad through it with config bound.

  Args:
    params: model parameters (`load`).
    keypoints_2d: (..., T, K, 2) normalised screen coordinates, u / w * 2 - [1, h / w].
    confidence: optional (..., T, K) in [0, 1] (0 = masked joint); ones if None.
    config: the run's config (static; bind it with functools.partial or use make_lift).
    mask: optional (..., T) frame mask, 1 for real frames (padding is ignored by the LSTMs).
  Returns:
    (..., T, K, 3) root-relative camera-frame joints, metres (float32).
  """
  model = _model(config)
  x = jnp.asarray(keypoints_2d)
  k = config.data.num_joints
  if x.ndim < 3 or x.shape[-2:] != (k, 2):
    raise PoseMachineError(f"keypoints_2d: expected shape (..., T, {k}, 2), got {x.shape}.")
  lead, t = x.shape[:-3], x.shape[-3]
  x = x.reshape((-1, t, k, 2))
  b = x.shape[0]
  if confidence is not None:
    confidence = jnp.asarray(confidence)
    if confidence.shape != lead + (t, k):
      raise PoseMachineError(f"confidence: expected shape {lead + (t, k)}, got "
                             f"{confidence.shape}.")
    confidence = confidence.reshape((b, t, k))
  if mask is not None:
    mask = jnp.broadcast_to(jnp.asarray(mask, jnp.float32), lead + (t,)).reshape((b, t))
  out = model.apply({"params": params}, x, confidence, mask)
  return out["pose_3d"].reshape(lead + (t, k, 3))


_JIT_CACHE: dict = {}  # (kind, config as JSON) -> jitted function; see _cached_jit.


def _cached_jit(kind: str, config, build: Callable) -> Callable:
  """One jitted function per (kind, config contents), so repeated calls (a folder of clips)
  reuse its compilations. `build(config_copy)` makes it from a private copy of the config."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  values = config.to_dict()
  key = (kind, json.dumps(values, sort_keys=True, default=str))
  fn = _JIT_CACHE.get(key)
  if fn is None:
    if len(_JIT_CACHE) >= 16:
      _JIT_CACHE.pop(next(iter(_JIT_CACHE)))
    fn = _JIT_CACHE[key] = build(ml_collections.ConfigDict(values))
  return fn


def make_lift(config) -> Callable:
  """jit(lift) with the config bound: f(params, keypoints_2d, confidence=None, mask=None).
  The same config (by value) gives the same jitted function."""
  return _cached_jit("lift", config, lambda c: jax.jit(functools.partial(lift, config=c)))


# --------------------------------------------------------------------------- streaming


class Stream(NamedTuple):
  """Frame-by-frame causal lifting (see `make_stream`)."""
  init_state: Callable  # (batch) -> state: per LSTM layer (h, c), each (batch, hidden) f32.
  step: Callable        # (params, state, frame_2d, confidence) -> (state, pose_3d).


def make_stream(config) -> Stream:
  """Streaming lifter for a causal model: one frame in, one 3D pose out, state carried.

  `step(params, state, frame_2d (B, K, 2), confidence (B, K) or None)` is jitted and returns
  (new state, pose_3d (B, K, 3) metres, root-relative). Feeding a clip frame by frame from
  `init_state(B)` gives the same poses as `lift` on the whole clip (one sequence).
  """
  if config.model.direction != "causal":
    raise PoseMachineError(f"Streaming needs a causal model; this checkpoint has "
                           f"model.direction={config.model.direction!r} (its second LSTM "
                           "runs backwards in time). Train with --config.model.direction=causal.")
  model = _model(config)
  hidden, layers = config.model.hidden, config.model.lstm_layers

  def init_state(batch: int = 1):
    zeros = jnp.zeros((batch, hidden), jnp.float32)
    return tuple((zeros, zeros) for _ in range(layers))

  @jax.jit
  def step(params, state, frame_2d, confidence=None):
    conf = None if confidence is None else confidence[:, None]
    out = model.apply({"params": params}, frame_2d[:, None], conf, None,
                      initial_states=state)
    new_state = tuple((h, c) for h, c in out["lstm_states"])
    return new_state, out["pose_3d"][:, 0]

  return Stream(init_state, step)


# ------------------------------------------------------------------------ whole clips


def _window_starts(num_frames: int, window: int, causal: bool):
  """Sliding windows: each frame's window start and its position in that window."""
  frames = np.arange(num_frames)
  if causal:  # every frame is the last of a full window (the first ones: of the first).
    starts = np.maximum(frames - window + 1, 0)
  else:  # centred windows, shifted inside the clip at its ends.
    starts = np.clip(frames - window // 2, 0, max(num_frames - window, 0))
  return starts, frames - starts


def lift_sequence(params, config, keypoints_2d, confidence=None, *, windows: str = "slide",
                  batch_size: int = 64, progress: bool = False) -> np.ndarray:
  """Lifts one whole clip, in windows of config.data.window frames.

  Windows (`windows`):
    'slide' (default): one window per frame, so that every frame sees a full window of
      context as in training: causal models use the window ending at the frame,
      bidirectional ones the window centred on it (shifted inside the clip at its ends).
      Costs `window` times the frames of 'tile'.
    'tile': non-overlapping windows covering every frame once, the last one padded and
      masked (as the evaluator, eval.json); jumps can show at window borders.
    'sequence' (causal models only): the whole clip as one sequence, the LSTM state
      carried across chunks of `window` frames (equals `make_stream` frame by frame).

  Args:
    keypoints_2d: (T, K, 2) normalised screen coordinates.
    confidence: (T, K) or None.
    batch_size: windows per jitted call (one compile per clip).
    progress: print a progress line (stderr) for long clips.
  Returns:
    (T, K, 3) float32 metres, root-relative camera frame.
  """
  from posemachine import metric_writers  # pylint: disable=g-import-not-at-top
  from posemachine.data import sequences  # pylint: disable=g-import-not-at-top
  if windows not in WINDOW_MODES:
    raise PoseMachineError(f"windows={windows!r}; expected one of {list(WINDOW_MODES)}.")
  x = np.asarray(keypoints_2d, np.float32)
  t, k = x.shape[0], config.data.num_joints
  if x.shape != (t, k, 2) or t == 0:
    raise PoseMachineError(f"keypoints_2d: expected ({t or 'T>0'}, {k}, 2), got {x.shape}.")
  c = np.ones((t, k), np.float32) if confidence is None else np.asarray(confidence, np.float32)
  if c.shape != (t, k):
    raise PoseMachineError(f"confidence: expected ({t}, {k}), got {c.shape}.")
  window = config.data.window
  causal = config.model.direction == "causal"
  if windows == "sequence":
    if not causal:
      raise PoseMachineError("windows='sequence' needs a causal model; use 'slide' or 'tile'.")
    return _lift_carried(params, config, x, c, progress)
  if windows == "tile":  # the evaluator's tiling, reused.
    seqs = sequences.Sequences.from_list(
        [{"pose_3d": np.zeros((t, k, 3)), "pose_2d": x, "confidence": c, "subject": "clip",
          "action": "clip", "camera": "clip"}], source="clip")
    _, uniq = sequences.tile_windows(seqs, window)
    frames = np.arange(t)
    which, pos = frames // window, frames % window
  else:
    starts, pos = _window_starts(t, window, causal)
    uniq, which = np.unique(starts, return_inverse=True)
  n = len(uniq)
  # Calls of batch_size windows; a shorter clip rounds its batch up to a power of two, so a
  # folder of clips of any lengths compiles the (cached) lifter a handful of times only.
  b = min(batch_size, 1 << max(0, (n - 1).bit_length()))
  padded = np.concatenate([uniq, np.zeros(-n % b, np.int64)])
  idx, mask = sequences.window_indices(np.array([0]), np.array([t]),
                                       np.zeros(len(padded), np.int64), padded, window)
  mask[n:] = False
  fn = make_lift(config)
  out = np.zeros((len(padded), window, k, 3), np.float32)
  bar = metric_writers.Progress(len(padded) // b, every_seconds=2.0,
                                enabled=progress and len(padded) > b)
  for i, b0 in enumerate(range(0, len(padded), b)):
    sl = slice(b0, b0 + b)
    out[sl] = np.asarray(fn(params, x[idx[sl]], c[idx[sl]], mask[sl].astype(np.float32)))
    bar.update(i + 1)
  bar.done()
  return out[which, pos]


def _lift_carried(params, config, x, c, progress):
  from posemachine import metric_writers  # pylint: disable=g-import-not-at-top
  window, (t, k) = config.data.window, x.shape[:2]

  def build(c):
    model = _model(c)

    @jax.jit
    def chunk(params, states, xs, cs, mask):
      out = model.apply({"params": params}, xs, cs, mask, initial_states=states)
      return tuple((h, cc) for h, cc in out["lstm_states"]), out["pose_3d"]
    return chunk

  chunk = _cached_jit("carried", config, build)

  n = math.ceil(t / window)
  pad = n * window - t
  xp = np.concatenate([x, np.repeat(x[-1:], pad, 0)])
  cp = np.concatenate([c, np.repeat(c[-1:], pad, 0)])
  mp = (np.arange(n * window) < t).astype(np.float32)
  states = make_stream(config).init_state(1)
  out = np.zeros((n * window, k, 3), np.float32)
  bar = metric_writers.Progress(n, every_seconds=2.0, enabled=progress and n > 1)
  for i in range(n):
    sl = slice(i * window, (i + 1) * window)
    states, pose = chunk(params, states, xp[None, sl], cp[None, sl], mp[None, sl])
    out[sl] = np.asarray(pose[0])
    bar.update(i + 1)
  bar.done()
  return out[:t]


# ---------------------------------------------------------------------- root trajectory


def _undistort(points_px, f, c, k, p, iterations: int = 20):
  """Distorted pixels (..., 2) -> undistorted normalised image coordinates (x/z, y/z)."""
  xd = (np.asarray(points_px, np.float64) - c) / f
  xy = xd.copy()
  for _ in range(iterations):  # fixed point of xd = xy (radial + tan) + p r2.
    r2 = (xy ** 2).sum(-1, keepdims=True)
    radial = 1 + k[0] * r2 + k[1] * r2 ** 2 + k[2] * r2 ** 3
    tan = (p * xy).sum(-1, keepdims=True)
    xy = (xd - p * r2) / (radial + tan)
  return xy


def estimate_root_trajectory(pose_3d, keypoints_px, confidence, camera) -> np.ndarray:
  """Camera-frame pelvis positions that best explain the 2D keypoints (an estimate).

  Not a learned trajectory head: per frame, the translation t minimising the algebraic
  reprojection error sum_j c_j |(P_j + t)_xy - x_j (P_j + t)_z|^2 of the predicted
  root-relative pose P through the known intrinsics (linear least squares). Its depth
  scales with the predicted body size (the training bodies' size), so it is as good as
  the camera and the pose are.

  Args:
    pose_3d: (T, K, 3) root-relative camera-frame joints, metres.
    keypoints_px: (T, K, 2) observed pixels.
    confidence: (T, K) weights (0 = ignore the joint).
    camera: `geometry.Camera` (f, c, k, p fields) of the video.
  Returns:
    (T, 3) pelvis position in the camera frame, metres (z = depth).
  """
  f, c = np.asarray(camera.f, np.float64), np.asarray(camera.c, np.float64)
  xy = _undistort(keypoints_px, f, c, np.asarray(camera.k, np.float64),
                  np.asarray(camera.p, np.float64))
  pose = np.asarray(pose_3d, np.float64)
  w = np.asarray(confidence, np.float64) + 1e-6
  t, kk = pose.shape[:2]
  # Rows [1, 0, -x] t = x Z - X and [0, 1, -y] t = y Z - Y for every joint.
  a = np.zeros((t, kk, 2, 3))
  a[..., 0, 0] = a[..., 1, 1] = 1.0
  a[..., 0, 2], a[..., 1, 2] = -xy[..., 0], -xy[..., 1]
  rhs = xy * pose[..., 2:3] - pose[..., :2]
  a = a.reshape(t, 2 * kk, 3)
  rhs = rhs.reshape(t, 2 * kk)
  wr = np.repeat(w, 2, axis=1)
  ata = np.einsum("tni,tn,tnj->tij", a, wr, a)
  atb = np.einsum("tni,tn,tn->ti", a, wr, rhs)
  return np.linalg.solve(ata, atb[..., None])[..., 0]


# ------------------------------------------------------------------------------ export


def export(params, config, path: str, batch: int | None = 1, window: int | None = None, *,
           platforms: tuple[str, ...] | None = None) -> dict:
  """Serialises the lifter (with its weights) to one .npz with `jax.export`.

  The exported function is pose_3d (B, W, K, 3) = f(keypoints_2d (B, W, K, 2),
  confidence (B, W, K)) in the units of `lift`; the weights are stored beside the
  serialised StableHLO and passed in as arguments by `load_exported`.

  Args:
    params, config: from `load`.
    path: the output file (written atomically; no suffix added).
    batch: the batch size B, or None for a symbolic (any) batch size.
    window: frames per call W (default config.data.window).
    platforms: e.g. ('cpu', 'cuda'); default the current backend.
  Returns:
    The metadata dict stored in the file.
  """
  for name, value in (("batch", batch), ("window", window)):
    if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
      raise PoseMachineError(f"export: {name}={value!r}; expected an integer >= 1"
                             + (" or None (any batch size)." if name == "batch" else
                                " or None (the config's window)."))
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise PoseMachineError(f"export: the folder of {path} does not exist.")
  model = _model(config)
  window = window or config.data.window
  k = config.data.num_joints
  leaves, treedef = jax.tree.flatten(params)
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]

  def fn(weights, keypoints_2d, confidence):
    p = jax.tree.unflatten(treedef, weights)
    return model.apply({"params": p}, keypoints_2d, confidence)["pose_3d"]

  b = jax.export.symbolic_shape("b")[0] if batch is None else int(batch)
  specs = ([jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves],
           jax.ShapeDtypeStruct((b, window, k, 2), jnp.float32),
           jax.ShapeDtypeStruct((b, window, k), jnp.float32))
  exported = jax.export.export(jax.jit(fn), platforms=platforms)(*specs)
  blob = exported.serialize()
  meta = {
      "format": EXPORT_FORMAT, "batch": batch, "window": window, "num_joints": k,
      "num_params": len(leaves), "param_paths": paths,
      "platforms": list(exported.platforms), "jax_version": jax.__version__,
      "exported_crc32": zlib.crc32(blob),
      "model": json.loads(config.model.to_json_best_effort()),
      "inputs": {"keypoints_2d": f"(B, {window}, {k}, 2) float32 normalised screen "
                                 "coordinates u / w * 2 - [1, h / w]",
                 "confidence": f"(B, {window}, {k}) float32 in [0, 1]"},
      "output": f"pose_3d (B, {window}, {k}, 3) float32 metres, camera frame (x right, "
                "y down, z forward), root-relative (pelvis at 0)",
  }
  arrays = {"exported": np.frombuffer(blob, np.uint8),
            "meta": np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)}
  arrays.update({f"param_{i:04d}": np.asarray(x) for i, x in enumerate(leaves)})
  io_utils.atomic_savez(path, **arrays)
  return meta


class ExportedLifter:
  """A lifter loaded by `load_exported`: call it like `lift` (fixed window)."""

  def __init__(self, exported, weights, meta):
    self.exported = exported
    self.weights = weights
    self.meta = meta

  def __call__(self, keypoints_2d, confidence=None) -> np.ndarray:
    """(B, W, K, 2) normalised 2D [+ (B, W, K) confidence] -> (B, W, K, 3) metres."""
    m = self.meta
    x = np.asarray(keypoints_2d, np.float32)
    expect = (m["batch"] or "B", m["window"], m["num_joints"], 2)
    if x.ndim != 4 or x.shape[1:] != tuple(expect[1:]) or (m["batch"] and x.shape[0] != m["batch"]):
      raise PoseMachineError(f"keypoints_2d: this export takes shape {expect}, got {x.shape}.")
    c = (np.ones(x.shape[:3], np.float32) if confidence is None
         else np.asarray(confidence, np.float32))
    if c.shape != x.shape[:3]:
      raise PoseMachineError(f"confidence: expected shape {x.shape[:3]}, got {c.shape}.")
    return np.asarray(self.exported.call(self.weights, x, c))


def load_exported(path: str) -> ExportedLifter:
  """Loads a file written by `export`; needs only jax and numpy."""
  try:
    with np.load(path, allow_pickle=False) as z:
      meta = json.loads(bytes(z["meta"]).decode("utf-8"))
      if not isinstance(meta, dict):
        raise ValueError(f"its 'meta' is a JSON {type(meta).__name__}, expected an object")
      if meta.get("format") == EXPORT_FORMAT:
        blob = bytearray(z["exported"].tobytes())
        weights = [np.asarray(z[f"param_{i:04d}"]) for i in range(int(meta["num_params"]))]
  except (OSError, KeyError, ValueError, TypeError, UnicodeDecodeError, zipfile.BadZipFile,
          EOFError) as e:
    raise PoseMachineError(f"{path}: cannot load the exported lifter ({type(e).__name__}: "
                           f"{e}); the file is incomplete or not an export.") from None
  if meta.get("format") != EXPORT_FORMAT:
    raise PoseMachineError(f"{path}: not a posemachine export (format "
                           f"{meta.get('format')!r}, expected {EXPORT_FORMAT!r}).")
  if "exported_crc32" in meta and zlib.crc32(blob) != meta["exported_crc32"]:
    raise PoseMachineError(f"{path}: the serialised function fails its CRC-32 check; the file "
                           "is damaged (export it again).")
  try:
    exported = jax.export.deserialize(blob)
  except Exception as e:  # pylint: disable=broad-except  (flatbuffer/struct errors vary)
    raise PoseMachineError(f"{path}: cannot deserialise the exported function "
                           f"({type(e).__name__}: {e}).") from None
  paths = meta.get("param_paths") or [str(i) for i in range(len(weights))]
  for i, (w, aval) in enumerate(zip(weights, exported.in_avals)):
    if w.shape != aval.shape or w.dtype != aval.dtype:
      raise PoseMachineError(f"{path}: weight {i} ({paths[i]}) has shape {w.shape} "
                             f"{w.dtype}; the exported function expects {aval.shape} "
                             f"{aval.dtype}.")
  return ExportedLifter(exported, [jnp.asarray(w) for w in weights], meta)
