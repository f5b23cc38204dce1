"""The decoding layer: language model, graph, search, scoring.

- :mod:`asr_kd.decoding.lm`: Kneser-Ney n-gram LM (ARPA).
- :mod:`asr_kd.decoding.graph`: G.fst and HCLG.fst.
- :mod:`asr_kd.decoding.search`: hybrid scores and the lattice search through HCLG.
- :mod:`asr_kd.decoding.scoring`: WER alignment and scoring files.
- :mod:`asr_kd.decoding.stats`: bootstrap intervals over test utterances.
- :mod:`asr_kd.decoding.report`: the report of a run (rows, statistics, render, plots).

The decoding of a run's systems, evaluations on other test sets and the model directories' export read
the run directory: they are the stages' work (:mod:`asr_kd.stages._decode`, :mod:`asr_kd.stages._evaluate`,
:mod:`asr_kd.stages._export`).
"""
