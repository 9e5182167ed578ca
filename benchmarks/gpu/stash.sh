#!/usr/bin/env bash
# The GPU check, a carry call (GPU machine): keep this call's bundle pieces outside the working
# tree, where the next call's fresh copy of the tree cannot replace them.
# Usage: benchmarks/gpu/stash.sh .gpu/bundle/call<N>
set -euo pipefail
cd "$(dirname "$0")/../.."
STASH=${VIVIT_GPU_STASH:-/tmp/vivit-gpu-bundle}
mkdir -p "$STASH"
cp -v "$1"/* "$STASH"/
ls -la "$STASH"; df -h /tmp | tail -1; nvidia-smi -L || true
