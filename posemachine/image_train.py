"""Staged training and evaluation of the full pose machine from pixels (model.input='images').

The paper's schedule (the paper's reference design), each stage resumable and skipped when its
`config.stages.<name>.steps` is 0:
  1 encoder       the 2D pose sub-network on 2D labels (heatmap L2 + soft-argmax 2D error);
  2 transformer   image stem + LSTMs on the 3D labels of the intermediate pose, trunk frozen;
  3 projector     the projector (corrected 3D + 2D consistency), everything else frozen;
  4 end_to_end    everything, all losses, at a lower learning rate;
  5 joint_masking (optional) as 4 with joints hidden from the transformer at random.
Freezing: a stage's optimiser is optax.multi_transform(adam for the trained parts,
set_to_zero for the rest), and the frozen parts' outputs carry no gradient (the model's
`freeze`), so no backward pass runs through them. Steps count globally over the schedule;
a checkpoint is written at every stage end, so an interrupted run resumes inside its stage.

Frames are rendered on the device inside the jitted step (data/render.py) from the 3D
motion of the synthetic (or BVH) source: the host only draws window indices. Training
renders random appearances, backgrounds and crop jitter per step (seeded by the step);
evaluation renders the test subjects with fixed appearances (config.render.seed).
"""

from __future__ import annotations

import functools
import os
import time

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from posemachine import checkpoints, config_defaults, distributed, errors, evaluate, io_utils
from posemachine import losses, metric_writers, train
from posemachine.data import labels, pipeline, render
from posemachine.data import sequences as seq_lib
from posemachine.models import encoder as encoder_lib
from posemachine.models import image_machine

STAGES = ("encoder", "transformer", "projector", "end_to_end", "joint_masking")
# Top-level param groups each stage trains, and the parts whose outputs it stops gradients at.
TRAINED = {"encoder": ("encoder",), "transformer": ("stem", "transformer"),
           "projector": ("projector",), "end_to_end": None, "joint_masking": None}
FREEZE = {"encoder": (), "transformer": ("encoder",), "projector": ("encoder", "transformer"),
          "end_to_end": (), "joint_masking": ()}
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}


def stage_plan(config) -> list[tuple[str, int, int]]:
  """[(stage, first step, last step)] of the stages with steps > 0, steps counted globally."""
  plan, end = [], 0
  for name in STAGES:
    n = int(config.stages[name].steps)
    if n > 0:
      plan.append((name, end + 1, end + n))
      end += n
  unknown = [n for n in config.stages.eval_after.split(",") if n and n not in STAGES]
  if unknown:
    raise errors.ConfigError(f"stages.eval_after names unknown stage(s) {unknown}; expected "
                             f"names from {list(STAGES)}.")
  if not plan:
    raise errors.ConfigError("model.input='images' needs at least one training stage: set "
                             "config.stages.<stage>.steps > 0 for one of " + ", ".join(STAGES))
  return plan


def stage_of(plan, step: int) -> int:
  """Index in plan of the stage that step belongs to (step 0: the first)."""
  for i, (_, first, last) in enumerate(plan):
    if step <= last:
      return i
  return len(plan) - 1


