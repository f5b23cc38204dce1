#!/usr/bin/env bash
# Submit the whole run as a chain of SLURM jobs: data -> teachers (a job array, one teacher a task)
# -> teachers_done -> ensemble + students (multi-node DDP) -> graph, decode, report.
#
#   LIBRISPEECH=/data/LibriSpeech EXP=/shared/exp/paper [PRESET=paper] bash submit_all.sh [--set KEY=VALUE ...]
#
# The --set arguments go to every job's recipe command (e.g. a corpus option). Extra sbatch options,
# for your site (partition, account) or for smaller nodes than the scripts ask for: SBATCH_ALL for
# every job, and DATA_SBATCH, TEACHERS_SBATCH, DONE_SBATCH, DISTILL_SBATCH, DECODE_SBATCH for one:
#   SBATCH_ALL="--partition=gpu" DISTILL_SBATCH="--nodes=1 --ntasks-per-node=8 --gpus-per-node=8" bash submit_all.sh
# The teachers' array has one task per teacher (teachers.num_teachers of the preset and --set).
# Prints the job ids; `sacct -j ID` and the jobs' slurm-*.out files say how each ended.
set -euo pipefail
export ASR_KD_SLURM_DIR="${ASR_KD_SLURM_DIR:-$(cd "$(dirname "$0")" && pwd)}"  # the jobs source common.sh here
source "$ASR_KD_SLURM_DIR/common.sh"
teachers=$("${RECIPE[@]}" "$@" --print-config | python -c 'import json, sys; print(json.load(sys.stdin)["teachers"]["num_teachers"])')

submit() {  # submit AFTER_JOB EXTRA_OPTIONS SCRIPT [recipe args]: prints the job id
  local after=$1 extra=$2 script=$3
  shift 3
  # shellcheck disable=SC2086  # the option strings are word-split on purpose
  sbatch --parsable ${after:+--dependency=afterok:$after} ${SBATCH_ALL:-} $extra "$ASR_KD_SLURM_DIR/$script" "$@"
}
data=$(submit "" "${DATA_SBATCH:-}" data.sbatch "$@")
teach=$(submit "$data" "--array=0-$((teachers - 1)) ${TEACHERS_SBATCH:-}" teachers.sbatch "$@")
done_=$(submit "$teach" "${DONE_SBATCH:-}" teachers_done.sbatch "$@")
dist=$(submit "$done_" "${DISTILL_SBATCH:-}" distill.sbatch "$@")
dec=$(submit "$dist" "${DECODE_SBATCH:-}" decode.sbatch "$@")
echo "submitted: data=$data teachers=$teach teachers_done=$done_ distill=$dist decode=$dec"
