"""Training: train state, a jitted data-parallel step, the loop, checkpoints, logging.

The train state is donated and replicated (or, with config.mesh.model > 1, its wide layers
split over the 'model' axis: distributed.PARAM_RULES); the batch is sharded over the 'data'
axis of a `Mesh` of the devices (`NamedSharding`), each process feeding its own rows. The
step's batch comes from (seed, step) alone (see data.pipeline), so a resumed run continues
with exactly the data it would have seen. On SIGTERM the loop saves a checkpoint and stops.
"""

from __future__ import annotations

import functools
import os
import time

from absl import logging
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from posemachine import checkpoints, config_defaults, distributed, errors, evaluate, losses
from posemachine import metric_writers
from posemachine import refine as refine_lib
from posemachine.data import device_sampler, labels, pipeline, views
from posemachine.models import machine


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: flax.core.FrozenDict
  opt_state: optax.OptState


def create_mesh(num_devices: int = -1, model: int = 1) -> Mesh:
  """('data', 'model') mesh over all devices (or the first num_devices); 'model' of size model."""
  return distributed.create_mesh(num_devices, model)


def make_optimizer(train_config) -> optax.GradientTransformation:
  t = train_config
  if t.schedule == "cosine":
    lr = optax.warmup_cosine_decay_schedule(
        0.0, t.learning_rate, min(t.warmup_steps, t.num_steps - 1), t.num_steps,
        end_value=t.learning_rate * t.end_lr_fraction)
  else:
    lr = optax.join_schedules([optax.linear_schedule(0.0, t.learning_rate, t.warmup_steps),
                               optax.constant_schedule(t.learning_rate)], [t.warmup_steps])
  return optax.chain(clip_by_global_norm(t.clip_norm), optax.adam(lr, b1=t.b1, b2=t.b2))


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformationExtraArgs:
  """optax.clip_by_global_norm (same state, same result) that takes the norm the train step
  has already computed (`update(..., grad_norm=norm)`), and scales by one scalar factor:
  XLA then folds the scaling into Adam's moment updates instead of making one more pass
  over every gradient and writing a clipped copy (two of Adam's ~13 passes over the
  parameters' size). Without `grad_norm` it computes the norm itself.
  """
  def init(params):
    del params
    return optax.EmptyState()

  def update(updates, state, params=None, *, grad_norm=None, **extra):
    del params, extra
    norm = optax.tree.norm(updates) if grad_norm is None else grad_norm
    scale = jnp.where(norm < max_norm, 1.0, max_norm / norm)
    return jax.tree.map(lambda g: g * scale.astype(g.dtype), updates), state
  return optax.GradientTransformationExtraArgs(init, update)


