"""Converts a real source's files once into TFDS ArrayRecord files (data.format='tfds').

python -m posemachine.data.prepare --config=configs/h36m.py --config.data.dir=/path/to/data
python -m posemachine.data.prepare --config=configs/mocap.py \
    --config.data.mocap.train_dir=TRAIN --config.data.mocap.test_dir=TEST

Use the same config file and --config.data.* overrides as for training: the prepared
dataset is named by a hash of the data settings, and training with --config.data.format=tfds
looks for exactly that one (under data.prepared_dir, default <data.dir>/prepared). Prints
the dataset's path and its sequence/frame counts per split. No TensorFlow needed.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from posemachine import config_defaults, errors

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "The training configuration file.",
                                lock_config=True)
flags.DEFINE_bool("overwrite", False, "Rebuild the prepared dataset if it exists.")
flags.mark_flags_as_required(["config"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from posemachine.data import pipeline, tfds_data  # pylint: disable=g-import-not-at-top
  config = FLAGS.config
  try:
    config_defaults.validate(config)
    path = tfds_data.prepare(config, overwrite=FLAGS.overwrite)
    print(f"Prepared {config.data.source} ({tfds_data.config_name(config)}) in {path}")
    for split in tfds_data.SPLITS:
      seqs = pipeline.load_split(config, split, "tfds")
      print(f"  {split}: {seqs.num_sequences} sequences, {seqs.num_frames} frames")
  except errors.PoseMachineError as e:
    sys.exit(f"posemachine: error: {e}")


if __name__ == "__main__":
  app.run(main, flags_parser=config_defaults.parse_flags_or_exit)
