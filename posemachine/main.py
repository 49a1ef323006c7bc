"""Entry point: python -m posemachine.main --config=configs/synthetic.py --workdir=DIR.

Trains (resuming from the latest checkpoint in --workdir) and evaluates, or with
--mode=eval only evaluates the latest checkpoint. Override any config field with
--config.<group>.<key>=value, e.g. --config.train.num_steps=100.

Multi-process (multi-host) runs start one such process per host: TPU pod slices, Slurm and
Open MPI jobs are detected; elsewhere pass --coordinator_address, --num_processes and
--process_id (see launch/README.md). SIGTERM saves a checkpoint and exits with status 0.
"""

import logging as std_logging
import sys

from absl import app, flags, logging
import jax
from ml_collections import config_flags

from posemachine import compile_cache, config_defaults, distributed, errors, host_memory, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, eval.json and plots.")
flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (then evaluate) or eval only.")
flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                  "Start jax.distributed: auto (when the coordinator flags are given or a "
                  "TPU pod / Slurm / Open MPI job is detected), on, off.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process).")
flags.DEFINE_integer("process_id", None, "This process's index, 0..num_processes-1.")
flags.DEFINE_string("compilation_cache", None,
                    "Directory of JAX's persistent compilation cache (default: "
                    "$POSEMACHINE_COMPILATION_CACHE or ~/.cache/posemachine/jax_compilation_cache); "
                    "empty turns it off.")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(std_logging.Filter):
  """Drops Orbax's per-save INFO chatter; its warnings and errors still show."""

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  # Before anything touches the devices.
  host_memory.keep_freed_memory()
  distributed.initialize(FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes,
                         FLAGS.process_id)
  cache = compile_cache.enable(compile_cache.default_dir() if FLAGS.compilation_cache is None
                               else FLAGS.compilation_cache)
  logging.info("Persistent compilation cache: %s", cache or "off")
  logging.info("JAX %s, %d process(es), devices: %s", jax.__version__, jax.process_count(),
               jax.devices())
  logging.info(host_memory.after_backend_start(jax.default_backend()))
  try:
    if FLAGS.mode == "train":
      train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    else:
      train.evaluate_workdir(FLAGS.config, FLAGS.workdir)
  except errors.PoseMachineError as e:
    sys.exit(f"posemachine: error: {e}")


if __name__ == "__main__":
  app.run(main, flags_parser=config_defaults.parse_flags_or_exit)