def init_state(model: nn.Module, tx, rng, num_joints: int, window: int) -> TrainState:
  x = jnp.zeros((1, window, num_joints, 2), jnp.float32)
  params = model.init(rng, x)["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


MAX_IN_FLIGHT = 4  # training steps dispatched ahead of the device at most.
_CYCLE_STREAM = 0x726F74  # PRNG stream of loss.w_rotation_cycle's angles ('rot').
# Step metrics that are flags, summed (not averaged) over a log interval.
SKIPPED = "skipped"
_GRAD_FLAGS = "_nonfinite_grads"  # per top-level param group; not written.


def train_step(state: TrainState, batch, *, model, tx, loss_config, seed: int = 0):
  """One optimisation step on a global batch. Returns (new state, metrics dict).

  `seed` and the step number draw the rotations of loss.w_rotation_cycle (if on).

  A non-finite loss or gradient norm leaves params and optimiser state unchanged (the step
  counter still advances) and sets metrics['skipped'] = 1; metrics['_nonfinite_grads']
  flags each top-level param group (sorted names) whose gradient has a NaN/Inf (or a
  squared norm overflowing float32). The loop decides whether to stop (train.nonfinite);
  nothing here syncs with the host.
  """
  def loss_fn(params):
    out = model.apply({"params": params}, batch["pose_2d"], batch["confidence"], batch["mask"])
    loss, terms = losses.total_loss(out, batch, loss_config)
    if "view_pose_2d" in batch:  # the same windows seen by a second camera (data/views.py)
      view = model.apply({"params": params}, batch["view_pose_2d"], batch["view_confidence"],
                         batch["mask"])
      terms["multiview"] = losses.multiview_error(
          out["pose_3d"], view["pose_3d"], batch["view_rotation"], batch["mask"],
          loss_config.distance)
      loss = loss + loss_config.w_multiview * terms["multiview"]
    if loss_config.w_rotation_cycle:  # a virtual orbiting camera (losses.py)
      pose = out["pose_3d"]
      limit = jnp.deg2rad(loss_config.rotation_cycle_max_deg)
      # A stream of its own: fold_in(key(seed), step) is the device sampler's step key.
      key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _CYCLE_STREAM),
                               state.step)
      angle = jax.random.uniform(key, pose.shape[:1], minval=-limit, maxval=limit)
      turned = losses.rotate_about_vertical(pose, angle)
      view_2d = jax.lax.stop_gradient(losses.virtual_view_2d(pose, batch["pose_2d"], turned))
      view = model.apply({"params": params}, view_2d, batch["confidence"], batch["mask"])
      terms["rotation_cycle"] = losses.pose_error(view["pose_3d"], turned, batch["mask"],
                                                  loss_config.distance)
      loss = loss + loss_config.w_rotation_cycle * terms["rotation_cycle"]
    return loss, terms
  (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  # Squared norm per top-level group: one reduction per leaf gives the global norm and,
  # for free, which groups hold a NaN/Inf (or overflow).
  group_sq = jnp.stack([sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads[k]))
                        for k in sorted(grads)])
  grad_norm = jnp.sqrt(jnp.sum(group_sq))
  bad_grads = ~jnp.isfinite(group_sq)
  ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

  # A cond, not per-leaf selects: the update then writes the donated buffers in place
  # (selects against the old values made XLA copy all Adam moments first; ~1 % of a step).
  def apply(_):
    updates, opt_state = tx.update(grads, state.opt_state, state.params,
                                   grad_norm=grad_norm)
    return optax.apply_updates(state.params, updates), opt_state
  params, opt_state = jax.lax.cond(ok, apply, lambda _: (state.params, state.opt_state), None)
  out_metrics = {"loss": loss, "grad_norm": grad_norm, **terms,
                 SKIPPED: (~ok).astype(jnp.float32), _GRAD_FLAGS: bad_grads}
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state), out_metrics


def check_nonfinite(pending, group_names) -> None:
  """Raises NonFiniteError for the first skipped step of pending [(step, host metrics)]."""
  for step, m in pending:
    if not m[SKIPPED]:
      continue
    bad = [k for k, v in m.items() if not k.startswith("_") and k != SKIPPED
           and not np.isfinite(v)]
    groups = [g for g, f in zip(group_names, np.ravel(m[_GRAD_FLAGS])) if f]
    what = []
    if "loss" in bad:
      terms = [k for k in bad if k not in ("loss", "grad_norm")]
      what.append(f"the loss ({m['loss']}" + (f"; non-finite terms: {', '.join(terms)})"
                                              if terms else ")"))
    if groups:
      what.append(f"the gradients of param group(s) {', '.join(groups)}")
    elif "grad_norm" in bad:
      what.append(f"the global gradient norm ({m['grad_norm']}; overflow)")
    if not what:  # the step was skipped, so something was non-finite.
      what.append(f"the loss terms {', '.join(bad) or '(unknown)'}")
    raise errors.NonFiniteError(
        f"Non-finite values (NaN/Inf) at training step {step}: {'; '.join(what)}. The state "
        "was not updated by that step. Lower train.learning_rate or train.clip_norm, check the "
        "data, or set train.nonfinite='skip' to skip such steps.")


def _log_means(pending) -> dict:
  """Means over the steps of pending that were not skipped, and the count of skipped."""
  used = [m for _, m in pending if not m[SKIPPED]]
  keys = [k for k in pending[0][1] if not k.startswith("_") and k != SKIPPED]
  means = {k: float(np.mean([m[k] for m in used])) for k in keys} if used else {}
  means[SKIPPED] = float(sum(m[SKIPPED] for _, m in pending))
  return means


