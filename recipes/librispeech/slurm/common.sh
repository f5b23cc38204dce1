# Sourced by the SLURM scripts beside it. Edit these three lines for your site, or export them.
: "${ASR_KD_VENV:=$HOME/asr-kd/.venv}"            # the venv made by `make venv` in your checkout
: "${LIBRISPEECH:=/data/LibriSpeech}"             # holds train-clean-100/, dev-clean/, test-clean/ ...
: "${EXP:=/shared/exp/asr-kd-paper}"               # run directory on storage every node can read
: "${PRESET:=paper}"

# shellcheck disable=SC1091
source "$ASR_KD_VENV/bin/activate"
RECIPE=(python -m asr_kd.recipes.librispeech --preset "$PRESET" --data-root "$LIBRISPEECH" --exp-dir "$EXP")

# per_rank_batch TASKS [--set ...]: the preset's train.batch_size (with the job's own --set
# overrides) divided over TASKS ranks; exits if it does not divide.
per_rank_batch() {
  local tasks=$1; shift
  local batch
  batch=$("${RECIPE[@]}" "$@" --print-config | python -c 'import json, sys; print(json.load(sys.stdin)["train"]["batch_size"])')
  if (( batch % tasks )); then
    echo "error: train.batch_size=$batch does not divide over $tasks ranks; set --set train.batch_size to a multiple of $tasks" >&2
    exit 2
  fi
  echo $(( batch / tasks ))
}
