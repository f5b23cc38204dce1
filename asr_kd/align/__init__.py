"""The align layer: GMM-HMM forced alignment that makes the DNN's frame labels.

- :mod:`asr_kd.align.feats`: MFCC + deltas with per-speaker mean normalisation.
- :mod:`asr_kd.align.model`: the GMM-HMM (context dependency, transition model, AM), its files.
- :mod:`asr_kd.align.viterbi`: Viterbi training: graphs, flat start, accumulation, update, realignment.
- :mod:`asr_kd.align.tree`: the phonetic decision tree (triphone clustering).
- :mod:`asr_kd.align.triphone`: the tied-triphone system built from the monophone one.
- :mod:`asr_kd.align.kaldi_import`: alignments made by Kaldi, imported instead.

The align stage (:mod:`asr_kd.stages.align`) runs them.
"""
