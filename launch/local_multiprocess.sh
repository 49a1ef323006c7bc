#!/usr/bin/env bash
# Run the multi-host code path on one machine: N processes of posemachine.main, each with D
# fake CPU devices, joined by jax.distributed on a loopback coordinator (gloo collectives).
# For testing; the losses match one process with N x D devices.
#
# Usage: launch/local_multiprocess.sh [--dry-run] [CONFIG] [WORKDIR] [--config.x=y ...]
#   NUM_PROCESSES=2 DEVICES_PER_PROCESS=4 PORT=free launch/local_multiprocess.sh
# Process 0 logs to this terminal, process i > 0 to WORKDIR/process_<i>.log. SIGTERM or
# Ctrl-C is passed to every process (training saves a checkpoint and stops).
set -euo pipefail

NUM_PROCESSES=${NUM_PROCESSES:-2}
DEVICES_PER_PROCESS=${DEVICES_PER_PROCESS:-4}
PORT=${PORT:-}                              # coordinator port; empty: a free one.
TIMEOUT=${TIMEOUT:-0}                       # seconds before all are stopped; 0: no limit.

dry_run=0
if [[ ${1:-} == --dry-run ]]; then
  dry_run=1
  shift
fi
cd "$(dirname "$0")/.."
config=${1:-configs/synthetic.py}
workdir=${2:-runs/$(basename "$config" .py)-local-multiprocess}
shift $(($# > 2 ? 2 : $#))
if [[ -z ${PYTHON:-} ]]; then
  PYTHON=python3
  [[ -x .venv/bin/python ]] && PYTHON=.venv/bin/python
fi
if [[ -z $PORT ]]; then
  PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi

export JAX_PLATFORMS=cpu
export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$DEVICES_PER_PROCESS"
limit=()
((TIMEOUT > 0)) && limit=(timeout "$TIMEOUT")
command_for() {  # command_for PROCESS_ID [OVERRIDE ...] sets cmd.
  local id=$1
  shift
  cmd=("${limit[@]}" "$PYTHON" -m posemachine.main --config="$config" --workdir="$workdir"
    --coordinator_address="127.0.0.1:$PORT" --num_processes="$NUM_PROCESSES"
    --process_id="$id" "$@")
}

# shellcheck source=launch/common.sh
source launch/common.sh  # print_command

if ((dry_run)); then
  for ((i = 0; i < NUM_PROCESSES; i++)); do
    command_for "$i" "$@"
    print_command "JAX_PLATFORMS=$JAX_PLATFORMS" "XLA_FLAGS=$XLA_FLAGS" "${cmd[@]}"
  done
  exit 0
fi

mkdir -p "$workdir"
pids=()
signal_all() {  # signal_all SIGNAL
  for pid in "${pids[@]}"; do kill "-$1" "$pid" 2>/dev/null || true; done
}
trap 'signal_all TERM' INT TERM
for ((i = 0; i < NUM_PROCESSES; i++)); do
  command_for "$i" "$@"
  if ((i == 0)); then
    "${cmd[@]}" &
  else
    "${cmd[@]}" >"$workdir/process_$i.log" 2>&1 &
  fi
  pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
  while true; do
    rc=0
    wait "${pids[$i]}" || rc=$?
    # > 128: a trapped signal interrupted the wait; the process is still saving.
    if ((rc <= 128)) || ! kill -0 "${pids[$i]}" 2>/dev/null; then break; fi
  done
  if ((rc != 0)); then
    echo "local_multiprocess.sh: process $i exited with status $rc; stopping the others." >&2
    status=$rc
    signal_all KILL  # they would wait for it in their next collective.
  fi
done
exit "$status"