def make_stage_optimizer(config, name: str, params) -> optax.GradientTransformation:
  """Adam (train.* with the stage's learning rate and steps) on the stage's trained groups."""
  st = config.stages[name]
  tc = ml_collections.ConfigDict(config.train.to_dict())
  tc.learning_rate, tc.num_steps = st.learning_rate, max(int(st.steps), 2)
  tc.warmup_steps = min(tc.warmup_steps, tc.num_steps // 4)
  trained = TRAINED[name] or tuple(params)
  labels_ = {k: "train" if k in trained else "freeze" for k in params}
  return optax.multi_transform({"train": train.make_optimizer(tc), "freeze": optax.set_to_zero()},
                               labels_)


# ------------------------------------------------------------------------------- data


class ClipData:
  """A split of a pose source, as what the renderer needs: absolute camera-frame joints.

  Attributes: seqs (Sequences with extras 'root_3d'), points (N, 17, 3) camera-frame joints
  in metres, camera (per sequence: Camera with leading axis S), subject_index (S,) int.
  """

  def __init__(self, seqs: seq_lib.Sequences):
    if "root_3d" not in seqs.extras:
      raise errors.DataError(f"{seqs.source}: the image mode renders bodies from absolute "
                             "camera-frame joints and needs the 'root_3d' of every frame; the "
                             "synthetic and mocap (BVH) sources have it.")
    if seqs.num_joints != 17:
      raise errors.DataError(f"{seqs.source}: the renderer draws the 17-joint skeleton; got "
                             f"{seqs.num_joints} joints.")
    from posemachine import geometry  # pylint: disable=g-import-not-at-top
    self.seqs = seqs
    self.points = seqs.pose_3d + seqs.extras["root_3d"][:, None]
    try:
      cams = [geometry.Camera.h36m(c.split("#")[0]) for c in seqs.camera]
    except ValueError as e:
      raise errors.DataError(f"{seqs.source}: {e} (the image mode renders with the Human3.6M "
                             "intrinsics named by each sequence's camera label).") from e
    self.camera = geometry.Camera.stack(cams)
    names = sorted(set(seqs.subject))
    self.subject_index = np.array([names.index(s) for s in seqs.subject], np.int32)

  def windows(self, idx, mask, seq_ids) -> dict:
    """Host batch for frame indices idx (B, T): points, pose_3d, mask, has_3d, camera
    fields cam_f/cam_c/cam_k/cam_p/cam_w/cam_h (B, ...), subject (B,)."""
    s = self.seqs
    batch = {"points": self.points[idx], "pose_3d": s.pose_3d[idx],
             "mask": mask.astype(np.float32), "has_3d": s.has_3d[seq_ids].astype(np.float32),
             "subject": self.subject_index[seq_ids]}
    for f in ("f", "c", "k", "p", "w", "h"):
      batch[f"cam_{f}"] = np.asarray(getattr(self.camera, f))[seq_ids].astype(np.float32)
    return batch


def split_data(config, seqs: seq_lib.Sequences):
  """The image source of a split: real frames when config.data.frames_dir is set (the host
  decodes and crops them: data/h36m_frames.py), else bodies rendered on the device."""
  if config.data.frames_dir:
    from posemachine.data import h36m_frames  # pylint: disable=g-import-not-at-top
    return h36m_frames.FrameData(seqs, config)
  return ClipData(seqs)


def _camera(batch):
  from posemachine import geometry  # pylint: disable=g-import-not-at-top
  return geometry.Camera(f=batch["cam_f"], c=batch["cam_c"], k=batch["cam_k"],
                         p=batch["cam_p"], w=batch["cam_w"], h=batch["cam_h"])


def train_windows(data: ClipData, config, name: str, step: int, num_processes=1,
                  process_index=0) -> dict:
  """This process's rows of the global batch of `step` (drawn from (seed, step))."""
  st = config.stages[name]
  rng = np.random.default_rng([config.seed, step])
  s = data.seqs
  seq_ids = rng.choice(s.num_sequences, size=st.batch_size, p=s.lengths / s.lengths.sum())
  max_start = np.maximum(s.lengths[seq_ids] - st.window, 0)
  offsets = (rng.random(st.batch_size) * (max_start + 1)).astype(np.int64)
  idx, mask = seq_lib.window_indices(s.starts, s.lengths, seq_ids, offsets, st.window)
  batch = data.windows(idx, mask, seq_ids)
  batch["clip_id"] = np.arange(st.batch_size, dtype=np.int32)
  per = st.batch_size // num_processes
  sl = slice(process_index * per, (process_index + 1) * per)
  return {k: v[sl] for k, v in batch.items()}


def train_batches(data, config, name: str, steps):
  """Yields the host batches of `steps` (a range) in order. Real frames (FrameData) are
  decoded config.data.frames_prefetch batches ahead of the step by background threads
  (h36m_frames.Prefetcher); the rendered source's index batches are built on demand."""
  make = lambda step: train_windows(data, config, name, step, jax.process_count(),
                                    jax.process_index())
  from posemachine.data import h36m_frames  # pylint: disable=g-import-not-at-top
  if not isinstance(data, h36m_frames.FrameData):
    yield from map(make, steps)
    return
  t0 = time.perf_counter()
  with h36m_frames.Prefetcher(make, steps, depth=config.data.frames_prefetch,
                              name="frames") as p:
    try:
      for _, batch in p:
        yield batch
    finally:
      logging.info("Stage '%s' input: %d batches of frames; the loop waited %.2f s of %.2f s "
                   "for them.", name, p.count, p.wait_s, time.perf_counter() - t0)


def render_inputs(batch, key, render_config, appearance):
  """Renders a batch on the device. Returns (images (B, T, S, S, 3), joints_2d (B, T, K, 2)).

  key: one PRNG key; clip b renders with fold_in(key, batch['clip_id'][b]) so that a
  clip's frames do not depend on how the batch is split over devices.
  """
  if "images" in batch:  # real frames, cropped by the host loader (data/h36m_frames.py).
    return batch["images"], batch["joints_2d"]
  r = render_config
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(batch["clip_id"])
  out = render.render_batch(batch["points"], _camera(batch), appearance, keys, r.size,
                            r.margin, r.jitter if "jitter" in r else 0.0)
  return out["images"], out["joints_2d"]


# ------------------------------------------------------------------------------ losses


def encoder_terms(enc, joints_2d, weight, config):
  """Heatmap L2 over all stages + soft-argmax 2D distance (crop units). enc from the encoder
  on N frames; joints_2d (N, K, 2); weight (N,)."""
  h = enc["prob"].shape[-3]
  target = encoder_lib.gaussian_heatmaps(joints_2d, h, config.render.heatmap_sigma)
  hm = sum(encoder_lib.heatmap_loss(enc["prob"][:, s], target, weight)
           for s in range(enc["prob"].shape[1])) / enc["prob"].shape[1]
  dist = jnp.sqrt(((enc["joints_2d"] - joints_2d) ** 2).sum(-1) + 1e-12).mean(-1)
  coord = (dist * weight).sum() / jnp.maximum(weight.sum(), 1.0)
  return {"heatmap": hm, "coord_2d": coord}


def stage_loss(params, batch, key, *, model, config, name):
  """The loss of training stage `name` on a rendered batch. Returns (loss, terms)."""
  k_render, k_mask = jax.random.split(key)
  r = config.render
  images, joints_2d = render_inputs(batch, k_render, r, render.sample_appearance(
      jax.random.fold_in(k_render, 1), batch["mask"].shape[0]))
  b, t = images.shape[:2]
  st = config.stages
  if name == "encoder":
    enc = model.apply({"params": params}, images.reshape(b * t, *images.shape[2:]),
                      method=image_machine.ImagePoseMachine.encode)
    terms = encoder_terms(enc, joints_2d.reshape(b * t, -1, 2), batch["mask"].reshape(-1),
                          config)
    return st.w_heatmap * terms["heatmap"] + st.w_coord * terms["coord_2d"], terms
  keep = None
  if name == "joint_masking":
    keep = jax.random.bernoulli(k_mask, 1.0 - st.joint_mask_prob, joints_2d.shape[:-1])
  out = model.apply({"params": params}, images, batch["mask"], joint_keep=keep,
                    freeze=FREEZE[name])
  lift = {"pose_3d": batch["pose_3d"], "mask": batch["mask"], "has_3d": batch["has_3d"],
          # The projector's 2D target: the true 2D where labelled, else the sub-network's.
          "pose_2d": jax.lax.stop_gradient(out["pose_2d"]), "pose_2d_target": joints_2d}
  lc = config.loss
  w3 = batch["mask"] * batch["has_3d"][:, None]
  if name == "transformer":  # the intermediate pose only (the projector is not trained yet).
    terms = {"3d_intermediate": losses.pose_error(out["pose_3d_intermediate"], lift["pose_3d"],
                                                  w3, lc.distance),
             "bone_3d": losses.bone_error(out["pose_3d_intermediate"], lift["pose_3d"], w3,
                                          lc.distance)}
    return lc.w_3d_intermediate * terms["3d_intermediate"] + lc.w_bone_3d * terms["bone_3d"], terms
  loss, terms = losses.total_loss(out, lift, lc)
  if name in ("end_to_end", "joint_masking"):
    enc = {"prob": out["heatmaps"].reshape(b * t, *out["heatmaps"].shape[2:]),
           "joints_2d": out["pose_2d"].reshape(b * t, -1, 2)}
    e = encoder_terms(enc, joints_2d.reshape(b * t, -1, 2), batch["mask"].reshape(-1), config)
    terms.update(e)
    loss = loss + st.w_heatmap * e["heatmap"] + st.w_coord * e["coord_2d"]
  return loss, terms


def make_stage_step(model, tx, config, name: str, mesh, state_sharding):
  """jit((state, batch) -> (state, metrics)) for one stage; the state is donated."""
  def step_fn(state, batch):
    key = jax.random.fold_in(jax.random.key(config.seed), state.step)
    loss_fn = functools.partial(stage_loss, model=model, config=config, name=name)
    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, key)
    grad_norm = optax.tree.norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jnp.where(ok, new, old)
    state = train.TrainState(step=state.step + 1,
                             params=jax.tree.map(keep, params, state.params),
                             opt_state=jax.tree.map(keep, opt_state, state.opt_state))
    return state, {"loss": loss, "grad_norm": grad_norm, **terms,
                   train.SKIPPED: (~ok).astype(jnp.float32)}
  replicated = NamedSharding(mesh, P())
  return jax.jit(step_fn, in_shardings=(state_sharding, NamedSharding(mesh, P("data"))),
                 out_shardings=(state_sharding, replicated), donate_argnums=0)