def make_train_step(model, tx, loss_config, mesh: Mesh, state_sharding=None, seed: int = 0):
  """jit-compiled train_step with the state donated (replicated by default), the batch sharded."""
  replicated = NamedSharding(mesh, P())
  state_sharding = state_sharding or replicated
  data = NamedSharding(mesh, P("data"))
  fn = functools.partial(train_step, model=model, tx=tx, loss_config=loss_config, seed=seed)
  return jax.jit(fn, in_shardings=(state_sharding, data),
                 out_shardings=(state_sharding, replicated), donate_argnums=0)


def shard_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Host-local NumPy batch -> global jax.Arrays sharded over 'data' (multi-host safe)."""
  data = NamedSharding(mesh, P("data"))
  return {k: jax.make_array_from_process_local_data(data, v) for k, v in local_batch.items()}


def _check_batch_divisible(config, mesh):
  n = mesh.shape["data"]
  for name, b in (("train.batch_size", config.train.batch_size),
                  ("eval.batch_size", config.eval.batch_size)):
    if b % n:
      raise ValueError(f"{name}={b} must be divisible by the size of the 'data' mesh axis "
                       f"({n} = devices / mesh.model).")


@functools.lru_cache
def _replicator(mesh):
  return jax.jit(lambda p: p, out_shardings=NamedSharding(mesh, P()))


def _replicated_params(params, mesh):
  """Params as the evaluator takes them: replicated (gathers 'model'-split layers)."""
  return params if mesh.shape["model"] == 1 else _replicator(mesh)(params)


def _make_step_runner(config, train_seqs, model, tx, mesh, state_sharding):
  """(state, step) -> (state, metrics): the batch sampled on the devices inside the step
  (data.device_sampling) or on the host and fed per step (also when each process holds
  only its own shard of the training set: data.format='tfds' with several processes)."""
  if config.data.device_sampling and not pipeline.process_sharded(config):
    t0 = time.time()
    data = device_sampler.to_device(train_seqs, mesh)
    logging.info("Training set on the devices: %.1f MB per device (%.1f s); windows are "
                 "sampled inside the step.", device_sampler.nbytes(train_seqs) / 1e6,
                 time.time() - t0)
    fn = functools.partial(train_step, model=model, tx=tx, loss_config=config.loss,
                           seed=config.seed)
    sampled = device_sampler.make_train_step(fn, config, mesh, state_sharding)
    return lambda state, step: sampled(state, data)
  step_fn = make_train_step(model, tx, config.loss, mesh, state_sharding, config.seed)
  return lambda state, step: step_fn(state, shard_batch(pipeline.train_batch(
      train_seqs, config, step, jax.process_count(), jax.process_index()), mesh))


def stop_preempted(manager, writer, preemption, step: int, total: int, state) -> dict:
  """After a SIGTERM: saves `step` (unless saved), waits, closes, and says how to resume."""
  if manager.latest_step() != step:
    checkpoints.save(manager, step, state)
  checkpoints.wait(manager)
  writer.close()
  manager.close()
  preemption.close()
  logging.warning("Preempted (SIGTERM): stopped after step %d of %d and saved checkpoint %d in "
                  "%s. Rerun the same command to resume.", step, total, step, manager.directory)
  return {"preempted_at_step": step}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (resuming from the latest checkpoint in workdir), then evaluates.

  Writes: workdir/checkpoints/, config.json, metrics.jsonl, tensorboard/, eval.json, PNG plots.
  Returns the evaluation results dict, or {"preempted_at_step": step} when a SIGTERM stopped
  training (after saving a checkpoint of that step; rerun to resume).
  """
  config_defaults.validate(config)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise errors.PoseMachineError(f"--workdir={workdir} is a file, not a directory.")
  if config.model.input == "images":  # the full machine from pixels: staged training.
    from posemachine import image_train  # pylint: disable=g-import-not-at-top
    return image_train.train_and_evaluate(config, workdir)
  os.makedirs(workdir, exist_ok=True)
  checkpoints.check_workdir_config(workdir, config)
  mesh = create_mesh(config.train.num_devices, config.mesh.model)
  _check_batch_divisible(config, mesh)
  t = config.train
  is_main = jax.process_index() == 0

  t0 = time.time()
  train_seqs = labels.apply_labelled_fraction(
      pipeline.load_split(config, "train"), config.data.labelled_fraction,
      config.data.labelled_by, config.seed)
  if not config.data.use_unlabelled:
    train_seqs = train_seqs.select(train_seqs.has_3d)
  if config.loss.w_multiview:
    train_seqs = views.attach(train_seqs)
  val_seqs = pipeline.load_split(config, "val")
  logging.info("Data: %d train frames in %d sequences (%.0f%% with 3D labels), %d val frames "
               "(%.1f s).", train_seqs.num_frames, train_seqs.num_sequences,
               100 * np.repeat(train_seqs.has_3d, train_seqs.lengths).mean(),
               val_seqs.num_frames, time.time() - t0)

  model = machine.from_config(config.model, config.data.num_joints)
  tx = make_optimizer(t)
  init_fn = functools.partial(init_state, model, tx, num_joints=config.data.num_joints,
                              window=config.data.window)
  state_sharding = distributed.state_shardings(
      jax.eval_shape(init_fn, jax.random.key(config.seed)), mesh)
  state = jax.jit(init_fn, out_shardings=state_sharding)(jax.random.key(config.seed))
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info("Model: %s parameters on %d device(s).", f"{n_params:,}", mesh.devices.size)

  manager = checkpoints.make_manager(workdir, t.checkpoint_keep)
  with checkpoints.finishing(manager):
    restored = checkpoints.restore(manager, state)
    if restored is not None:
      state = restored
      logging.info("Resumed from checkpoint step %d.", int(state.step))
    start = int(state.step)

    run_step = _make_step_runner(config, train_seqs, model, tx, mesh, state_sharding)
    eval_step = distributed.gather_outputs(evaluate.make_eval_step(model, mesh))
    writer = metric_writers.MetricWriter(workdir, enabled=is_main)
    progress = metric_writers.Progress(t.num_steps, start_step=start, every_seconds=10.0,
                                       enabled=is_main)
    pending = []  # (step, device metrics) since the last log, fetched only at log time.
    group_names = sorted(state.params)
    skipped_total = 0
    preemption = distributed.PreemptionWatcher()  # SIGTERM: save and stop (see below).
    throttle = jax.default_backend() == "cpu" and mesh.devices.size > 1
    for step in range(start + 1, t.num_steps + 1):
      state, m = run_step(state, step)
      pending.append((step, m))
      if throttle and len(pending) > MAX_IN_FLIGHT:
        # Bound the steps queued ahead of the devices: waits on an older step only (they
        # stay busy). Unbounded queues of device-sampled steps (no host work between them)
        # deadlocked XLA's CPU all-reduce rendezvous with several (fake) CPU devices; other
        # platforms run unthrottled (no host sync between log points).
        jax.block_until_ready(pending[-MAX_IN_FLIGHT - 1][1]["loss"])
      is_eval = step % t.eval_every == 0 or step == t.num_steps
      if t.nonfinite == "stop" and is_eval:  # never checkpoint past a non-finite step.
        check_nonfinite(jax.device_get(pending), group_names)
      if step % t.log_every == 0 or step == t.num_steps:
        host = jax.device_get(pending)
        pending = []
        if t.nonfinite == "stop":
          check_nonfinite(host, group_names)
        means = _log_means(host)
        if means[SKIPPED]:
          skipped_total += int(means[SKIPPED])
          logging.warning("Skipped %d step(s) with a non-finite loss or gradient up to step %d "
                          "(%d in all; train.nonfinite='skip').", means[SKIPPED], step,
                          skipped_total)
        writer.write_scalars(step, means, prefix="train")
        if "loss" in means:
          progress.update(step, loss=means["loss"])
      if is_eval:
        _, errs = evaluate.run_evaluator(eval_step, _replicated_params(state.params, mesh),
                                         val_seqs, config.data.window, config.eval.batch_size,
                                         mesh, max_windows=config.eval.val_max_windows)
        val = {k: float(np.nanmean(v)) for k, v in errs.items()}
        writer.write_scalars(step, val, prefix="val")
        logging.info("step %d: val MPJPE %.1f mm, PA-MPJPE %.1f mm", step, val["mpjpe"],
                     val["pa_mpjpe"])
        checkpoints.save(manager, step, state, {checkpoints.BEST_METRIC: val["mpjpe"]})
      # Every process asks at every step (with several, they agree on the step to stop at).
      if step < t.num_steps and preemption.should_stop(step):
        host = jax.device_get(pending)
        if t.nonfinite == "stop":  # never checkpoint past a non-finite step.
          check_nonfinite(host, group_names)
        if host:
          writer.write_scalars(step, _log_means(host), prefix="train")
        return stop_preempted(manager, writer, preemption, step, t.num_steps, state)
    preemption.close()
    progress.done()
    checkpoints.wait(manager)
    writer.close()
    final = state.replace(params=_replicated_params(state.params, mesh))
    return evaluate_workdir(config, workdir, state=final, manager=manager, mesh=mesh,
                            train_seqs=train_seqs, eval_step=eval_step)


