"""Human3.6M, protocol #1/#2, CPN 2D detections (data_2d_h36m_cpn_ft_h36m_dbb.npz).

Usage: python -m posemachine.main --config=configs/h36m_cpn.py --config.data.dir=/path/to/data
The directory must hold data_3d_h36m.npz and data_2d_h36m_cpn_ft_h36m_dbb.npz (the
detections VideoPose3D distributes). Those files carry no detector scores, so every
confidence is 1. Splits and variants as configs/h36m.py.
"""

import importlib.util
import os


def _base():
  """configs/h36m.py, loaded by path so this file works from any working directory."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "h36m.py")
  spec = importlib.util.spec_from_file_location("posemachine_configs_h36m", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config():
  config = _base().get_config()
  config.data.h36m.keypoints = "cpn_ft_h36m_dbb"
  return config
