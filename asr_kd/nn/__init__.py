"""The network layer: models, losses, the ensemble, Lightning systems and one training run.

- :mod:`asr_kd.nn.models`: the acoustic DNN (plain ``nn.Module``) and K of them stacked.
- :mod:`asr_kd.nn.losses`: hard, soft (distillation, T^2 once) and matching-logits losses.
- :mod:`asr_kd.nn.ensemble`: the frozen teacher ensemble, posteriors, frame accuracy, target cache.
- :mod:`asr_kd.nn.systems`: the Lightning systems (teacher, distillation).
- :mod:`asr_kd.nn.train`: one training run in its directory: Trainer, resume, final evaluation.
- :mod:`asr_kd.nn.precision`: which float precision a device runs fast.
"""
