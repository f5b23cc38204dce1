# Sourced by the SLURM scripts beside it. Edit these three lines for your site, or export them.
: "${ASR_KD_VENV:=$HOME/asr-kd/.venv}"            # the venv made by `make venv` in your checkout
: "${LIBRISPEECH:=/data/LibriSpeech}"             # holds train-clean-100/, dev-clean/, test-clean/ ...
: "${EXP:=/shared/exp/asr-kd-paper}"               # run directory on storage every node can read
: "${PRESET:=paper}"

# shellcheck disable=SC1091
source "$ASR_KD_VENV/bin/activate"
RECIPE=(python -m asr_kd.recipes.librispeech --preset "$PRESET" --data-root "$LIBRISPEECH" --exp-dir "$EXP")
