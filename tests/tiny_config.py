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
  """The latest checkpoint of a workdir trained with this config (or `config`), on a
  one-device mesh (train.load_state)."""
  from posemachine import train  # pylint: disable=g-import-not-at-top
  state, manager = train.load_state(config or get_config(), workdir, train.create_mesh(1))
  manager.close()
  return state
