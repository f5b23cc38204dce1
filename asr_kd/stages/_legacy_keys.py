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
from asr_kd.work import added_defaults, hash_record, record


def _as_then(section: Any) -> dict[str, Any]:
    """A config section as those keys held it: whole (where it runs included), without the options
    added since (:data:`asr_kd.work.ADDED`) while they hold the default that keeps the work."""
    added = added_defaults(section)
    return {k: v for k, v in to_dict(section).items() if not (k in added and to_dict(added[k]) == v)}


def distill_key(cfg: RecipeConfig, data: str, **extra: Any) -> str:
    """A student's (``T``, ``matching``, ``subset``) or hard-target run's (``hard``, ``subset``,
    ``patience``, ``max_epochs``) key as asr-kd before the work slices gave it; ``data``: the shards'
    key (``_training.data_key``)."""
    teachers = run_key_section("teachers", _as_then(cfg.teachers))  # with the keys retired since
    return hash_record({"model": _as_then(cfg.model), "train": record(train_work(cfg.train)),
                        "distill": _as_then(cfg.distill), "teachers": teachers, "data": data, **extra})
