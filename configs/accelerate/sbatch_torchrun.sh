#!/bin/bash
# sbatch configs/accelerate/sbatch_torchrun.sh dataset=acme-mascot model=ltx2 trainer.mixed_precision=bf16
# Data-parallel training on 2 nodes x 8 GPUs: one srun task per node, torchrun starts one
# process per GPU and joins all 16 through the c10d rendezvous on the first node.
# Preprocess is sharded the same way: replace `train` with `preprocess` (each rank encodes
# every WORLD_SIZE-th clip; rank 0 writes the index). Run from the workspace (a shared FS).
# Command-line options override the #SBATCH lines (sbatch --nodes=4 ...). Processes per node:
# $NPROC_PER_NODE, else the GPUs SLURM gave the node, else 8; rendezvous port $MASTER_PORT or
# 29500. A cancelled, preempted or requeued job (--requeue) resumes from its last checkpoint
# when it runs again with the same arguments (docs/scaling.md).
#SBATCH --job-name=ltx-lora-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=12:00:00
#SBATCH --output=slurm-%j.out
set -euo pipefail
MAIN_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
NPROC=${NPROC_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
# SLURM 22.05 srun does not inherit sbatch's --cpus-per-task; this hands it on
export SRUN_CPUS_PER_TASK=${SLURM_CPUS_PER_TASK:-1}
srun torchrun \
    --nnodes "$SLURM_NNODES" --nproc_per_node "$NPROC" \
    --rdzv_backend c10d --rdzv_endpoint "$MAIN_ADDR:${MASTER_PORT:-29500}" \
    --rdzv_id "$SLURM_JOB_ID" \
    -m ltx_lora.cli train "$@"
