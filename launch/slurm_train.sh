#!/usr/bin/env bash
# SLURM: one task per node; on every node DeepSpeed's launcher starts one rank per GPU.
#   sbatch --nodes=2 launch/slurm_train.sh configs/tiny.yaml train.steps=1000
# Submit from the repository root (paths are relative to it; the hostfile is written there, so
# it must be on a filesystem every node sees). Nodes need no ssh between them: each node runs
# `deepspeed --no_ssh --node_rank $SLURM_NODEID` (the path tests/test_distributed.py checks
# with two launchers on one machine).
# VIVIT_DRY_RUN=1 prints the hostfile and the commands instead of running anything.
#SBATCH --job-name=frozen-vivit
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
set -euo pipefail

: "${SLURM_JOB_NODELIST:?not inside a SLURM job: submit with sbatch (or run under salloc)}"
: "${SLURM_JOB_ID:?not inside a SLURM job: submit with sbatch (or run under salloc)}"
DRY_RUN="${VIVIT_DRY_RUN:-}"
HOSTFILE="${SLURM_SUBMIT_DIR:-.}/hostfile.${SLURM_JOB_ID}"
GPUS_PER_NODE="${SLURM_GPUS_ON_NODE:-8}"
MASTER_PORT="${MASTER_PORT:-29500}"

mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
if [[ ${#NODES[@]} -eq 0 ]]; then
  echo "slurm_train.sh: no hosts in SLURM_JOB_NODELIST=$SLURM_JOB_NODELIST" >&2
  exit 2
fi
MASTER_ADDR="${NODES[0]}"
HOSTS=""
for node in "${NODES[@]}"; do HOSTS+="$node slots=$GPUS_PER_NODE"$'\n'; done

# The command each node runs; $SLURM_NODEID (0..N-1) is set by srun per task.
NODE_CMD='exec deepspeed --hostfile "$0" --no_ssh --node_rank "$SLURM_NODEID" --master_addr "$1" --master_port "$2" launch/train.py "${@:3}"'
SRUN=(srun --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c "$NODE_CMD"
      "$HOSTFILE" "$MASTER_ADDR" "$MASTER_PORT" "$@")

if [[ -n "$DRY_RUN" ]]; then
  echo "# would write $HOSTFILE:"
  printf '%s' "$HOSTS" | sed 's/^/#   /'
  echo "# would run:"
  printf '%q ' "${SRUN[@]}"
  echo
  for i in "${!NODES[@]}"; do
    echo "# node $i (${NODES[$i]}) runs:"
    printf '%q ' deepspeed --hostfile "$HOSTFILE" --no_ssh --node_rank "$i" \
      --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" launch/train.py "$@"
    echo
  done
  exit 0
fi

printf '%s' "$HOSTS" > "$HOSTFILE"
"${SRUN[@]}"
