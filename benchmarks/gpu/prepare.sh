#!/usr/bin/env bash
# The GPU check, step 1 of 2 (runs on the CPU machine): fetch or build, for Python 3.12 on
# x86-64, every wheel the GPU machine lacks, and pack them into git-ignored `.gpu/call<N>/`
# folders that fit one device call each (see bundle.py). Prints the device calls to make.
# Idempotent: wheels already in .gpu/wheels are not fetched again.
# Usage (from anywhere): benchmarks/gpu/prepare.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
WHEELS=.gpu/wheels
mkdir -p "$WHEELS"
grep -qxF '/.gpu/' .gitignore || { echo "prepare.sh: /.gpu/ must be in .gitignore" >&2; exit 1; }

# What the GPU image lacks (it has torch, timm, einops, numpy, pyyaml, psutil, tqdm, msgpack,
# ninja, py-cpuinfo, nvidia-ml-py, packaging, six, safetensors, matplotlib; its typing-extensions
# may be older than pydantic's >= 4.16, so a newer one is carried: it goes first on the path).
# DALI's nvimgcodec/nvcomp extras serve image decoding and compression only: not carried.
# MLflow is not carried: the check runs with tracking.enabled=false.
PINNED=(
  deepspeed==0.19.8 hjson==3.1.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0
  typing-inspection==0.4.5 typing-extensions==4.16.0
  webdataset==1.0.2 braceexpand==0.1.7 av==18.1.0
  nvidia-dali-cuda130==2.4.0 astunparse==1.6.3 gast==0.7.0 optree==0.20.0 nvtx==0.2.17
  makefun==1.16.0 libcst==1.9.0
)
PLATFORM=(--python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
PIP=(python3 -m pip)

have() {  # have NAME==VERSION: a wheel for it is already in $WHEELS
  local n=${1%%==*} v=${1##*==}
  n=${n//-/_}
  compgen -G "$WHEELS/${n}-${v}-*.whl" >/dev/null || compgen -G "$WHEELS/${n,,}-${v}-*.whl" >/dev/null
}

for req in "${PINNED[@]}"; do
  have "$req" && continue
  if [ "${req%%==*}" = deepspeed ]; then
    # DeepSpeed publishes an sdist only: build a pure-Python wheel (ops are JIT-built on the GPU).
    DS_BUILD_OPS=0 "${PIP[@]}" wheel -q --no-deps "$req" -w "$WHEELS"
  else
    "${PIP[@]}" download -q --no-deps --only-binary=:all: "${PLATFORM[@]}" -d "$WHEELS" "$req"
  fi
done
ls -la "$WHEELS"

python3 benchmarks/gpu/bundle.py pack "$WHEELS" --out .gpu/bundle
n=$(ls -d .gpu/bundle/call* | wc -l)
echo
echo "Device calls, in this order, each right after the one before (a machine stays warm ~30 s):"
for i in $(seq 1 $((n - 1))); do
  echo "  $i. run  carry=[\".gpu/bundle/call$i\"]  command: benchmarks/gpu/stash.sh .gpu/bundle/call$i"
done
echo "  $n. run  carry=[\".gpu/bundle/call$n\"]  timeout_s=600  command: benchmarks/gpu/run.sh"
echo "Then give_back, and commit \$OUT's summary.md + results under benchmarks/results/."
