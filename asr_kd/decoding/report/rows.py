"""The report as dataclasses: every row and section of report.json, with its checks.

A field whose value is :data:`ABSENT` is left out of report.json (a key the run has nothing for:
``frame_acc_ci`` of a row without per-utterance counts); ``None`` is written as null. Fields are in
report.json's key order. Constructing a row checks it (:class:`ReportError` names the place), so
``Report.from_json`` is the schema check of a report.json.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from asr_kd.files import TABLE5_RUNS

Interval = list  # [low, high]: a 95 % bootstrap interval, as report.json holds it


class ReportError(ValueError):
    """report.json does not follow the schema."""


class _Absent:
    """The value of a field report.json has no key for."""

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False


ABSENT: Any = _Absent()


def given(x: Any) -> Any:
    """``x``, or None where it is :data:`ABSENT`."""
    return None if x is ABSENT else x


def check_number(where: str, value: Any, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReportError(f"{where}: expected a number, got {value!r}")


def _check_fraction(where: str, value: Any, top: float = 1.0) -> None:
    check_number(where, value)
    if value is not None and not 0.0 <= value <= top:
        raise ReportError(f"{where}={value}: rates are fractions")


def _check_interval(where: str, ci: Any) -> None:
    if ci is not ABSENT and ci is not None and not (isinstance(ci, list) and len(ci) == 2
                                                    and ci[0] <= ci[1] + 1e-12):
        raise ReportError(f"{where}: expected [low, high], got {ci!r}")


def _json(v: Any) -> Any:
    if isinstance(v, Row):
        return v.to_json()
    if isinstance(v, list):
        return [_json(x) for x in v]
    if isinstance(v, dict):
        return {k: _json(x) for k, x in v.items()}
    return v


@dataclasses.dataclass
class Row:
    """A row or section of report.json: ``to_json`` / ``from_json`` by its fields."""

    # field -> ("one" | "list" | "map", row class): the fields that hold rows
    NESTED: ClassVar[dict[str, tuple[str, type]]] = {}
    WHERE: ClassVar[str] = ""

    def to_json(self) -> dict[str, Any]:
        return {f.name: _json(v) for f in dataclasses.fields(self) if (v := getattr(self, f.name)) is not ABSENT}

    @classmethod
    def from_json(cls, obj: Any, where: str | None = None) -> Any:
        where = where or cls.WHERE
        if not isinstance(obj, dict):
            raise ReportError(f"{where}: expected an object, got {obj!r}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in obj if k not in names]
        if unknown:
            raise ReportError(f"{where}: unknown key {unknown[0]!r}")
        for f in dataclasses.fields(cls):
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in obj:
                raise ReportError(f"{where}: missing key {f.name!r}")
        return cls(**{k: cls._parse(k, v, where) for k, v in obj.items()})

    @classmethod
    def _parse(cls, name: str, value: Any, where: str) -> Any:
        if name not in cls.NESTED or value is None:
            return value
        shape, row = cls.NESTED[name]
        if shape == "one":
            return row.from_json(value, f"{where}.{name}" if where else name)
        if shape == "map":
            if not isinstance(value, dict):
                raise ReportError(f"{name}: expected an object")
            return {k: row.from_json(v, f"{name}.{k}") for k, v in value.items()}
        if not isinstance(value, list):
            raise ReportError(f"{name}: expected a list of rows")
        return [row.from_json(v, f"{name}[{i}]") for i, v in enumerate(value)]


# ---------------------------------------------------------------------------------------------
# Tables 1 and 5
# ---------------------------------------------------------------------------------------------
def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclasses.dataclass
class Table1Row(Row):
    """A system of Table 1: baseline (teacher 0), baseline_mean (over the teachers, with their
    spread), ensemble, distilled_T<T>; test frame accuracy and WER with their intervals."""

    system: str
    frame_acc: float | None
    wer: float | None
    params: int | None
    frame_acc_std: float = ABSENT  # baseline_mean: spread over the teachers (seeds)
    wer_std: float = ABSENT
    num_teachers: int = ABSENT
    temperature: float = ABSENT  # distilled_T<T>
    dev_frame_acc: float | None = ABSENT
    epochs: float | None = ABSENT
    wer_ci: Interval | None = ABSENT
    frame_acc_ci: Interval = ABSENT

    def __post_init__(self) -> None:
        s = self.system
        if s not in ("baseline", "baseline_mean", "ensemble") and not (
                isinstance(s, str) and s.startswith("distilled_T") and _is_number(s[len("distilled_T"):])):
            raise ReportError(f"table1: unknown system {s!r}")
        _check_fraction(f"table1 {s}.frame_acc", self.frame_acc)
        _check_fraction(f"table1 {s}.wer", self.wer, top=10.0)
        check_number(f"table1 {s}.params", self.params)
        if s == "baseline_mean":
            for k in ("frame_acc_std", "wer_std"):
                if getattr(self, k) is ABSENT:
                    raise ReportError(f"table1 baseline_mean: missing {k!r}")
                check_number(f"table1 baseline_mean.{k}", getattr(self, k))
        _check_interval(f"table1 {s}.wer_ci", self.wer_ci)

    def decoded_systems(self) -> list[str]:
        """The decoded system(s) behind the row (baseline_mean: every teacher)."""
        if self.system == "baseline":
            return ["teacher-0"]
        if self.system == "baseline_mean":
            return [f"teacher-{k}" for k in range(self.num_teachers)]
        return [self.system]


@dataclasses.dataclass
class Table5Row(Row):
    """A run of Table 5 (baseline_100, baseline_3, soft_3): train and test frame accuracy, WER."""

    system: str
    train_frame_acc: float | None
    test_frame_acc: float | None
    wer: float | None
    decoded_as: str = ABSENT  # the decoded system: baseline_100 may be teacher 0
    epochs: float | None = ABSENT
    wer_ci: Interval | None = ABSENT
    test_frame_acc_ci: Interval = ABSENT

    def __post_init__(self) -> None:
        if self.system not in TABLE5_RUNS:
            raise ReportError(f"table5: unknown system {self.system!r}")
        for k in ("train_frame_acc", "test_frame_acc"):
            _check_fraction(f"table5 {self.system}.{k}", getattr(self, k))
        _check_fraction(f"table5 {self.system}.wer", self.wer, top=10.0)
        _check_interval(f"table5 {self.system}.wer_ci", self.wer_ci)

    def decoded_systems(self) -> list[str]:
        return [self.system if self.decoded_as is ABSENT else self.decoded_as]


@dataclasses.dataclass
class GmmRow(Row):
    """A GMM-HMM of the align stage: size, Viterbi log-likelihood per frame, dev and test WER."""

    system: str
    context: str | None
    num_pdfs: int | None
    num_gaussians: int | None
    train_loglike_per_frame: float | None
    dev_loglike_per_frame: float | None
    dev_wer: float | None
    wer: float | None
    acoustic_scale: float | None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self)[2:]:
            check_number(f"gmm_systems {self.system}.{f.name}", getattr(self, f.name))


@dataclasses.dataclass
class GmmBaseline(Row):
    """The triphone GMM-HMM's test WER: the sanity baseline."""

    wer: float | None
    acoustic_scale: float | None


