"""The network layer: models, losses, the ensemble, Lightning systems and one training run.

- :mod:`asr_kd.nn.models`: the acoustic DNN (plain ``nn.Module``) and K of them stacked.
- :mod:`asr_kd.nn.losses`: soft cross-entropies (dense, top-k + tail), matching logits, and the one
  distillation loss of every target form (T^2 applied there only).
- :mod:`asr_kd.nn.ensemble`: the frozen teacher ensemble, posteriors, frame accuracy, target cache.
- :mod:`asr_kd.nn.soft_targets`: the pass that writes stored top-k + tail targets.
- :mod:`asr_kd.nn.target_sources`: a student's soft targets per batch (online, cached, stored).
- :mod:`asr_kd.nn.schedules`: the learning-rate schedule, one scheduler Lightning steps and saves.
- :mod:`asr_kd.nn.systems`: the Lightning systems (teacher, distillation).
- :mod:`asr_kd.nn.train`: one training run in its directory: Trainer, resume, final evaluation.
- :mod:`asr_kd.nn.precision`: which float precision a device runs fast.
"""
