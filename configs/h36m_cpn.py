"""Human3.6M, protocol #1/#2, CPN 2D detections (data_2d_h36m_cpn_ft_h36m_dbb.npz).

Usage: python -m posemachine.main --config=configs/h36m_cpn.py --config.data.dir=/path/to/data
The directory must hold data_3d_h36m.npz and data_2d_h36m_cpn_ft_h36m_dbb.npz (the
detections VideoPose3D distributes). Those files carry no detector scores, so every
confidence is 1. Splits and variants as configs/h36m.py.
"""

from posemachine import config_defaults


def get_config():
  config = config_defaults.get_config()
  config.data.source = "h36m"
  config.data.h36m.keypoints = "cpn_ft_h36m_dbb"
  config.data.h36m.protocol = "p1"
  config.data.window = 16
  config.train.num_steps = 100_000
  config.train.batch_size = 64
  config.train.eval_every = 2000
  return config
