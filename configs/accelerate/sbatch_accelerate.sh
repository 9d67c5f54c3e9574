#!/bin/bash
# sbatch configs/accelerate/sbatch_accelerate.sh ddp_multinode dataset=acme-mascot model=ltx2
# `accelerate launch` on every node of the allocation with one of the *_multinode recipes here
# (its num_machines must match --nodes); SLURM gives each node its rank and the first node's
# address. Preprocess runs the same way (replace `train`).
#SBATCH --job-name=ltx-lora-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=12:00:00
#SBATCH --output=slurm-%j.out
set -euo pipefail
RECIPE=${1:?which recipe: ddp_multinode or fsdp2_multinode}; shift
MAIN_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
# SLURM 22.05 srun does not inherit sbatch's --cpus-per-task; this hands it on
export SRUN_CPUS_PER_TASK=${SLURM_CPUS_PER_TASK:-1}
srun bash -c 'exec accelerate launch --config_file "configs/accelerate/$0.yaml" \
    --machine_rank "$SLURM_NODEID" --main_process_ip "$1" --main_process_port "${MASTER_PORT:-29500}" \
    -m ltx_lora.cli train "${@:2}"' "$RECIPE" "$MAIN_ADDR" "$@"
