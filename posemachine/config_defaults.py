"""The full configuration schema with its defaults, and validation of user configs.

Every `configs/*.py` starts from `get_config()` here and overrides fields; `validate`
rejects keys that are not in this schema (typos) and values of the wrong type, naming them.
Model sizes default to the paper's (1024 wide, two LSTM layers, six-layer projector).
"""

from __future__ import annotations

import difflib
import math

import ml_collections

from posemachine.errors import ConfigError


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.source = "synthetic"   # 'synthetic' | 'h36m' | 'humaneva' | 'mocap' (BVH)
  c.data.dir = ""               # directory of dataset files, for real data sources.
  # Image mode on real video frames (data/h36m_frames.py): the root of the extracted
  # Human3.6M frames and the layout of a frame's path below it ('' = render bodies instead).
  c.data.frames_dir = ""
  c.data.frames_pattern = "{subject}/{subject}_{action}.{camera}/{subject}_{action}.{camera}_{frame:06d}.jpg"
  c.data.frames_stride = 1      # only every n-th video frame was extracted (MMPose: 5).
  c.data.frames_workers = 4     # threads decoding and cropping frames.
  c.data.frames_prefetch = 4    # training batches prepared ahead of the step.
  c.data.num_joints = 17
  c.data.window = 16            # frames per training/evaluation window.
  # Sample training windows inside the jitted step from the training set held on the
  # devices (data/device_sampler.py); False: the host samples and feeds each batch.
  c.data.device_sampling = True
  # 'memory': read the source files at start-up (default); 'tfds': read the ArrayRecord files
  # written once by `python -m posemachine.data.prepare` (data/tfds_data.py).
  c.data.format = "memory"
  c.data.prepared_dir = ""      # 'tfds': where prepared datasets live; '' = <data.dir>/prepared.
  c.data.shard_by_process = True  # 'tfds', several processes: each reads its own train shard.
  # Semi-/self-supervised training: the fraction of training subjects (or sequences) whose
  # 3D labels are used; the rest train through the 2D terms only. 0 = no 3D labels at all.
  c.data.labelled_fraction = 1.0
  c.data.labelled_by = "subject"  # 'subject' | 'sequence'
  c.data.use_unlabelled = True    # False: drop the unlabelled part (supervised-only baseline).
  # Share of each training batch's windows drawn from 3D-labelled sequences when both kinds
  # are present (semi-supervised batches, as VideoPose3D); < 0: in proportion to frames.
  c.data.labelled_share = -1.0
  c.data.synthetic = ml_collections.ConfigDict(dict(
      seed=0,
      num_subjects=ml_collections.ConfigDict(dict(train=8, val=2, test=3)),
      sequences_per_action=2, frames_per_sequence=200, fps=50.0, cameras_per_sequence=2,
      noise_px=4.0, outlier_prob=0.01, outlier_px=40.0,
      actions=("walk", "run", "jump", "squat", "wave", "turn", "sit"),
  ))
  c.data.h36m = ml_collections.ConfigDict(dict(
      keypoints="gt",          # 2D source: data_2d_h36m_<keypoints>.npz
      protocol="p1",           # 'p1' | 'frontal' | 'p3' (see posemachine/data/h36m.py)
      frontal_camera="58860488",  # test camera of the 'frontal' protocol.
      p3_frame_stride=64,      # 'p3': score every n-th S11 frame.
      train_subjects="",       # comma-separated; '' = the protocol's.
      test_subjects="",
      val_subjects="",         # '' = hold out the tail val_fraction of each train sequence.
      val_fraction=0.1,
      actions="",              # comma-separated base names ('Walking,Eating'); '' = all 15.
      downsample=1,            # keep every n-th training frame.
      # Camera calibration JSON ('' = <data.dir>/h36m_cameras.json); the package ships
      # none: make it with `python -m posemachine.data.h36m_calibration` (see its doc).
      cameras="",
  ))
  c.data.humaneva = ml_collections.ConfigDict(dict(
      keypoints="gt",          # 2D source: data_2d_humaneva15_<keypoints>.npz
      train_subjects="Train/S1,Train/S2,Train/S3",
      test_subjects="Validate/S1,Validate/S2,Validate/S3",
      actions="Walk,Jog,Box",  # prefixes of the file's action names ('Walking 1 chunk0').
      val_fraction=0.1,        # tail of each training sequence held out for validation.
      downsample=1,
  ))
  c.data.mocap = ml_collections.ConfigDict(dict(
      train_dir="",            # BVH files for training (val: the tail of each clip) ...
      test_dir="",             # ... and for the test split.
      train_glob="*.bvh",      # comma-separated glob patterns within the directories.
      test_glob="*.bvh",
      fps=30.0,                # resample every clip to this frame rate.
      scale=0.0,               # metres per file unit; 0 = auto (CMU rigs: 0.0254 / 0.45).
      up_axis="y",             # 'y' | 'z': the files' up axis (output is Y up).
      skip_frames=1,           # leading frames dropped (CMU: a T-pose reference frame).
      segment_frames=0,        # split clips into segments of this many frames (0 = whole).
      cameras_per_clip=4,      # virtual cameras per train/val clip (segment) ...
      test_cameras_per_clip=2,  # ... and per test clip.
      camera_seed=0,           # train/val cameras.
      test_camera_seed=1,      # the test split's own fixed cameras.
      val_fraction=0.1,
      noise_px=4.0, outlier_prob=0.01, outlier_px=40.0,  # 2D noise as the synthetic source.
  ))

  c.model = ml_collections.ConfigDict()
  c.model.hidden = 1024           # FC stem and LSTM width.
  c.model.lstm_layers = 2
  c.model.direction = "bidirectional"  # 'bidirectional' (2nd LSTM over reversed time) | 'causal'
  c.model.projector_hidden = 1024
  c.model.residual_correction = True  # corrected 3D = intermediate + regression half output.
  c.model.use_confidence = True   # feed per-joint 2D confidences to the stem.
  c.model.center_input = True     # stem sees root-centred 2D joints + the root's 2D position.
  c.model.dtype = "float32"       # compute dtype: 'float32' | 'bfloat16' (GPU/TPU); params f32.
  # Input: 'keypoints' (the lifter on 2D poses) | 'images' (the full machine from rendered
  # RGB crops: 2D pose sub-network -> image stem -> transformer -> projector; image_train.py).
  c.model.input = "keypoints"
  c.model.encoder = ml_collections.ConfigDict(dict(
      trunk=(16, 32, 64),         # channels per trunk block; a 2x2 max-pool between blocks.
      convs_per_block=2,
      feature_channels=64,        # pose-aware feature maps (CPM: 128).
      stages=2,                   # heatmap stages (CPM-style refinement).
      stage_channels=64,
      stage_kernel=3,             # kernel of the refinement stages' convs (CPM: 7).
      stem_channels=32,           # the transformer's image stem convs (paper: 128).
      stem_keypoints=True,        # also feed the soft-argmax 2D pose to the transformer's FC.
  ))

  c.loss = ml_collections.ConfigDict()
  c.loss.distance = "squared"     # 'squared' (L2, as the reference) | 'euclidean' (MPJPE-like)
  c.loss.w_3d_intermediate = 1.0  # 3D joints, transformer output.
  c.loss.w_3d = 1.0               # 3D joints, corrected (projector) output.
  c.loss.w_bone_3d = 1.0          # 3D bone vectors, on both outputs.
  c.loss.w_2d = 1.0               # 2D projection consistency (self-supervision).
  c.loss.w_bone_2d = 1.0          # 2D bone vectors of the projection.
  # Priors for data without 3D labels (see losses.py); 0 = off.
  c.loss.w_2d_weak_perspective = 0.0
  c.loss.w_bone_length_prior = 0.0
  c.loss.w_symmetry = 0.0
  # Cross-view consistency on synchronised calibrated views of the training motion (2D
  # only, no 3D labels; data/views.py): lifts a second view of every window; 0 = off.
  c.loss.w_multiview = 0.0
  # Monocular rotation cycle (train.train_step; losses.rotate_about_vertical and
  # virtual_view_2d): the lifted pose turned about the vertical axis by up to
  # rotation_cycle_max_deg, seen by a virtual weak-perspective camera, lifted again, must
  # come back as the turned pose; a second lift per window; 0 = off.
  c.loss.w_rotation_cycle = 0.0
  c.loss.rotation_cycle_max_deg = 90.0

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 20_000
  c.train.batch_size = 64         # global batch (windows); divisible by the device count.
  c.train.learning_rate = 1e-3
  c.train.warmup_steps = 200
  c.train.schedule = "cosine"     # 'cosine' | 'constant'
  c.train.end_lr_fraction = 0.02
  c.train.b1 = 0.9
  c.train.b2 = 0.999
  c.train.clip_norm = 5.0
  c.train.augment_noise_px = 0.0  # extra Gaussian 2D noise per step (pixels at w=1000).
  c.train.augment_flip = False    # mirror each window left/right with probability 1/2.
  c.train.log_every = 100
  c.train.eval_every = 1000       # validation + checkpoint interval.
  c.train.checkpoint_keep = 3     # keep the last N checkpoints plus the best by val MPJPE.
  c.train.num_devices = -1        # -1: all devices; else the first N (data-parallel mesh).
  # A NaN/Inf loss or gradient: 'stop' raises at the next log point naming the step and the
  # tensor; 'skip' leaves the state unchanged for that step and counts it (train/skipped).
  c.train.nonfinite = "stop"

  # Image mode (model.input='images'): rendering of the synthetic/BVH bodies (data/render.py).
  c.render = ml_collections.ConfigDict(dict(
      size=64,                    # crop side in pixels (CPM: 368).
      margin=1.35,                # crop side / the joints' bounding-box side.
      jitter=0.05,                # training crops: random scale and shift (fraction).
      heatmap_sigma=1.0,          # Gaussian heatmap targets, in heatmap cells.
      seed=0,                     # test-split appearances and backgrounds.
  ))
  # Staged training of the image machine (the paper's schedule); a stage with steps=0 is
  # skipped. Each stage has its own fresh Adam (train.* settings, this learning rate), batch
  # and window; frozen parts get zero updates (optax.multi_transform).
  stage = lambda steps, lr, batch, window: ml_collections.ConfigDict(dict(
      steps=steps, learning_rate=lr, batch_size=batch, window=window))
  c.stages = ml_collections.ConfigDict()
  c.stages.encoder = stage(0, 1e-4, 32, 1)       # (1) 2D sub-network on 2D labels.
  c.stages.transformer = stage(0, 1e-4, 8, 8)    # (2) transformer, trunk frozen.
  c.stages.projector = stage(0, 1e-4, 8, 8)      # (3) projector only.
  c.stages.end_to_end = stage(0, 1e-5, 8, 8)     # (4) everything, lower learning rate.
  c.stages.joint_masking = stage(0, 1e-5, 8, 8)  # (5) optional: joints hidden at random.
  c.stages.joint_mask_prob = 0.1
  c.stages.w_heatmap = 1.0        # heatmap L2 (all stages of the encoder).
  c.stages.w_coord = 1.0          # soft-argmax 2D vs the true 2D (crop units).
  # Test-split evaluations after these stages (eval.json 'per_stage'; the last stage is always
  # evaluated): comma-separated names. The default gives stage 4's gain over stage 3.
  c.stages.eval_after = "projector"

  # Test-time self-correction (refine.py); reference: 2 Adam steps at 1.5e-4.
  c.refine = ml_collections.ConfigDict()
  c.refine.enabled = False        # also report metrics after correction in evaluation.
  c.refine.steps = 2
  c.refine.learning_rate = 1.5e-4
  c.refine.converge_mm = 5.0      # stop when a step moves the pose less than this.
  c.refine.discard_mm = 20.0      # reject corrections moving a torso joint more than this.
  c.refine.w_2d = 1.0
  c.refine.w_bone_2d = 1.0
  c.refine.chunk = 64             # samples per vmapped chunk (lax.map); 0: all at once.
  # 2D model of the objective: the frozen learned projection half (the paper), or the
  # analytic weak-perspective projection of the corrected pose ('weak_perspective').
  c.refine.projection = "learned"
  # The 2D pose the correction fits: 'observed' (the input 2D, the paper), 'smoothed' (the
  # input 2D averaged over refine.smooth_frames frames, masked), or 'ground_truth' (the
  # clean 2D of synthetic data: an oracle for analysis; refine_study.py).
  c.refine.target = "observed"
  c.refine.smooth_frames = 5
  # Keep the uncorrected depth (Z) of every joint; only X, Y change (refine_study.py).
  c.refine.keep_depth = False

  # Device mesh ('data', 'model'): the batch is split over 'data' (all devices / model); the
  # wide layers over 'model' (rules: distributed.PARAM_RULES). 1: pure data parallelism.
  c.mesh = ml_collections.ConfigDict()
  c.mesh.model = 1

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 128         # windows per evaluation batch.
  c.eval.split = "test"
  c.eval.val_max_windows = 512    # cap on validation windows evaluated during training.
  c.eval.num_plot_frames = 4
  return c