# -------------------------------------------------------------------------- evaluation


def appearance_for(config, split: str, subject_index):
  """Fixed per-subject appearances of a split ({'parts': (B, 3, 3), 'accent': (B, 3)})."""
  key = jax.random.fold_in(jax.random.key(config.render.seed), _SPLIT_CODE[split])
  table = render.sample_appearance(key, 64)
  return jax.tree.map(lambda x: x[subject_index % 64], table)


def make_eval_step(model, config, split: str, mesh):
  """jit((params, batch) -> (pose_3d (B, T, K, 3), per-frame errors (B, T), images, 2D)).

  Renders the windows without jitter (clip keys from the window ids), runs the machine and
  scores: 3D metrics as the keypoint evaluator, 2D error in crop pixels and PCK (% of joints
  within 0.1 of the crop side).
  """
  r = ml_collections.ConfigDict(config.render.to_dict())
  r.jitter = 0.0
  size = r.size

  def step(params, batch):
    key = jax.random.fold_in(jax.random.key(r.seed), 1000 + _SPLIT_CODE[split])
    images, joints_2d = render_inputs(batch, key, r, appearance_for(config, split,
                                                                    batch["subject"]))
    out = model.apply({"params": params}, images, batch["mask"])
    errs = jax.vmap(evaluate.per_example_errors)(out["pose_3d"], batch["pose_3d"],
                                                 out["proj_2d"], joints_2d, batch["mask"])
    px = jnp.sqrt(((out["pose_2d"] - joints_2d) ** 2).sum(-1)) * (size / 2)   # (B, T, K)
    errs["error_2d_px"] = px.mean(-1) * batch["mask"]
    errs["pck_2d"] = (px < 0.1 * size).mean(-1) * 100.0 * batch["mask"]
    return out["pose_3d"], errs, images, out["pose_2d"], joints_2d

  data = NamedSharding(mesh, P("data"))
  return jax.jit(step, in_shardings=(NamedSharding(mesh, P()), data), out_shardings=data)


