#!/usr/bin/env bash
# SLURM: one task per node; DeepSpeed's launcher starts one rank per GPU on every node.
#   sbatch --nodes=2 launch/slurm_train.sh configs/tiny.yaml train.steps=1000
#SBATCH --job-name=frozen-vivit
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
set -euo pipefail

HOSTFILE="${SLURM_SUBMIT_DIR:-.}/hostfile.${SLURM_JOB_ID}"
GPUS_PER_NODE="${SLURM_GPUS_ON_NODE:-8}"
scontrol show hostnames "$SLURM_JOB_NODELIST" | sed "s/\$/ slots=${GPUS_PER_NODE}/" > "$HOSTFILE"
MASTER_ADDR=$(head -n 1 "$HOSTFILE" | cut -d' ' -f1)

deepspeed --hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR" --master_port "${MASTER_PORT:-29500}" \
  launch/train.py "$@"