def load_state(config, workdir, mesh):
  """The latest checkpoint of workdir (replicated over mesh) and its manager (close it).
  Raises PoseMachineError when there is none."""
  model = machine.from_config(config.model, config.data.num_joints)
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise errors.PoseMachineError(f"No checkpoints in {os.path.join(workdir, 'checkpoints')}; "
                                  "train first (--mode=train).")
  checkpoints.check_workdir_config(workdir, config, record=False)
  manager = checkpoints.make_manager(workdir, config.train.checkpoint_keep)
  tx = make_optimizer(config.train)
  abstract = jax.eval_shape(functools.partial(
      init_state, model, tx, num_joints=config.data.num_joints, window=config.data.window),
      jax.random.key(0))
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, P())),
      abstract)
  state = checkpoints.restore(manager, abstract)
  if state is None:
    manager.close()
    raise errors.PoseMachineError(f"No checkpoint in {os.path.join(workdir, 'checkpoints')}; "
                                  "train first (--mode=train).")
  return state, manager


def evaluate_workdir(config, workdir, state=None, manager=None, mesh=None, train_seqs=None,
                     out_dir=None, eval_step=None):
  """Evaluates the latest checkpoint in workdir on config.eval.split.

  Writes eval.json and plots into out_dir (default: workdir; process 0) and returns the
  results. `eval_step`: the training loop's evaluator, reused when the correction is off.
  """
  config_defaults.validate(config)
  if config.model.input == "images":
    from posemachine import image_train  # pylint: disable=g-import-not-at-top
    return image_train.evaluate_workdir(config, workdir, out_dir=out_dir)
  mesh = mesh or create_mesh(config.train.num_devices, config.mesh.model)
  model = machine.from_config(config.model, config.data.num_joints)
  own_manager = manager is None
  if state is None:
    state, manager = load_state(config, workdir, mesh)
  split = config.eval.split
  test_seqs = pipeline.load_split(config, split)
  refine_lib.check_target(config.refine, test_seqs)
  if train_seqs is None:  # for the mean-pose baseline: the labelled training frames.
    train_seqs = labels.apply_labelled_fraction(
        pipeline.load_split(config, "train"), config.data.labelled_fraction,
        config.data.labelled_by, config.seed)
  if eval_step is None or config.refine.enabled:
    eval_step = distributed.gather_outputs(evaluate.make_eval_step(model, mesh, config.refine))
  pred, errs = evaluate.run_evaluator(eval_step, state.params, test_seqs, config.data.window,
                                      config.eval.batch_size, mesh)
  results = evaluate.summarize(test_seqs, errs)
  results.update(split=split, checkpoint_step=int(state.step), source=config.data.source,
                 baseline_mean_pose=evaluate.mean_pose_baseline(train_seqs, test_seqs))
  if jax.process_index() == 0:
    out_dir = out_dir or workdir
    os.makedirs(out_dir, exist_ok=True)
    paths = evaluate.write_report(out_dir, results, test_seqs, pred,
                                  config.eval.num_plot_frames)
    o = results["overall"]
    logging.info("%s split, step %d: MPJPE %.1f mm, PA-MPJPE %.1f mm, N-MPJPE %.1f mm, "
                 "MPJVE %.1f mm (mean-pose baseline MPJPE %.1f mm). Wrote %s",
                 split, results["checkpoint_step"], o["mpjpe"], o["pa_mpjpe"], o["n_mpjpe"],
                 o["mpjve"], results["baseline_mean_pose"]["mpjpe"] or float("nan"), ", ".join(paths))
  if own_manager:
    manager.close()
  return results
