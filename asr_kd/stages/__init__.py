"""One module per stage of the recipe, named after it; each exposes ``run(cfg, paths) -> summary``
and declares beside it the config it reads (``READS``), the stages whose outputs it reads
(``AFTER``) and its one-line ``DOC``. The recipe (:mod:`asr_kd.recipes.librispeech`) lists them
in order; :mod:`asr_kd.runner` runs them.
"""
