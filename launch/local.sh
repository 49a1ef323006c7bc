#!/usr/bin/env bash
# Train and evaluate on this machine. Usage: launch/local.sh [CONFIG] [WORKDIR] [--config.x=y ...]
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/synthetic.py}
workdir=${2:-runs/$(basename "$config" .py)}
shift $(( $# > 2 ? 2 : $# ))
[ -x .venv/bin/python ] || { python3 -m venv .venv && .venv/bin/pip install -q -e .; }
exec .venv/bin/python -m posemachine.main --config="$config" --workdir="$workdir" "$@"
