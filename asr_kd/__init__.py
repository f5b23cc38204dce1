"""asr-kd: distilling an ensemble of hybrid DNN-HMM acoustic models (Hinton, Vinyals & Dean 2015)."""

__version__ = "0.1.0"
