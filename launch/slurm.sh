#!/usr/bin/env bash
# Runs any synth-jax command on every node of a SLURM GPU allocation at once (one task per node).
#
#   launch/slurm.sh --nodes N [--gpus-per-node G] [--partition P] [--account A] [--time T] [--dry-run] -- synth-jax train --config ...
#
# Submits one sbatch job: N nodes, one task per node holding all its GPUs; `srun` starts the command
# on every node together and jax.distributed finds its peers from the SLURM environment (the first
# node is the coordinator). Run it from the repository on a login node that shares the file
# system with the compute nodes; the job's output goes to slurm-<jobid>.out (process 0 prints,
# every process writes <workdir>/logs/host-<i>.log). --dry-run prints the batch script instead.
set -euo pipefail

nodes="" gpus="" partition="" account="" time_limit="" dry_run=0
usage() { sed -n '4p' "$0" | sed 's/^# *//' >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes) nodes="$2"; shift 2 ;;
    --gpus-per-node) gpus="$2"; shift 2 ;;
    --partition) partition="$2"; shift 2 ;;
    --account) account="$2"; shift 2 ;;
    --time) time_limit="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; break ;;
    -h|--help) usage ;;
    *) echo "launch/slurm.sh: unknown option '$1'; put the command after --" >&2; exit 2 ;;
  esac
done
[[ "$nodes" =~ ^[1-9][0-9]*$ ]] || { echo "launch/slurm.sh: --nodes N (a positive number) is required" >&2; exit 2; }
[[ $# -gt 0 ]] || { echo "launch/slurm.sh: no command given; add it after --, e.g. -- synth-jax train --config ..." >&2; exit 2; }

repo=$(cd "$(dirname "$0")/.." && pwd)
cmd=$(printf '%q ' "$@")
opts=(--job-name=synth_jax --nodes="$nodes" --ntasks-per-node=1)
[[ -n "$gpus" ]] && opts+=(--gpus-per-node="$gpus")
[[ -n "$partition" ]] && opts+=(--partition="$partition")
[[ -n "$account" ]] && opts+=(--account="$account")
[[ -n "$time_limit" ]] && opts+=(--time="$time_limit")

# SIGTERM before the time limit (--signal) lets every process save one checkpoint and exit 0;
# resubmitting the same line resumes.
script="#!/usr/bin/env bash
#SBATCH --signal=TERM@120
set -euo pipefail
cd $(printf '%q' "$repo")
export PYTHONUNBUFFERED=1
srun --nodes=$nodes --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c $(printf '%q' "$cmd")
"
if (( dry_run )); then
  printf 'sbatch'; printf ' %q' "${opts[@]}"; echo
  printf '%s' "$script"
else
  printf '%s' "$script" | sbatch "${opts[@]}"
fi
