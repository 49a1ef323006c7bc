"""Human3.6M, protocol #1 (and #2: PA-MPJPE), ground-truth 2D keypoints (VideoPose3D files).

Usage: python -m posemachine.main --config=configs/h36m.py --config.data.dir=/path/to/data
The directory must hold data_3d_h36m.npz and data_2d_h36m_gt.npz (README, "Real data").
Variants: --config.data.h36m.protocol=frontal (test on the frontal camera only) or p3
(train S1 S5-S9, test S11 every 64th frame). Train S1 S5 S6 S7 S8, test S9 S11; the
validation split is the last 10% of every training sequence (data.h36m.val_fraction).
Evaluation writes eval.json and eval_table.md (the per-action table of the papers).
"""

from posemachine import config_defaults


def get_config():
  config = config_defaults.get_config()
  config.data.source = "h36m"
  config.data.h36m.keypoints = "gt"
  config.data.h36m.protocol = "p1"
  config.data.window = 16
  config.train.num_steps = 100_000
  config.train.batch_size = 64
  config.train.eval_every = 2000
  return config
