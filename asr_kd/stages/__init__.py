"""One module per stage of the recipe, named after it. Each exposes ``run(cfg, paths) -> summary``
and declares beside it ``DOC`` (one line), ``work`` (its slice of the config: what its outputs depend on; see
:class:`asr_kd.runner.Stage`), ``AFTER`` (the stages whose outputs it reads) and, for the training
stages, ``DISTRIBUTED = True`` (every DDP rank joins). At module level a stage imports only the
core; its library (data, align, nn, decoding, data_prep) is imported inside ``run``.

The recipe (:mod:`asr_kd.recipes.librispeech`) lists them in order; :mod:`asr_kd.runner` runs them.
Map: ``docs/ARCHITECTURE.md``.
"""
