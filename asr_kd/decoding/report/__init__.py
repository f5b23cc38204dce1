"""The report of a run (the report stage's library): Tables 1 and 5 beside the paper's, the effects
with bootstrap intervals, the GMM-HMM systems, the corpus and what was lost, wall time per stage.

- :mod:`~asr_kd.decoding.report.rows`: the report as dataclasses (a Table-1 row, a Table-5 row, the
  derived effects, ...); their checks are report.json's schema, ``to_json`` / ``from_json`` its file.
- :mod:`~asr_kd.decoding.report.statistics`: the effects, and the bootstrap over test utterances:
  intervals, paired tests, the WER per group of the test set.
- :mod:`~asr_kd.decoding.report.render`: report.md (one markdown-table helper for every table).
- :mod:`~asr_kd.decoding.report.plots`: the PNG plots.

The report stage reads a run's markers and decode summaries into the rows (:mod:`asr_kd.stages._collect`).

Frame accuracies and WERs are fractions (0.589, not 58.9); report.md prints percentages.
"""