# ---------------------------------------------------------------------------------------------
# The effects, with their intervals
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class PairedTest(Row):
    """WER of ``systems[0]`` minus ``systems[1]``, its interval and p-value (paired bootstrap)."""

    systems: list[str]
    metric: str
    difference: float
    ci: Interval | None
    p_value: float


@dataclasses.dataclass
class BootstrapInfo(Row):
    resamples: int
    test_utterances: int
    unit: str


@dataclasses.dataclass
class GroupRow:
    """One group of the test set (e.g. a synthesizer's voices): utterances and, per system label
    (mean_teacher, ensemble, best_student), ``{"wer": ..., "wer_ci": [low, high]}``."""

    group: str
    utterances: int
    wer: dict[str, dict[str, Any]]

    def json_row(self, kind: str) -> dict[str, Any]:
        return {kind: self.group, "utterances": self.utterances, **self.wer}

    @classmethod
    def from_row(cls, kind: str, obj: dict[str, Any]) -> GroupRow:
        rest = {k: v for k, v in obj.items() if k not in (kind, "utterances")}
        return cls(obj[kind], obj["utterances"], rest)


@dataclasses.dataclass
class ByGroup:
    """The test WER per group of the test set; ``kind``: what the corpus groups by."""

    kind: str
    rows: list[GroupRow]


