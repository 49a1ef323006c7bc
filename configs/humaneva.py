"""HumanEva-I (15 joints), VideoPose3D-format files, ground-truth 2D keypoints.

Usage: python -m posemachine.main --config=configs/humaneva.py --config.data.dir=/path/to/data
The directory must hold data_3d_humaneva15.npz and data_2d_humaneva15_gt.npz. Train on
Train/S1-S3, test on Validate/S1-S3, actions Walk, Jog, Box; the validation split is the
last 10% of every training sequence. Evaluation writes the per-action and the per-subject
(Walk S1 ... Box S3) tables to eval_table.md.
"""

from posemachine import config_defaults


def get_config():
  config = config_defaults.get_config()
  config.data.source = "humaneva"
  config.data.num_joints = 15
  config.data.humaneva.keypoints = "gt"
  config.data.window = 16
  # HumanEva-I is small (about 10k training frames per camera): a narrower model.
  config.model.hidden = 512
  config.model.projector_hidden = 512
  config.train.num_steps = 20_000
  config.train.batch_size = 64
  config.train.eval_every = 1000
  return config