def run_evaluator(eval_step, params, data: ClipData, window: int, batch_size: int,
                  max_windows: int | None = None, keep_frames: int = 0):
  """Tiles every test sequence with windows (padded, masked) and evaluates them.

  Returns (pred (N, K, 3), errors dict name -> (N,), NaN where not evaluated, sample):
  sample holds images / pred_2d / true_2d / frame of `keep_frames` frames spread over the set.
  """
  seqs = data.seqs
  seq_ids, offsets = seq_lib.tile_windows(seqs, window)
  if max_windows is not None and len(seq_ids) > max_windows:
    pick = np.sort(np.random.default_rng(0).choice(len(seq_ids), max_windows, replace=False))
    seq_ids, offsets = seq_ids[pick], offsets[pick]
  n_win = len(seq_ids)
  n_pad = -n_win % batch_size
  seq_all = np.concatenate([seq_ids, np.zeros(n_pad, np.int64)])
  off_all = np.concatenate([offsets, np.zeros(n_pad, np.int64)])
  idx, mask = seq_lib.window_indices(seqs.starts, seqs.lengths, seq_all, off_all, window)
  mask[n_win:] = False
  pred = np.full(seqs.pose_3d.shape, np.nan, np.float32)
  errs = {}
  want = set(np.linspace(0, n_win - 1, keep_frames).astype(int)) if keep_frames else set()
  sample = {"images": [], "pred_2d": [], "true_2d": [], "frame": []}
  for b0 in range(0, len(idx), batch_size):
    sl = slice(b0, b0 + batch_size)
    batch = data.windows(idx[sl], mask[sl], seq_all[sl])
    batch["clip_id"] = np.arange(b0, b0 + batch_size, dtype=np.int32)
    p, e, images, p2, t2 = eval_step(params, batch)
    p, e = jax.device_get((p, e))
    m = e["mask"] > 0
    frames = idx[sl]
    pred[frames[m]] = p[m]
    for k, v in e.items():
      if k in ("mask", "mask_vel"):
        continue
      sel = e["mask_vel"] > 0 if k.startswith("mpjve") else m
      errs.setdefault(k, np.full((seqs.num_frames,), np.nan, np.float32))[frames[sel]] = v[sel]
    for w in sorted(want & set(range(b0, b0 + batch_size))):
      j = w - b0
      sample["images"].append(np.asarray(images[j, 0]))
      sample["pred_2d"].append(np.asarray(p2[j, 0]))
      sample["true_2d"].append(np.asarray(t2[j, 0]))
      sample["frame"].append(int(frames[j, 0]))
  return pred, errs, sample


