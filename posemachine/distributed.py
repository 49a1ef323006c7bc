"""Multi-process runs: jax.distributed start-up, the device mesh, sharding rules, preemption.

One process runs per host (TPU VM worker, Slurm task, local test process); together they see
one global set of devices. `initialize` must run before anything touches the devices.

  * TPU pod slices, Slurm and Open MPI describe the job in their environment, and
    `jax.distributed.initialize()` reads it; elsewhere pass --coordinator_address,
    --num_processes and --process_id (or JAX_COORDINATOR_ADDRESS etc.).
  * The mesh has two axes, ('data', 'model'): the batch is split over 'data'; the wide
    layers of large configs are split over 'model' (`config.mesh.model`, default 1: pure
    data parallelism). `PARAM_RULES` below is the one place that says how.
  * `PreemptionWatcher`: SIGTERM (how TPU VMs and schedulers preempt) asks the train loop to
    save a checkpoint and stop; with several processes all of them agree on the step.
"""

from __future__ import annotations

import os
import re
import signal
import threading

from absl import logging
import jax
import numpy as np
from jax.experimental import mesh_utils, multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from posemachine import errors

# ----------------------------------------------------------------------------
# Start-up.


def cluster_environment() -> str | None:
  """Names the multi-process job this process belongs to, or None when it runs alone.

  Checks what `jax.distributed.initialize()` can auto-detect: Slurm (srun tasks), Open MPI
  (mpirun ranks), Cloud TPU VMs and TPU workers on GKE. A one-task Slurm or MPI job counts
  as alone.
  """
  env = os.environ
  if env.get("JAX_COORDINATOR_ADDRESS"):
    return "explicit"
  if ("SLURM_JOB_ID" in env and "SLURM_STEP_NODELIST" in env
      and int(env.get("SLURM_NTASKS", "1")) > 1):
    return "slurm"
  if "OMPI_MCA_orte_hnp_uri" in env and int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return "openmpi"
  if "," in env.get("TPU_WORKER_HOSTNAMES", "") or "," in env.get("TPU_PROCESS_ADDRESSES", ""):
    return "tpu-gke"
  try:  # jax sets this when it finds TPU chips and libtpu (cheap; no network).
    from jax._src import cloud_tpu_init  # pylint: disable=g-import-not-at-top
    if cloud_tpu_init.running_in_cloud_tpu_vm:
      return "tpu-vm"
  except (ImportError, AttributeError):
    pass
  return None


def enable_cpu_collectives() -> None:
  """Lets computations on CPU devices of several processes communicate (gloo over TCP).

  Needed for multi-process runs on CPU (local tests, launch/local_multiprocess.sh); newer
  JAX versions default to gloo already. Call before the first use of the devices.
  """
  if jax.config.jax_cpu_collectives_implementation is None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")


