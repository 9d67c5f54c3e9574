#!/bin/bash
# sbatch configs/accelerate/sbatch_srun.sh dataset=acme-mascot model=ltx2 trainer.mixed_precision=bf16
# The same 2 x 8 GPU run without torchrun: SLURM starts one task per GPU and each task turns
# SLURM's variables into the RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR that Accelerate reads.
# Also for preprocess (replace `train`). Command-line options override the #SBATCH lines
# (sbatch --nodes=4 ...); port $MASTER_PORT or 29500. A cancelled, preempted or requeued job
# (--requeue) resumes from its last checkpoint when it runs again with the same arguments.
#SBATCH --job-name=ltx-lora-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=12:00:00
#SBATCH --output=slurm-%j.out
set -euo pipefail
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_ADDR
export MASTER_PORT=${MASTER_PORT:-29500}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
# SLURM 22.05 srun does not inherit sbatch's --cpus-per-task; this hands it on
export SRUN_CPUS_PER_TASK=${SLURM_CPUS_PER_TASK:-1}
srun bash -c 'RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS \
    exec python -m ltx_lora.cli train "$@"' _ "$@"
