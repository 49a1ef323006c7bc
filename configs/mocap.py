"""BVH motion capture (e.g. the CMU database) seen by virtual Human3.6M cameras.

Usage:
  python -m posemachine.main --config=configs/mocap.py --workdir=runs/mocap \
      --config.data.mocap.train_dir=/path/to/train_bvh --config.data.mocap.test_dir=/path/to/test_bvh
`data.mocap.train_glob` / `test_glob` (comma-separated patterns) pick files when both
splits live in one directory. Clips are mapped to the 17 joints by anatomical role,
scaled to metres (CMU: 0.0254 / 0.45 m per unit), resampled to 30 fps and each seen by 4
random virtual cameras (test: 2, with its own fixed seed); 2D gets the synthetic source's
detector-like noise. Validation: the last 10% of each training clip, with its own cameras.
"""

from posemachine import config_defaults


def get_config():
  config = config_defaults.get_config()
  config.data.source = "mocap"
  config.data.window = 16
  config.data.mocap.fps = 30.0
  config.data.mocap.segment_frames = 64   # a camera per 64-frame segment: more viewpoints.
  config.data.mocap.cameras_per_clip = 4
  config.model.hidden = 256
  config.model.projector_hidden = 256
  config.model.direction = "causal"
  config.loss.distance = "euclidean"
  config.train.num_steps = 3000
  config.train.batch_size = 32
  config.train.learning_rate = 2e-3
  config.train.log_every = 50
  config.train.eval_every = 500
  config.eval.batch_size = 64
  return config
