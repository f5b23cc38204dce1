"""Config keys asr-kd no longer has: what loading one says, and how runs made with them are read.

The cross-synthesizer study, the embedded corpus's festival training voices and the teachers'
output-layer re-tune were retired from the recipe after commit ``88e0600`` (the last one that has
them); their findings are in ``docs/experiments/``. Kept out of :mod:`asr_kd.config` so the recipe's
config names test sets, not synthesizers.

A retired key in a preset or ``--set`` is an error that names it. A run directory made before the
retirement still holds the keys: in its ``config.json``, in the stage markers that hashed them and
in the distill stage's run keys. Where each holds a value that left the work as it is without the
key (:data:`KEEPS_WORK`), the run stays done; any other value refuses the run, saying what to do.
"""

from __future__ import annotations

from typing import Any

RETIRED_AFTER = "88e0600"
CROSS_SYNTH = "docs/experiments/cross-synthesizer.md"
FESTIVAL = "docs/experiments/festival-voices.md"
ANY = object()  # a key whose every value left the work of a run without its study as it is

# key -> (the value, or ANY, at which a run's work is what it is without the key; its findings)
KEEPS_WORK: dict[str, tuple[Any, str]] = {
    "data.train_synthesizer": ("", CROSS_SYNTH),
    "data.cross_synth_utts_per_speaker": (ANY, CROSS_SYNTH),  # read only with data.train_synthesizer
    "data.cross_synth_dev_speakers": (ANY, CROSS_SYNTH),  # likewise
    # the extra scales searched on extra test sets: a row more in their scale table (the tiny preset's 0.06)
    "decode.condition_scales": (ANY, CROSS_SYNTH),
    "data.synthetic_festival": (False, FESTIVAL),
    "teachers.retune_epochs": (0, FESTIVAL),
    "teachers.retune_synthesizer": (ANY, FESTIVAL),  # read only with teachers.retune_epochs > 0
    "teachers.retune_lr": (ANY, FESTIVAL),  # likewise
}
# What the distill stage's run keys hashed of them (the teachers section whole), at their defaults.
RUN_KEY_DEFAULTS: dict[str, Any] = {"teachers.retune_epochs": 0, "teachers.retune_synthesizer": "",
                                    "teachers.retune_lr": 1e-3}


def retired_message(key: str) -> str:
    """One line: ``key`` was retired, where its findings are, which commit still has it."""
    return (f"{key} was retired from the recipe after commit {RETIRED_AFTER} (findings: {KEEPS_WORK[key][1]}; "
            f"to reproduce, check out {RETIRED_AFTER})")


def _keeps_work(key: str, value: Any) -> bool:
    kept = KEEPS_WORK[key][0]
    return kept is ANY or value == kept


def check_run_config(tree: dict[str, Any]) -> None:
    """Refuse (``ValueError``, one line) a run's stored config (``config.json``: ``{section: {key:
    value}}``) that used a retired key at a value that changed the run's work: this asr-kd cannot
    continue that run."""
    for key, value in _flat(tree).items():
        if key in KEEPS_WORK and not _keeps_work(key, value):
            raise ValueError(f"this run directory was made with {key}={value!r}, and {retired_message(key)}: "
                             "run the recipe again in a new --exp-dir, or continue this run at that commit")


def drop(tree: dict[str, Any]) -> dict[str, Any]:
    """A run's stored config without the retired keys (after :func:`check_run_config`)."""
    return {section: {k: v for k, v in values.items() if f"{section}.{k}" not in KEEPS_WORK}
            if isinstance(values, dict) else values for section, values in tree.items()}


def _flat(tree: dict[str, Any]) -> dict[str, Any]:
    return {f"{section}.{k}": v for section, values in tree.items() if isinstance(values, dict)
            for k, v in values.items()}


def marker_config(config: dict[str, Any]) -> dict[str, Any]:
    """A stage marker's stored config without the retired keys at values that kept the work, both
    as keys read one by one (``"decode.condition_scales"``) and inside sections read whole
    (``{"data": {"train_synthesizer": ""}}``); so it compares with what the stage hashes now."""
    out: dict[str, Any] = {}
    for read, value in config.items():
        if read in KEEPS_WORK and _keeps_work(read, value):
            continue
        if isinstance(value, dict):
            value = {name: v for name, v in value.items()
                     if not (f"{read}.{name}" in KEEPS_WORK and _keeps_work(f"{read}.{name}", v))}
        out[read] = value
    return out


def run_key_section(section: str, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (a config section as :func:`asr_kd.config.to_dict` gives it) with the retired keys
    run keys made before their retirement hashed in it, at their defaults: the same run key."""
    out = dict(values)
    for key, value in RUN_KEY_DEFAULTS.items():
        sec, _, name = key.partition(".")
        if sec == section:
            out[name] = value
    return out
