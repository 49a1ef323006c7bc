#!/usr/bin/env bash
# Train posemachine on a Cloud TPU VM pod slice: create the slice, copy this checkout to every
# worker, install, run the same command on all workers (one process per host; jax.distributed
# finds its peers from the TPU metadata), delete the slice.
#
# Usage: launch/tpu_pod.sh [--dry-run] [STEP ...] [-- --config.x=y ...]
#   STEP: create | copy | setup | run | delete (default: all five, in this order).
#   --dry-run prints the gcloud commands instead of running them.
# Rerunning `launch/tpu_pod.sh run` after a preemption resumes from the latest checkpoint.
# Parameters: the variables below, overridable from the environment (e.g. ACCELERATOR=v5p-64).
set -euo pipefail

PROJECT=${PROJECT:-my-gcp-project}
ZONE=${ZONE:-us-central2-b}
TPU_NAME=${TPU_NAME:-posemachine-pod}
ACCELERATOR=${ACCELERATOR:-v4-32}           # v4-32: 4 hosts x 4 chips.
RUNTIME=${RUNTIME:-tpu-ubuntu2204-base}
SPOT=${SPOT:-0}                             # 1: a preemptible (spot) slice.
CONFIG=${CONFIG:-configs/synthetic.py}
# Every worker must see the workdir at the same path (checkpoints are written by all hosts
# together): a Filestore NFS mount or a gcsfuse-mounted bucket, prepared by SHARED_FS_SETUP.
WORKDIR=${WORKDIR:-/mnt/shared/runs/posemachine}
SHARED_FS_SETUP=${SHARED_FS_SETUP:-}        # shell command run on every worker before training.
REMOTE_DIR=${REMOTE_DIR:-posemachine}       # checkout location in each worker's home.

dry_run=0
steps=()
extra=()
while (($#)); do
  case $1 in
    --dry-run) dry_run=1 ;;
    create | copy | setup | run | delete) steps+=("$1") ;;
    --) shift; extra=("$@"); break ;;
    *) echo "tpu_pod.sh: unknown argument '$1' (see the usage at the top)" >&2; exit 2 ;;
  esac
  shift
done
((${#steps[@]})) || steps=(create copy setup run delete)

cd "$(dirname "$0")/.."
tarball=${TMPDIR:-/tmp}/posemachine-$TPU_NAME.tar.gz
where=(--project="$PROJECT" --zone="$ZONE")

# shellcheck source=launch/common.sh
source launch/common.sh  # print_command

# Runs (or with --dry-run prints) one command.
x() {
  if ((dry_run)); then
    print_command "$@"
  else
    "$@"
  fi
}

for step in "${steps[@]}"; do
  case $step in
    create)
      spot=()
      ((SPOT)) && spot=(--spot)
      x gcloud compute tpus tpu-vm create "$TPU_NAME" "${where[@]}" \
        --accelerator-type="$ACCELERATOR" --version="$RUNTIME" "${spot[@]}"
      ;;
    copy)
      x tar -czf "$tarball" --exclude=.venv --exclude=runs --exclude=.git .
      x gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME:posemachine.tar.gz" \
        "${where[@]}" --worker=all
      ;;
    setup)
      setup="mkdir -p $REMOTE_DIR && tar -xzf posemachine.tar.gz -C $REMOTE_DIR"
      setup+=" && cd $REMOTE_DIR && python3 -m venv .venv"
      setup+=" && .venv/bin/pip install -q -e . 'jax[tpu]'"
      [[ -n $SHARED_FS_SETUP ]] && setup+=" && $SHARED_FS_SETUP"
      x gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${where[@]}" --worker=all \
        --command="$setup"
      ;;
    run)
      run="cd $REMOTE_DIR && .venv/bin/python -m posemachine.main --config=$CONFIG"
      run+=" --workdir=$WORKDIR --distributed=on"
      ((${#extra[@]})) && run+=" $(printf '%q ' "${extra[@]}")"
      x gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${where[@]}" --worker=all \
        --command="${run% }"
      ;;
    delete)
      x gcloud compute tpus tpu-vm delete "$TPU_NAME" "${where[@]}" --quiet
      ;;
  esac
done