@dataclasses.dataclass
class ErrorDiff(Row):
    """Where two systems' test errors differ (:mod:`.errors`): ``systems`` = [ensemble, student];
    errors by kind; reference words wrong in both or in one only; the words with the largest net
    difference (``[word, wrong only in the student, wrong only in the ensemble]``); and the error
    rates on words the training transcripts held against words they never did."""

    systems: list[str]
    utterances: int
    ref_words: int
    by_kind: dict[str, dict[str, int]]
    wrong_in_both: int
    wrong_only_in: dict[str, int]
    words_worse: list[list]  # the student's extra errors, by word
    words_better: list[list]  # the ensemble's extra errors, by word
    by_training_words: dict[str, dict[str, int]] = ABSENT


@dataclasses.dataclass
class Derived(Row):
    """The effects the paper reports: the share of the ensemble's gain the best student keeps, the
    share of the 3%-vs-100% gap soft targets recover; with intervals, paired tests and the WER per
    group of the test set where the bootstrap ran."""

    best_student: str = ABSENT  # best dev frame accuracy
    ensemble_gain: float = ABSENT
    student_gain: float = ABSENT
    gain_kept: float | None = ABSENT
    gain_kept_same_rule: float | None = ABSENT  # from Table 5's baseline_100 trained by the students' rule
    table5_gap: float = ABSENT
    gap_recovered: float | None = ABSENT
    paper: dict[str, float] = ABSENT
    bootstrap: BootstrapInfo = ABSENT
    gain_kept_ci: Interval | None = ABSENT
    gain_kept_same_rule_ci: Interval | None = ABSENT
    gap_recovered_ci: Interval | None = ABSENT
    paired_tests: dict[str, PairedTest] = ABSENT
    test_by: ByGroup = ABSENT  # report.json: test_by_<kind>
    wer_resolution_rel: float = ABSENT
    # The same effects in WER: the share of the ensemble's WER gain over the mean teacher the best
    # student keeps, and the share of the 3%-vs-100% WER gap soft targets recover
    ensemble_wer_gain: float = ABSENT
    wer_gain_kept: float | None = ABSENT
    wer_gain_kept_ci: Interval | None = ABSENT
    table5_wer_gap: float = ABSENT
    wer_gap_recovered: float | None = ABSENT
    wer_gap_recovered_ci: Interval | None = ABSENT
    # The WER effect measured from Table 5's baseline_100 when it is trained by the students' rule
    # (distill.baseline_100 = "train"): the ensemble's WER gain over that model and the share of it
    # the best student keeps (None: the ensemble is no better than it)
    ensemble_wer_gain_same_rule: float = ABSENT
    wer_gain_kept_same_rule: float | None = ABSENT
    wer_gain_kept_same_rule_ci: Interval | None = ABSENT
    errors: ErrorDiff = ABSENT  # where the best student's test errors differ from the ensemble's

    NESTED = {"bootstrap": ("one", BootstrapInfo), "paired_tests": ("map", PairedTest), "errors": ("one", ErrorDiff)}

    def __post_init__(self) -> None:
        for name in ("gain_kept_ci", "gain_kept_same_rule_ci", "gap_recovered_ci", "wer_gain_kept_ci",
                     "wer_gap_recovered_ci", "wer_gain_kept_same_rule_ci"):
            _check_interval(f"derived.{name}", getattr(self, name))

    def to_json(self) -> dict[str, Any]:
        out = {}
        for k, v in super().to_json().items():
            if k == "test_by":
                k, v = f"test_by_{v.kind}", [r.json_row(v.kind) for r in v.rows]
            out[k] = v
        return out

    @classmethod
    def from_json(cls, obj: Any, where: str | None = None) -> Derived:
        if not isinstance(obj, dict):
            raise ReportError(f"derived: expected an object, got {obj!r}")
        kind = next((k[len("test_by_"):] for k in obj if k.startswith("test_by_")), None)
        if kind is None:
            return super().from_json(obj, "derived")
        rest = {k: v for k, v in obj.items() if k != f"test_by_{kind}"}
        out = super().from_json(rest, "derived")
        out.test_by = ByGroup(kind, [GroupRow.from_row(kind, r) for r in obj[f"test_by_{kind}"]])
        return out


