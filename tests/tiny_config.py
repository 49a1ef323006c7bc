"""The tiny synthetic config the tests train with; also a config file for subprocesses:
python -m posemachine.main --config=tests/tiny_config.py --config.train.num_steps=...
"""

from posemachine import config_defaults

PATH = __file__


def get_config(**train_overrides):
  c = config_defaults.get_config()
  c.model.hidden = c.model.projector_hidden = 16
  s = c.data.synthetic
  s.num_subjects.train, s.num_subjects.val, s.num_subjects.test = 2, 1, 1
  s.sequences_per_action, s.frames_per_sequence, s.cameras_per_sequence = 1, 24, 1
  s.actions = ("walk", "squat")
  c.data.window = 8
  t = c.train
  t.num_steps, t.batch_size, t.log_every, t.eval_every, t.warmup_steps = 6, 8, 2, 3, 2
  for k, v in train_overrides.items():
    t[k] = v
  c.eval.batch_size, c.eval.num_plot_frames = 8, 2
  return c


def overrides(**train_overrides):
  """Command-line flags giving get_config(**train_overrides) from the config file."""
  return [f"--config.train.{k}={v}" for k, v in train_overrides.items()]


def restore_state(workdir, config=None):
  """The latest checkpoint of a workdir trained with this config (or `config`), on one
  device; None if it has none."""
  import jax  # pylint: disable=g-import-not-at-top
  from posemachine import checkpoints, train  # pylint: disable=g-import-not-at-top
  from posemachine.models import machine  # pylint: disable=g-import-not-at-top
  config = config or get_config()
  model = machine.from_config(config.model, config.data.num_joints)
  tx = train.make_optimizer(config.train)
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.eval_shape(
      lambda k: train.init_state(model, tx, k, config.data.num_joints, config.data.window),
      jax.random.key(1))
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one),
                          abstract)
  mgr = checkpoints.make_manager(workdir, 2)
  try:
    return checkpoints.restore(mgr, abstract)
  finally:
    mgr.close()
