#!/usr/bin/env bash
# Submit the whole paper run as a chain of SLURM jobs: data -> teachers (array) -> marker
# -> ensemble + students (multi-node DDP) -> graph, decode, report.
# Usage: LIBRISPEECH=/data/LibriSpeech EXP=/shared/exp/paper bash recipes/librispeech/slurm/submit_all.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data=$(sbatch --parsable "$here/data.sbatch")
teach=$(sbatch --parsable --dependency="afterok:$data" "$here/teachers.sbatch")
done_=$(sbatch --parsable --dependency="afterok:$teach" "$here/teachers_done.sbatch")
dist=$(sbatch --parsable --dependency="afterok:$done_" "$here/distill.sbatch")
dec=$(sbatch --parsable --dependency="afterok:$dist" "$here/decode.sbatch")
echo "submitted: data=$data teachers=$teach teachers_done=$done_ distill=$dist decode=$dec"