def initialize(mode: str = "auto", coordinator_address: str | None = None,
               num_processes: int | None = None, process_id: int | None = None,
               timeout_s: int = 300) -> bool:
  """Starts jax.distributed if this is (or is told to be) a multi-process run.

  Args:
    mode: 'auto' initialises when coordinator arguments are given or
      `cluster_environment()` finds a job; 'on' always (JAX detects what is not given);
      'off' never.
    coordinator_address: 'host:port' of process 0 (it listens there); None: detect.
    num_processes, process_id: None: detect.
    timeout_s: how long to wait for all processes to connect.
  Returns:
    Whether jax.distributed was initialised.
  """
  if mode not in ("auto", "on", "off"):
    raise ValueError(f"distributed mode {mode!r}; expected 'auto', 'on' or 'off'.")
  if mode == "off" or jax.distributed.is_initialized():
    return jax.distributed.is_initialized()
  explicit = any(v is not None for v in (coordinator_address, num_processes, process_id))
  found = cluster_environment()
  if mode == "auto" and not explicit and found is None:
    return False
  enable_cpu_collectives()
  logging.info("Initialising jax.distributed (%s): coordinator %s, process %s of %s.",
               "flags" if explicit else found or "auto-detect",
               coordinator_address or "auto", process_id if process_id is not None else "auto",
               num_processes or "auto")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id,
                             initialization_timeout=timeout_s)
  logging.info("jax.distributed ready: process %d of %d, %d local / %d global devices.",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True


# ----------------------------------------------------------------------------
# Mesh and sharding rules.

DATA, MODEL = "data", "model"

# How parameters are split over the 'model' axis: (regex on the '/'-joined parameter path,
# spec of a 2-D kernel or 1-D bias). The first match wins; unmatched leaves (and dimensions
# not divisible by the axis size) are replicated. Column-parallel layers split their output
# features; the layer after one splits its input features (row-parallel), so XLA inserts one
# reduction per pair. Optimizer moments follow their parameters (paths end the same way).
PARAM_RULES = (
    (r"transformer/stem/kernel$", P(None, MODEL)),
    (r"transformer/stem/bias$", P(MODEL)),
    (r"transformer/lstm_\d+/(w_in|w_rec)$", P(None, MODEL)),  # (hidden, 4 hidden) gates
    (r"transformer/lstm_\d+/bias$", P(MODEL)),
    (r"transformer/head/kernel$", P(MODEL, None)),
    (r"projector/\w+/fc1/kernel$", P(None, MODEL)),
    (r"projector/\w+/fc1/bias$", P(MODEL)),
    (r"projector/regression/fc2/kernel$", P(MODEL, None)),
    (r"projector/projection/fc2/kernel$", P(MODEL, None)),
    (r"projector/projection/fc3/kernel$", P(None, MODEL)),
    (r"projector/projection/fc3/bias$", P(MODEL)),
    (r"projector/projection/fc4/kernel$", P(MODEL, None)),
)


def create_mesh(num_devices: int = -1, model: int = 1) -> Mesh:
  """('data', 'model') mesh over all devices (or the first num_devices), model-axis size `model`.

  Every 'model' group (a row of the mesh) must lie on one process (checked): a process then
  feeds whole rows of the batch (`make_array_from_process_local_data` places them).
  """
  devices = jax.devices()
  if num_devices > 0:
    if num_devices > len(devices):
      raise errors.ConfigError(f"Config key 'train.num_devices' = {num_devices}, but only "
                               f"{len(devices)} devices exist (-1: all of them).")
    devices = devices[:num_devices]
  if model < 1 or len(devices) % model:
    raise errors.ConfigError(f"mesh.model={model} must divide the number of devices "
                             f"({len(devices)}).")
  shape = (len(devices) // model, model)
  if len(devices) == jax.device_count():  # all devices: let JAX order them by topology.
    arr = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
  else:
    arr = np.asarray(devices).reshape(shape)
  for row in arr:  # a process feeds whole rows of the batch: no 'model' group spans hosts.
    if len({d.process_index for d in row}) > 1:
      raise errors.ConfigError(f"mesh.model={model} spans devices of several processes; use "
                               f"at most {jax.local_device_count()} (the devices per process).")
  return Mesh(arr, (DATA, MODEL))


def _path_str(path) -> str:
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
  return "/".join(parts)


def param_spec(path: str, shape: tuple[int, ...], model_size: int) -> P:
  """The PartitionSpec of one parameter (or optimizer moment) by PARAM_RULES."""
  if model_size > 1:
    for pattern, spec in PARAM_RULES:
      if re.search(pattern, path):
        if len(spec) == len(shape) and all(
            a is None or shape[i] % model_size == 0 for i, a in enumerate(spec)):
          return spec
        break
  return P()


def state_shardings(tree, mesh: Mesh):
  """NamedShardings for a pytree of arrays / ShapeDtypeStructs (train state) on mesh."""
  model_size = mesh.shape[MODEL]
  return jax.tree_util.tree_map_with_path(
      lambda path, x: NamedSharding(mesh, param_spec(_path_str(path), x.shape, model_size)),
      tree)


def gather_outputs(fn):
  """Wraps a jitted fn so it returns host NumPy arrays of its whole (global) outputs.

  With one process, outputs are returned as they are; with several, an output sharded
  over devices of other processes is all-gathered (every process gets the full result).
  """
  if jax.process_count() == 1:
    return fn

  def wrapped(*args):
    return multihost_utils.process_allgather(fn(*args), tiled=True)

  return wrapped


# ----------------------------------------------------------------------------
# Preemption.


class PreemptionWatcher:
  """Says when the train loop should save and stop because the job is being preempted.

  With jax.distributed running, JAX's preemption service catches SIGTERM on any process and
  agrees on one step for all (`multihost_utils.reached_preemption_sync_point`); call
  `should_stop(step)` after every step, on every process. Alone, a SIGTERM handler (installed
  on creation, restored by `close()`) sets a flag; a second SIGTERM terminates at once.
  """

  def __init__(self):
    self.signalled = False
    self._installed = False
    self._previous = None
    self._sync = (jax.distributed.is_initialized()
                  and jax.config.jax_enable_preemption_service)
    if not self._sync and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
      self._installed = True

  def close(self) -> None:
    """Restores the SIGTERM handler there was before."""
    if self._installed:
      signal.signal(signal.SIGTERM, self._previous or signal.SIG_DFL)
      self._installed = False

  def __enter__(self) -> PreemptionWatcher:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def _handle(self, signum, frame):
    del frame
    self.signalled = True
    signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM ends the process.
    logging.warning("Received SIGTERM: finishing the current step, then saving a checkpoint.")

  def should_stop(self, step: int) -> bool:
    if self._sync:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.signalled
