"""The tiny image-mode config the tests train with; also a config file for subprocesses."""

from posemachine import config_defaults

PATH = __file__


def get_config():
  c = config_defaults.get_config()
  c.model.input = "images"
  c.model.hidden = c.model.projector_hidden = 16
  e = c.model.encoder
  e.trunk, e.convs_per_block, e.feature_channels = (4, 8), 1, 8
  e.stages, e.stage_channels, e.stem_channels = 2, 8, 4
  s = c.data.synthetic
  s.num_subjects.train, s.num_subjects.val, s.num_subjects.test = 2, 1, 1
  s.sequences_per_action, s.frames_per_sequence, s.cameras_per_sequence = 1, 12, 1
  s.actions = ("walk", "squat")
  c.data.window = 4
  c.render.size = 32
  st = c.stages
  for name, steps in (("encoder", 3), ("transformer", 2), ("projector", 2), ("end_to_end", 2)):
    st[name].steps, st[name].batch_size, st[name].window = steps, 8, 4
    st[name].learning_rate = 1e-3
  st.encoder.window = 1
  t = c.train
  t.log_every, t.eval_every, t.warmup_steps = 2, 2, 1
  c.eval.batch_size, c.eval.num_plot_frames = 8, 2
  return c