# ---------------------------------------------------------------------------------------------
# Test conditions
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ConditionCell(Row):
    """A system (mean teacher, ensemble, best student) on a test set."""

    systems: list[str] = ABSENT
    acoustic_scales: list[float] = ABSENT
    wer: float | None = ABSENT
    wer_ci: Interval | None = ABSENT
    frame_acc: float | None = ABSENT
    frame_acc_ci: Interval | None = ABSENT
    wer_by_scale: dict[str, float] = ABSENT
    wer_std: float = ABSENT


@dataclasses.dataclass
class Condition(Row):
    """A test set (the usual one; the conditions stage's extra ones, e.g. test-other): the mean
    teacher, the ensemble and the best student, the ensemble's gain and the share the student keeps."""

    condition: str
    utterances: int | None = ABSENT
    speakers: int = ABSENT
    labelled_utterances: int = ABSENT
    best_student: str = ABSENT
    scales_from: list[str] = ABSENT
    mean_teacher: ConditionCell = ABSENT
    ensemble: ConditionCell = ABSENT
    student: ConditionCell = ABSENT
    ensemble_wer_gain: float = ABSENT
    ensemble_wer_gain_ci: Interval | None = ABSENT
    wer_gain_kept: float | None = ABSENT
    wer_gain_kept_ci: Interval | None = ABSENT
    ensemble_frame_acc_gain: float = ABSENT
    ensemble_frame_acc_gain_ci: Interval | None = ABSENT
    gain_kept: float | None = ABSENT
    gain_kept_ci: Interval | None = ABSENT
    lm: dict[str, Any] = ABSENT  # the condition's OOV rate and perplexity (report.json's lm has them)

    NESTED = {k: ("one", ConditionCell) for k in ("mean_teacher", "ensemble", "student")}


# ---------------------------------------------------------------------------------------------
# Corpus, labels, LM, the report
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class CorpusSplit(Row):
    """What training used of a split (the shards; prepare's list before the shards stage)."""

    hours: float | None
    utterances: int | None
    speakers: int | None
    listed_by_prepare: int | None = ABSENT
    counted_from: str = ABSENT


@dataclasses.dataclass
class Corpus(Row):
    """Per split: what training used, and the account of every utterance lost (asr_kd.accounting)."""

    splits: dict[str, CorpusSplit] = dataclasses.field(default_factory=dict)
    lost: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    lost_total: int = ABSENT
    skipped: dict[str, Any] = ABSENT
    skipped_total: int | None = ABSENT
    lm_text: str | None = ABSENT

    NESTED = {"splits": ("map", CorpusSplit)}


@dataclasses.dataclass
class Labels(Row):
    """The DNN's labels: the last GMM-HMM's pdfs."""

    num_pdfs: int | None = ABSENT
    context: str | None = ABSENT
    source: str | None = ABSENT


LM_METRICS = ("tokens", "oov_tokens", "oov_rate", "perplexity")