def _abstract_state(model, config, name, mesh):
  def init(rng):
    x = jnp.zeros((1, 1, config.render.size, config.render.size, 3), jnp.float32)
    params = model.init(rng, x)["params"]
    tx = make_stage_optimizer(config, name, params)
    return train.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                            opt_state=tx.init(params))
  return init


def evaluate_split(config, params, model, mesh, data: ClipData, train_seqs, out_dir=None,
                   split="test", stage_results=None, checkpoint_step=None,
                   eval_step=None) -> dict:
  """Evaluates params on data; writes eval.json, tables and plots into out_dir if given."""
  eval_step = eval_step or make_eval_step(model, config, split, mesh)
  pred, errs, sample = run_evaluator(eval_step, params, data, config.data.window,
                                     config.eval.batch_size,
                                     keep_frames=config.eval.num_plot_frames * 2 if out_dir else 0)
  results = evaluate.summarize(data.seqs, errs)
  results.update(split=split, source=config.data.source, input="images",
                 baseline_mean_pose=evaluate.mean_pose_baseline(train_seqs, data.seqs),
                 pck_threshold=f"0.1 x crop side = {0.1 * config.render.size:.1f} px")
  if stage_results:
    results["per_stage"] = stage_results
  if checkpoint_step is not None:
    results["checkpoint_step"] = checkpoint_step
  if out_dir and jax.process_index() == 0:
    paths = evaluate.write_report(out_dir, results, data.seqs, pred,
                                  config.eval.num_plot_frames)
    from posemachine import plots  # pylint: disable=g-import-not-at-top
    p = os.path.join(out_dir, "image_predictions.png")
    idx = np.asarray(sample["frame"], np.int64)
    plots.plot_image_predictions(np.stack(sample["images"]), np.stack(sample["pred_2d"]),
                                 np.stack(sample["true_2d"]), pred[idx], data.seqs.pose_3d[idx],
                                 p)
    paths.append(p)
    o = results["overall"]
    logging.info("%s split: PCK@0.1 %.1f%%, 2D error %.2f px, MPJPE %.1f mm, PA-MPJPE %.1f mm "
                 "(mean-pose baseline MPJPE %.1f mm). Wrote %s", split, o["pck_2d"],
                 o["error_2d_px"], o["mpjpe"], o["pa_mpjpe"],
                 results["baseline_mean_pose"]["mpjpe"] or float("nan"), ", ".join(paths))
  return results


