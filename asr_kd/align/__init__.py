"""Forced alignment: the built-in GMM-HMM aligner (kaldi-hmm-gmm) that makes the DNN's frame labels.

- :mod:`asr_kd.align.feats`: MFCC + deltas with per-speaker mean normalisation.
- :mod:`asr_kd.align.model`: the GMM-HMM (context dependency, transition model, AM), its files.
- :mod:`asr_kd.align.train`: graphs, flat start, accumulation, update, Viterbi realignment.
- :mod:`asr_kd.align.stage`: the align stage (or the Kaldi import of ``data_prep.kaldi_align``).
"""

from asr_kd.align.model import GmmHmm, load_model, save_model
from asr_kd.align.stage import run_align

__all__ = ["GmmHmm", "load_model", "run_align", "save_model"]