def _walk(schema, config, path=""):
  for key in config.keys():
    name = f"{path}{key}"
    if key not in schema:
      raise ConfigError(f"Unknown config key '{name}'. Valid keys at this level: "
                       f"{sorted(schema.keys())}.")
    ref, val = schema[key], config[key]
    if isinstance(ref, ml_collections.ConfigDict):
      if not isinstance(val, (ml_collections.ConfigDict, dict)):
        raise ConfigError(f"Config key '{name}' must be a group of settings, got {val!r}.")
      _walk(ref, val, name + ".")
    elif isinstance(ref, bool) != isinstance(val, bool) or (
        isinstance(ref, (int, float)) and not isinstance(val, (int, float))) or (
        isinstance(ref, str) and not isinstance(val, str)):
      raise ConfigError(f"Config key '{name}' = {val!r} has type {type(val).__name__}, "
                       f"expected {type(ref).__name__} (default {ref!r}).")


# Allowed values of numeric keys: (test, what the error says is expected).
_POSITIVE_INT = (lambda v: v >= 1, "a positive integer")
_AT_LEAST_1 = (lambda v: v >= 1, "an integer >= 1")
_AT_LEAST_0 = (lambda v: v >= 0, "a value >= 0")
_POSITIVE = (lambda v: v > 0, "a value > 0")
_FRACTION = (lambda v: 0 <= v <= 1, "a value in [0, 1]")
_HOLDOUT = (lambda v: 0 <= v < 1, "a value in [0, 1)")
RANGES = {
    "model.hidden": _POSITIVE_INT, "model.lstm_layers": _POSITIVE_INT,
    "model.projector_hidden": _POSITIVE_INT, "data.window": _POSITIVE_INT,
    "train.batch_size": _POSITIVE_INT, "train.num_steps": _POSITIVE_INT,
    "eval.batch_size": _POSITIVE_INT, "train.log_every": _POSITIVE_INT,
    "train.eval_every": _POSITIVE_INT, "mesh.model": _POSITIVE_INT,
    "train.learning_rate": _AT_LEAST_0, "train.warmup_steps": _AT_LEAST_0,
    "train.end_lr_fraction": _FRACTION, "train.b1": _HOLDOUT, "train.b2": _HOLDOUT,
    "train.clip_norm": _POSITIVE, "train.augment_noise_px": _AT_LEAST_0,
    "train.checkpoint_keep": _AT_LEAST_1, "eval.val_max_windows": _AT_LEAST_1,
    "eval.num_plot_frames": _AT_LEAST_0,
    "refine.learning_rate": _POSITIVE, "refine.converge_mm": _AT_LEAST_0,
    "refine.discard_mm": _POSITIVE, "refine.chunk": _AT_LEAST_0,
    "refine.smooth_frames": _AT_LEAST_1,
    "data.h36m.downsample": _AT_LEAST_1, "data.h36m.p3_frame_stride": _AT_LEAST_1,
    "data.h36m.val_fraction": _HOLDOUT, "data.humaneva.downsample": _AT_LEAST_1,
    "data.humaneva.val_fraction": _HOLDOUT,
    "data.synthetic.fps": _POSITIVE,
    "data.synthetic.noise_px": _AT_LEAST_0, "data.synthetic.outlier_prob": _FRACTION,
    "data.synthetic.outlier_px": _AT_LEAST_0,
    "data.mocap.fps": _POSITIVE, "data.mocap.scale": _AT_LEAST_0,
    "data.mocap.skip_frames": _AT_LEAST_0, "data.mocap.segment_frames": _AT_LEAST_0,
    "data.mocap.cameras_per_clip": _AT_LEAST_1, "data.mocap.test_cameras_per_clip": _AT_LEAST_1,
    "data.mocap.val_fraction": _HOLDOUT, "data.mocap.noise_px": _AT_LEAST_0,
    "data.mocap.outlier_prob": _FRACTION, "data.mocap.outlier_px": _AT_LEAST_0,
    "render.size": (lambda v: v >= 8, "an integer >= 8 (pixels)"), "render.margin": _POSITIVE,
    "stages.joint_mask_prob": _FRACTION,
}
for _s in ("encoder", "transformer", "projector", "end_to_end", "joint_masking"):
  RANGES.update({f"stages.{_s}.steps": _AT_LEAST_0, f"stages.{_s}.learning_rate": _AT_LEAST_0,
                 f"stages.{_s}.batch_size": _AT_LEAST_1, f"stages.{_s}.window": _AT_LEAST_1})


