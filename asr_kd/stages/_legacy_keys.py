"""The run keys the distill stage's runs had before asr-kd keyed work by slices (:mod:`asr_kd.work`).

They hashed the whole ``distill`` section, so a student was retrained when any distill option
changed, even one it never reads. Kept only so that students and Table-5 runs an older asr-kd
finished are recognised (and re-keyed; ``asr_kd.nn.train``) rather than retrained. The teachers'
run keys did not change.
"""

from __future__ import annotations

from typing import Any

from asr_kd.config import RecipeConfig, to_dict, train_work
from asr_kd.retired import run_key_section
from asr_kd.work import hash_record, record


def distill_key(cfg: RecipeConfig, data: str, **extra: Any) -> str:
    """A student's (``T``, ``matching``, ``subset``) or hard-target run's (``hard``, ``subset``,
    ``patience``, ``max_epochs``) key as asr-kd before the work slices gave it; ``data``: the shards'
    key (``_training.data_key``)."""
    teachers = run_key_section("teachers", to_dict(cfg.teachers))  # with the keys retired since
    return hash_record({"model": to_dict(cfg.model), "train": record(train_work(cfg.train)),
                        "distill": to_dict(cfg.distill), "teachers": teachers, "data": data, **extra})
