"""Human3.6M, protocol #1, ground-truth 2D keypoints (VideoPose3D-format files).

Usage: python -m posemachine.main --config=configs/h36m.py --config.data.dir=/path/to/data
The directory must hold data_3d_h36m.npz and data_2d_h36m_gt.npz (see README, "Human3.6M").
"""

from posemachine import config_defaults


def get_config():
  config = config_defaults.get_config()
  config.data.source = "h36m"
  config.data.h36m.keypoints = "gt"
  config.data.window = 16
  config.train.num_steps = 100_000
  config.train.batch_size = 64
  return config