@dataclasses.dataclass
class LmSection(Row):
    """The decoding LM as LibriSpeech papers report it: ``source``, ``order``, ``vocabulary_size``
    (the words the graph can output: the LM's plus the training transcripts', never dev or test's),
    ``vocabulary_rule``, and per metric a map split -> value: ``tokens``, ``oov_tokens`` and
    ``oov_rate`` (transcript tokens outside the vocabulary, each a word error no search avoids),
    ``perplexity`` (SRILM's: OOVs not scored, ``</s>`` counted; null when nothing could be scored).
    E.g. ``lm.oov_rate.test``, ``lm.perplexity.dev``; the extra test sets under their names."""

    source: str | None = None
    order: int | None = None
    vocabulary_size: int | None = None
    vocabulary_rule: str | None = None
    tokens: dict[str, int] = None  # type: ignore[assignment]
    oov_tokens: dict[str, int] = None  # type: ignore[assignment]
    oov_rate: dict[str, float] = None  # type: ignore[assignment]
    perplexity: dict[str, float | None] = None  # type: ignore[assignment]

    WHERE = "lm"

    def __post_init__(self) -> None:
        check_number("lm.vocabulary_size", self.vocabulary_size)
        for metric in LM_METRICS:
            per_split = getattr(self, metric)
            if not isinstance(per_split, dict):
                raise ReportError(f"lm.{metric}: expected {{split: value}}, got {per_split!r}")
            for split, value in per_split.items():
                check_number(f"lm.{metric}.{split}", value, allow_none=metric == "perplexity")
                if metric == "oov_rate" and not 0.0 <= value <= 1.0:
                    raise ReportError(f"lm.oov_rate.{split}={value}: rates are fractions")
                if metric == "perplexity" and value is not None and value < 1.0:
                    raise ReportError(f"lm.perplexity.{split}={value}: a perplexity is at least 1")


@dataclasses.dataclass
class TrainCurve:
    """A training run's dev checks (its metrics' ``history``, a row per check) and the check the
    decoded model is from (``best_epoch``, in the history's count of passes); not in report.json."""

    history: list[dict[str, Any]]
    best_epoch: int | None = None


UNITS = "fractions (frame_acc and wer in [0, 1]; wer can exceed 1); frame accuracy on the test split"


@dataclasses.dataclass
class Report(Row):
    """report.json."""

    units: str = UNITS
    table1: list[Table1Row] = dataclasses.field(default_factory=list)
    table5: list[Table5Row] = dataclasses.field(default_factory=list)
    gmm: GmmBaseline | None = ABSENT
    gmm_systems: list[GmmRow] = ABSENT
    derived: Derived = dataclasses.field(default_factory=Derived)
    corpus: Corpus = dataclasses.field(default_factory=Corpus)
    labels: Labels = dataclasses.field(default_factory=Labels)
    graph: dict[str, Any] = ABSENT  # the graph stage's summary
    lm: LmSection | None = ABSENT
    timing: dict[str, float | None] = dataclasses.field(default_factory=dict)  # wall seconds per stage
    timing_parts: dict[str, dict[str, float]] = ABSENT  # the optional work inside a stage's time
    deployment: dict[str, Any] | None = ABSENT  # the export stage's summary
    conditions: list[Condition] = ABSENT
    preset: str = ABSENT
    subset_fraction: float = ABSENT

    NESTED = {"table1": ("list", Table1Row), "table5": ("list", Table5Row), "gmm": ("one", GmmBaseline),
              "gmm_systems": ("list", GmmRow), "derived": ("one", Derived), "corpus": ("one", Corpus),
              "labels": ("one", Labels), "lm": ("one", LmSection), "conditions": ("list", Condition)}
    REQUIRED: ClassVar[tuple[str, ...]] = ("table1", "table5", "corpus", "labels", "timing")

    def __post_init__(self) -> None:
        if not isinstance(self.timing, dict):
            raise ReportError("timing: expected {stage: seconds}")
        for stage, secs in self.timing.items():
            check_number(f"timing.{stage}", secs)

    @classmethod
    def from_json(cls, obj: Any, where: str | None = None) -> Report:
        """The report a report.json holds; :class:`ReportError` names the first place it breaks the schema."""
        for key in cls.REQUIRED:
            if not isinstance(obj, dict) or key not in obj:
                raise ReportError(f"report: missing key {key!r}")
        return super().from_json(obj, "report")
