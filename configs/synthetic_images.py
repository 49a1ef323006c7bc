"""The full pose machine from pixels on frames the project renders itself (no downloads).

Bodies of the synthetic motion source are rendered on the device as shaded capsules over
random backgrounds (posemachine/data/render.py) and cropped around the person; the machine
runs the paper's staged schedule (image_train.py): (1) the 2D pose sub-network, (2) the
transformer with the trunk frozen, (3) the projector, (4) everything end to end.
Measured on a 2-core CPU (otherwise idle): 21 min 17 s in all; test split (2 held-out
subjects with unseen appearances): PCK@0.1 94.6 %, 2D error 2.67 px of the 80 px crop,
MPJPE 79.4 mm, PA-MPJPE 52.7 mm (mean pose 197.0); after stage 3: 78.0 / 51.8 mm.
The 3D error is bounded by the 2D error of small crops (2.6 px of 80 ~ 80 mm of body) and by
stage 2's frames (its validation curve still falls at 3,500 steps). Scale the encoder (CPM: trunk (64, 128, 256, 512),
feature_channels 128, render.size 368, stage_kernel 7) and the widths on a GPU/TPU.
"""

from posemachine import config_defaults


def get_config():
  config = config_defaults.get_config()
  config.model.input = "images"
  config.model.hidden = 256
  config.model.projector_hidden = 256
  config.model.direction = "bidirectional"
  e = config.model.encoder
  e.trunk, e.convs_per_block, e.feature_channels = (8, 16, 32), 2, 32
  e.stages, e.stage_channels, e.stem_channels = 2, 32, 32
  s = config.data.synthetic
  s.sequences_per_action, s.cameras_per_sequence, s.frames_per_sequence = 3, 3, 120
  s.num_subjects.val, s.num_subjects.test = 1, 2
  config.data.window = 8
  config.loss.distance = "euclidean"
  config.render.size = 80             # 20 x 20 heatmaps (two 2x2 pools).
  st = config.stages
  st.encoder.steps, st.encoder.learning_rate, st.encoder.batch_size = 1500, 2e-3, 16
  st.transformer.steps, st.transformer.learning_rate = 3500, 2e-3
  st.projector.steps, st.projector.learning_rate = 200, 1e-3
  st.end_to_end.steps, st.end_to_end.learning_rate = 200, 2e-4
  for name in ("transformer", "projector", "end_to_end", "joint_masking"):
    st[name].batch_size, st[name].window = 8, 8
  config.train.log_every = 50
  config.train.eval_every = 500
  config.train.warmup_steps = 100
  config.eval.batch_size = 32
  config.eval.val_max_windows = 64
  return config