# ----------------------------------------------------------------------------- the loop


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the staged schedule (resuming from the latest checkpoint), then evaluates.

  Writes the same files as train.train_and_evaluate plus image_predictions.png, and
  eval.json's 'per_stage' (test metrics after each of stages 2-5 when
  the stages named in stages.eval_after).
  """
  config_defaults.validate(config)
  plan = stage_plan(config)
  os.makedirs(workdir, exist_ok=True)
  checkpoints.check_workdir_config(workdir, config)
  mesh = train.create_mesh(config.train.num_devices, config.mesh.model)
  n_data = mesh.shape["data"]
  for name, _, _ in plan:
    if config.stages[name].batch_size % n_data:
      raise errors.ConfigError(f"stages.{name}.batch_size={config.stages[name].batch_size} "
                               f"must be divisible by the 'data' mesh axis ({n_data}).")
  if config.eval.batch_size % n_data:
    raise errors.ConfigError(f"eval.batch_size={config.eval.batch_size} must be divisible by "
                             f"the 'data' mesh axis ({n_data}).")
  is_main = jax.process_index() == 0
  t0 = time.time()
  train_seqs = labels.apply_labelled_fraction(
      pipeline.load_split(config, "train"), config.data.labelled_fraction,
      config.data.labelled_by, config.seed)
  train_data = split_data(config, train_seqs)
  val_data = split_data(config, pipeline.load_split(config, "val"))
  test_data = split_data(config, pipeline.load_split(config, config.eval.split))
  logging.info("Data: %d train frames in %d sequences, %d val, %d %s frames (%.1f s); frames "
               "rendered on the device at %dx%d.", train_seqs.num_frames,
               train_seqs.num_sequences, val_data.seqs.num_frames, test_data.seqs.num_frames,
               config.eval.split, time.time() - t0, config.render.size, config.render.size)

  model = image_machine.from_config(config.model, config.data.num_joints)
  total = plan[-1][2]
  manager = checkpoints.make_manager(workdir, config.train.checkpoint_keep)
  with checkpoints.finishing(manager):
    latest = manager.latest_step() or 0
    k = stage_of(plan, latest)
    init_fn = _abstract_state(model, config, plan[k][0], mesh)
    state_sharding = distributed.state_shardings(jax.eval_shape(init_fn, jax.random.key(0)), mesh)
    state = jax.jit(init_fn, out_shardings=state_sharding)(jax.random.key(config.seed))
    logging.info("Model: %s parameters; stages %s (%d steps).",
                 f"{sum(x.size for x in jax.tree.leaves(state.params)):,}",
                 ", ".join(f"{n} {a}-{b}" for n, a, b in plan), total)
    restored = checkpoints.restore(manager, state)
    if restored is not None:
      state = restored
      logging.info("Resumed from checkpoint step %d (stage %s).", int(state.step),
                   plan[stage_of(plan, int(state.step))][0])
    stage_results = _load_stage_results(workdir)

    writer = metric_writers.MetricWriter(workdir, enabled=is_main)
    progress = metric_writers.Progress(total, start_step=int(state.step), every_seconds=10.0,
                                       enabled=is_main)
    preemption = distributed.PreemptionWatcher()
    log_every = config.train.log_every
    val_step = make_eval_step(model, config, "val", mesh)
    test_step = make_eval_step(model, config, config.eval.split, mesh)
    for i, (name, first, last) in enumerate(plan):
      step0 = int(state.step)
      if step0 >= last:
        continue
      tx = make_stage_optimizer(config, name, state.params)
      if step0 == first - 1:  # a fresh stage: a new optimiser over the stage's groups.
        state = state.replace(opt_state=tx.init(state.params))
      state_sharding = distributed.state_shardings(jax.eval_shape(lambda s: s, state), mesh)
      state = jax.device_put(state, state_sharding)
      logging.info("Stage %d/%d '%s': steps %d-%d (lr %g, batch %d x %d frames).", i + 1,
                   len(plan), name, max(first, step0 + 1), last, config.stages[name].learning_rate,
                   config.stages[name].batch_size, config.stages[name].window)
      step_fn = make_stage_step(model, tx, config, name, mesh, state_sharding)
      pending = []
      steps = range(max(first, step0 + 1), last + 1)
      batches = train_batches(train_data, config, name, steps)  # real frames: decoded ahead.
      for step, batch in zip(steps, batches):
        state, m = step_fn(state, train.shard_batch(batch, mesh))
        pending.append((step, m))
        is_log = step % log_every == 0 or step == last
        is_ckpt = step % config.train.eval_every == 0 or step == last
        stopping = step < total and preemption.should_stop(step)
        if is_log or is_ckpt or stopping:  # never log or checkpoint past a non-finite step.
          host = jax.device_get(pending)
          if config.train.nonfinite == "stop" and any(h[train.SKIPPED] for _, h in host):
            bad = next(s for s, h in host if h[train.SKIPPED])
            raise errors.NonFiniteError(f"Non-finite loss or gradient at step {bad} (stage "
                                        f"'{name}'); the state was not updated by that step.")
        if is_log:
          pending = []
          means = {k: float(np.mean([h[k] for _, h in host])) for k in host[0][1]}
          writer.write_scalars(step, means, prefix=f"train_{name}")
          progress.update(step, loss=means["loss"])
        if is_ckpt:
          _, errs, _ = run_evaluator(val_step, state.params, val_data, config.data.window,
                                     config.eval.batch_size, config.eval.val_max_windows)
          val = {k: float(np.nanmean(v)) for k, v in errs.items()}
          writer.write_scalars(step, val, prefix="val")
          logging.info("step %d (%s): val PCK %.1f%%, 2D %.2f px, MPJPE %.1f mm", step, name,
                       val["pck_2d"], val["error_2d_px"], val["mpjpe"])
          checkpoints.save(manager, step, state, {checkpoints.BEST_METRIC: val["mpjpe"]})
        if stopping:
          batches.close()
          return train.stop_preempted(manager, writer, preemption, step, total, state)
      batches.close()
      if (name in config.stages.eval_after.split(",") and name not in stage_results
          and i < len(plan) - 1):
        res = evaluate_split(config, state.params, model, mesh, test_data, train_seqs,
                             split=config.eval.split, eval_step=test_step)
        stage_results[name] = {k: res["overall"][k] for k in ("pck_2d", "error_2d_px", "mpjpe",
                                                               "pa_mpjpe")}
        stage_results[name]["step"] = last
        logging.info("After stage '%s': %s PCK %.1f%%, MPJPE %.1f mm, PA-MPJPE %.1f mm.", name,
                     config.eval.split, stage_results[name]["pck_2d"],
                     stage_results[name]["mpjpe"], stage_results[name]["pa_mpjpe"])
        if is_main:
          io_utils.atomic_write_json(os.path.join(workdir, "stage_results.json"), stage_results)
    preemption.close()
    progress.done()
    checkpoints.wait(manager)
    writer.close()
  results = evaluate_split(config, state.params, model, mesh, test_data, train_seqs,
                           out_dir=workdir, split=config.eval.split,
                           checkpoint_step=int(state.step), eval_step=test_step)
  last_name = plan[-1][0]
  stage_results[last_name] = {k: results["overall"][k] for k in ("pck_2d", "error_2d_px",
                                                                   "mpjpe", "pa_mpjpe")}
  stage_results[last_name]["step"] = total
  results["per_stage"] = stage_results
  if "projector" in stage_results and last_name in ("end_to_end", "joint_masking"):
    results["end_to_end_gain_mm"] = stage_results["projector"]["mpjpe"] - results["overall"]["mpjpe"]
  results["checkpoint_step"] = int(state.step)
  if is_main:
    io_utils.atomic_write_json(os.path.join(workdir, "stage_results.json"), stage_results)
    _merge_into_eval_json(os.path.join(workdir, "eval.json"), results)
  return results


def _load_stage_results(workdir) -> dict:
  import json  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "stage_results.json")
  if not os.path.exists(path):
    return {}
  try:
    with open(path) as f:
      out = json.load(f)
    return out if isinstance(out, dict) else {}
  except (OSError, ValueError):
    return {}


def _merge_into_eval_json(path, results):
  import json  # pylint: disable=g-import-not-at-top
  with open(path) as f:
    saved = json.load(f)
  for k in ("per_stage", "end_to_end_gain_mm", "checkpoint_step"):
    if k in results:
      saved[k] = results[k]
  io_utils.atomic_write_json(path, saved)


def evaluate_workdir(config, workdir, out_dir=None) -> dict:
  """Evaluates the latest checkpoint of an image-mode workdir on config.eval.split."""
  config_defaults.validate(config)
  plan = stage_plan(config)
  checkpoints.check_workdir_config(workdir, config, record=False)
  mesh = train.create_mesh(config.train.num_devices, config.mesh.model)
  model = image_machine.from_config(config.model, config.data.num_joints)
  manager = checkpoints.make_manager(workdir, config.train.checkpoint_keep)
  latest = manager.latest_step()
  if latest is None:
    raise errors.PoseMachineError(f"No checkpoint in {os.path.join(workdir, 'checkpoints')}; "
                                  "train first (--mode=train).")
  init_fn = _abstract_state(model, config, plan[stage_of(plan, latest)][0], mesh)
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, P())),
      jax.eval_shape(init_fn, jax.random.key(0)))
  state = checkpoints.restore(manager, abstract)
  manager.close()
  train_seqs = labels.apply_labelled_fraction(
      pipeline.load_split(config, "train"), config.data.labelled_fraction,
      config.data.labelled_by, config.seed)
  test_data = split_data(config, pipeline.load_split(config, config.eval.split))
  results = evaluate_split(config, state.params, model, mesh, test_data, train_seqs,
                           out_dir=out_dir or workdir, split=config.eval.split,
                           checkpoint_step=int(state.step))
  return results