def _leaves(config, path=""):
  for key, val in config.items():
    if isinstance(val, (ml_collections.ConfigDict, dict)):
      yield from _leaves(val, f"{path}{key}.")
    else:
      yield f"{path}{key}", val


def _check_ranges(config) -> None:
  """ConfigError for a NaN/Inf number or a value outside `RANGES`."""
  values = dict(_leaves(config))  # every RANGES key is in the schema (tested)
  for name, val in values.items():
    if isinstance(val, float) and not math.isfinite(val):
      raise ConfigError(f"Config key '{name}' = {val}; expected a finite number.")
  for name, (ok, what) in RANGES.items():
    if not ok(values[name]):
      raise ConfigError(f"Config key '{name}' = {values[name]}; expected {what}.")
  if values["refine.smooth_frames"] % 2 == 0:
    raise ConfigError(f"Config key 'refine.smooth_frames' = {values['refine.smooth_frames']}; "
                      "expected an odd window (1: no smoothing).")
  if values["train.num_devices"] == 0 or values["train.num_devices"] < -1:
    raise ConfigError(f"Config key 'train.num_devices' = {values['train.num_devices']}; "
                      "expected -1 (all devices) or a count >= 1.")
  if values["eval.split"] not in ("test", "val", "train"):
    raise ConfigError(f"Config key 'eval.split' = {values['eval.split']!r}; expected 'test', "
                      "'val' or 'train'.")


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Raises ConfigError on unknown keys, wrong types or invalid values."""
  _walk(get_config(), config)
  m, t, d = config.model, config.train, config.data
  choices = {"model.direction": (m.direction, ("bidirectional", "causal")),
             "model.dtype": (m.dtype, ("float32", "bfloat16")),
             "loss.distance": (config.loss.distance, ("squared", "euclidean")),
             "train.schedule": (t.schedule, ("cosine", "constant")),
             "train.nonfinite": (t.nonfinite, ("stop", "skip")),
             "data.labelled_by": (d.labelled_by, ("subject", "sequence")),
             "data.format": (d.format, ("memory", "tfds")),
             "refine.projection": (config.refine.projection, ("learned", "weak_perspective")),
             "refine.target": (config.refine.target, ("observed", "smoothed", "ground_truth")),
             "model.input": (m.input, ("keypoints", "images"))}
  for name, (val, ok) in choices.items():
    if val not in ok:
      raise ConfigError(f"Config key '{name}' = {val!r}; expected one of {list(ok)}.")
  if not 0.0 <= d.labelled_fraction <= 1.0:
    raise ConfigError(f"Config key 'data.labelled_fraction' = {d.labelled_fraction}; "
                      "expected a value in [0, 1].")
  if config.loss.w_multiview:
    if d.format != "memory":
      raise ConfigError("Config key 'loss.w_multiview' needs data.format='memory'.")
    if t.augment_flip:
      raise ConfigError("Config keys 'loss.w_multiview' and 'train.augment_flip' do not "
                        "combine: a mirrored window has no mirrored second view.")
    if m.input != "keypoints":
      raise ConfigError("Config key 'loss.w_multiview' applies to model.input='keypoints'.")
  negative = [k for k, v in config.loss.items() if k.startswith("w_") and v < 0]
  if negative:
    raise ConfigError(f"Config key(s) {', '.join('loss.' + k for k in negative)} < 0; loss "
                      "weights must be >= 0 (0 turns a term off).")
  if not 0.0 < config.loss.rotation_cycle_max_deg <= 180.0:
    raise ConfigError(f"Config key 'loss.rotation_cycle_max_deg' = "
                      f"{config.loss.rotation_cycle_max_deg}; expected a value in (0, 180].")
  if config.refine.steps < 0:
    raise ConfigError(f"Config key 'refine.steps' = {config.refine.steps}; expected >= 0.")
  if config.loss.w_rotation_cycle and m.input != "keypoints":
    raise ConfigError("Config key 'loss.w_rotation_cycle' applies to model.input='keypoints' "
                      "(it lifts a synthesised 2D pose).")
  if d.labelled_share > 1.0:
    raise ConfigError(f"Config key 'data.labelled_share' = {d.labelled_share}; expected a "
                      "value in [0, 1], or < 0 for windows in proportion to frames.")
  if d.labelled_share >= 0 and d.format != "memory":
    raise ConfigError("Config key 'data.labelled_share' needs data.format='memory' (the "
                      f"'{d.format}' reader draws windows in proportion to frames).")
  _check_ranges(config)
  return config


def describe_flag_error(argv, error: Exception, flag: str = "config") -> str:
  """A one-line message for an exception raised while absl parsed --config and its
  --config.<key>=value overrides (ml_collections raises AttributeError/KeyError for an
  unknown key, OSError/SyntaxError for a bad config file)."""
  schema = get_config()
  prefix = f"--{flag}."
  for arg in argv[1:]:
    if not arg.startswith(prefix):
      continue
    path = arg[len(prefix):].split("=", 1)[0]
    node, done = schema, []
    for part in path.split("."):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        close = difflib.get_close_matches(part, valid, n=1)
        hint = f" Did you mean '{'.'.join(done + close)}'?" if close else ""
        return (f"Unknown config key '{path}' (in {arg}).{hint} Valid keys at "
                f"'{'.'.join(done) or 'top level'}': {valid}.")
      node, done = node[part], done + [part]
  return f"Cannot load --{flag} ({type(error).__name__}: {error})."


def parse_flags_or_exit(argv, program: str = "posemachine"):
  """absl's flag parser for entry points with a --config file flag: a config file that
  does not load, or an unknown --config.<key>, ends the program with one line naming it
  (not a traceback)."""
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  try:
    rest = app.parse_flags_with_usage(argv)
    if "config" in flags.FLAGS:
      getattr(flags.FLAGS, "config").keys()  # config_flags loads the file on first use.
    return rest
  except (AttributeError, KeyError, OSError, SyntaxError, TypeError, ValueError) as e:
    raise SystemExit(f"{program}: error: {describe_flag_error(argv, e)}") from None
