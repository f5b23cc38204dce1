"""The recipe's configuration: one frozen tree of dataclasses, presets, and type-checked overrides.

A preset (``asr_kd/presets/<name>.toml``, shipped as package data) lists only the values that
differ from the defaults below, or (``extends = "<preset>"``) from another preset's. Command-line overrides look like ``--set train.lr=0.05`` or
``--set distill.temperatures=1,2,5``; an unknown key or a value of the wrong type is an error
that names the key.

A field's ``metadata`` tells how finished work is keyed (:mod:`asr_kd.work`): ``WHERE`` (where or
how fast work runs; it never makes finished work stale) and ``ADDED`` (an option added after runs
were made; at its default, the work those runs did).
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from asr_kd import retired
from asr_kd.work import ADDED, WHERE

PRESETS = ("smoke", "tiny", "tiny-wer", "librispeech-100h", "paper")
DEFAULT_PRESET = "tiny"


class ConfigError(ValueError):
    """A preset or override that does not fit the config tree."""


@dataclass(frozen=True)
class DataConfig:
    # A LibriSpeech-layout root (--data-root). "" = the embedded synthetic corpus, generated once
    # under <synthetic_dir>/synthetic-<size>-seed<seed> with subsets train-synth/dev-synth/test-synth.
    root: str = ""
    # How the root is laid out: librispeech | kaldi (data dirs with wav.scp, text, utt2spk) |
    # lhotse (recordings + supervisions manifests, or cuts) | auto: kaldi when the root or a
    # directory in it holds a wav.scp, lhotse when the root holds *recordings_*/*supervisions_*/
    # *cuts_*.jsonl[.gz] files, else librispeech (data_prep.formats.detect_format).
    format: str = "auto"
    synthetic_size: str = "tiny"  # smoke | tiny | tiny-wer | small
    synthetic_seed: int = 0
    synthetic_dir: str = "data"  # corpus goes to <synthetic_dir>/synthetic-<size>-seed<seed>
    # The synthetic corpus's sentences: "template" (data_prep.synthetic_text's grammar, 774 words) or
    # "books" (Jane Austen's novels, data_prep.book_text: real prose, a 13,500-word LM text,
    # dev and test from held-out chapters; needs `apt-get install --no-install-recommends
    # r-cran-janeaustenr` and data.oov_policy g2p or skip, as CMUdict lacks some of its words); the
    # books corpus lives in <synthetic_dir>/synthetic-<size>-seed<seed>-books.
    synthetic_text: str = field(default="template", metadata=ADDED)
    # What makes each split, relative to the root: LibriSpeech subset directories, Kaldi data dirs,
    # or lhotse part names (cuts_<part>.jsonl.gz ...) / manifest files. Empty = the corpus's own:
    # train-synth/dev-synth/test-synth for a synthetic corpus (recognised by its marker), LibriSpeech's
    # train-clean-100/dev-clean/test-clean, or train/dev/test for Kaldi and lhotse. A value given
    # (preset or --set) always wins.
    train_subsets: tuple[str, ...] = ()
    dev_subsets: tuple[str, ...] = ()
    test_subsets: tuple[str, ...] = ()
    # Extra test sets beside the test split (LibriSpeech: dev-other and test-other beside dev-clean and
    # test-clean): each named subset (a LibriSpeech subset dir, Kaldi data dir or lhotse part of the
    # root) is read by the conditions stage and decoded there, every system at the scale it chose on
    # dev, and reported beside test (report.md's test conditions; its OOV rate and perplexity in lm).
    extra_test_subsets: tuple[str, ...] = field(default=(), metadata=ADDED)
    max_utts_per_split: int = 0  # 0 = all; a cap for quick runs on real data
    sample_rate: int = 16000
    # Words without a lexicon pronunciation: g2p (espeak-ng pronounces them; utterances kept, the
    # words listed in lang/lexicon_g2p.txt) | skip (their utterances skipped, counted) | error.
    # The synthetic corpus has none.
    oov_policy: str = "g2p"
    extra_lexicon: str = ""  # optional LibriSpeech-style lexicon file (WORD PH1 PH2 ...)
    lm_text: str = ""  # LM training text, one sentence a line; "" = corpus default if any
    # The decoding vocabulary (asr_kd.data.vocab) is the LM's words plus the training transcripts',
    # never dev or test's: decode.arpa's words when given, else the LM text's, capped here at its
    # N most frequent words (as Kaldi/icefall's 200k for librispeech-lm-norm.txt); 0 = every word.
    lm_vocab_size: int = field(default=0, metadata=ADDED)
    def __post_init__(self) -> None:
        _check_choice("data.oov_policy", self.oov_policy, ("g2p", "skip", "error"))
        if self.lm_vocab_size < 0:
            raise ConfigError(f"data.lm_vocab_size={self.lm_vocab_size}: a number of words (0 = every word "
                              "of the LM text)")

        _check_choice("data.format", self.format, ("auto", "librispeech", "kaldi", "lhotse"))
        if self.format in ("kaldi", "lhotse") and not self.root:
            raise ConfigError(f"data.format={self.format} reads your corpus: pass --data-root with it "
                              "(without --data-root the recipe uses the synthetic corpus, in LibriSpeech layout)")
        _check_choice("data.synthetic_size", self.synthetic_size, ("smoke", "tiny", "tiny-wer", "small"))
        _check_choice("data.synthetic_text", self.synthetic_text, ("template", "books"))
        if self.synthetic_text == "books" and not self.root and self.oov_policy == "error":
            raise ConfigError("data.synthetic_text=books: the novels have words CMUdict lacks; use "
                              "data.oov_policy=g2p (the default) or skip, not error")


@dataclass(frozen=True)
class AugmentConfig:
    """Training-data augmentation in the prepare stage (asr_kd.data.augment): copies with new ids
    and speakers, train split only, seeded. Off by default."""

    # Speed-perturbed copies, one per factor other than 1.0 (Kaldi: 0.9 1.0 1.1).
    speeds: tuple[float, ...] = ()
    # Copies of each original in a simulated room (RT60 drawn from rt60_s) with coloured noise
    # (white / pink / brown) at an SNR drawn from snr_db.
    reverb_copies: int = 0
    # Copies with pitch and formants shifted (duration kept) by cents drawn from pitch_cents.
    pitch_copies: int = 0
    pitch_cents: tuple[float, ...] = (-500.0, 500.0)
    rt60_s: tuple[float, ...] = (0.2, 0.7)
    snr_db: tuple[float, ...] = (8.0, 25.0)
    seed: int = 0
    num_workers: int = field(default=2, metadata=WHERE)

    def __post_init__(self) -> None:
        if any(f <= 0.5 or f >= 2.0 for f in self.speeds):
            raise ConfigError(f"augment.speeds must lie between 0.5 and 2.0, got {self.speeds}")
        if self.reverb_copies < 0:
            raise ConfigError(f"augment.reverb_copies must be >= 0, got {self.reverb_copies}")
        if self.pitch_copies < 0:
            raise ConfigError(f"augment.pitch_copies must be >= 0, got {self.pitch_copies}")
        for key in ("rt60_s", "snr_db", "pitch_cents"):
            r = getattr(self, key)
            if len(r) != 2 or r[0] > r[1]:
                raise ConfigError(f"augment.{key} must be a range [low, high], got {list(r)}")
        if self.rt60_s[0] <= 0:
            raise ConfigError(f"augment.rt60_s must be positive seconds, got {list(self.rt60_s)}")

    @property
    def enabled(self) -> bool:
        return any(f != 1.0 for f in self.speeds) or self.reverb_copies > 0 or self.pitch_copies > 0


@dataclass(frozen=True)
class FeatureConfig:
    num_mel_bins: int = 40
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    num_ceps: int = 13  # MFCC for the GMM aligner
    cmvn: str = "speaker"  # speaker | global | none (applied to the DNN's fbank features)
    storage_dtype: str = "float16"  # dtype of features inside the shards
    num_workers: int = field(default=2, metadata=WHERE)

    def __post_init__(self) -> None:
        _check_choice("features.cmvn", self.cmvn, ("speaker", "global", "none"))
        _check_choice("features.storage_dtype", self.storage_dtype, ("float16", "float32"))


@dataclass(frozen=True)
class LangConfig:
    position_dependent_phones: bool = False
    sil_prob: float = 0.5  # optional-silence probability between words in L.fst


@dataclass(frozen=True)
class AlignConfig:
    source: str = "builtin"  # builtin | kaldi
    kaldi_ali_dir: str = ""  # with source=kaldi: a Kaldi exp dir (final.mdl + ali.*.gz) or pdf text/ark
    # With source=kaldi: Kaldi's data/lang the model was trained with ("" = the lang files beside
    # final.mdl if it has them, else our lang/ checked against its phones.txt); the graph uses it.
    kaldi_lang_dir: str = ""
    context: str = "monophone"  # monophone | triphone
    mono_iters: int = 25
    mono_gaussians: int = 1000
    tri_leaves: int = 500
    tri_gaussians: int = 4000
    tri_iters: int = 10
    # Decision tree (asr_kd.align.tree): frames each side of a split must keep; leaf merging after the
    # splits (loss threshold; <0 = the smallest split gain, 0 = off); question sets from
    # likelihood-based phone clustering ("auto"), the ARPAbet class table ("table"), or "both".
    tree_min_count: int = 50
    tree_merge_threshold: float = -1.0
    tree_questions: str = "both"
    beam: float = 10.0
    retry_beam: float = 40.0
    # Final alignment of every split (the DNN labels): an utterance that fails at retry_beam is
    # tried once more with this beam (held-out voices are far from a small training set); 0 = off.
    final_beam: float = 500.0
    boost_silence: float = 1.0
    max_fail_fraction: float = field(default=0.01, metadata=WHERE)  # a check on the result, not the result
    num_jobs: int = field(default=2, metadata=WHERE)
    # Bounded memory (Kaldi's LibriSpeech recipe: monophone on the 2k shortest, triphones on more):
    # the monophone trains on the mono_utts shortest train utterances, the triphone system on
    # tri_utts spread evenly over train (0 = all); the final pass aligns every split in chunks of
    # chunk_utts utterances, num_jobs chunks at a time (0 = each split whole, in memory).
    mono_utts: int = 0
    tri_utts: int = 0
    chunk_utts: int = 0

    def __post_init__(self) -> None:
        _check_choice("align.source", self.source, ("builtin", "kaldi"))
        _check_choice("align.context", self.context, ("monophone", "triphone"))
        _check_choice("align.tree_questions", self.tree_questions, ("auto", "table", "both"))
        for key in ("mono_utts", "tri_utts", "chunk_utts"):
            if getattr(self, key) < 0:
                raise ConfigError(f"align.{key} must be >= 0 (0 = all), got {getattr(self, key)}")


@dataclass(frozen=True)
class ShardConfig:
    max_utts_per_shard: int = 500


@dataclass(frozen=True)
class ModelConfig:
    """A feed-forward acoustic DNN: (left + 1 + right) x num_mel_bins inputs, ReLU hidden layers."""

    hidden_layers: int = 4
    hidden_dim: int = 512
    dropout: float = 0.0
    left_context: int = 20
    right_context: int = 5


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = "adam"  # adam | sgd
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    warmup_steps: int = 200
    lr_schedule: str = "cosine"  # cosine | newbob | constant
    min_lr_ratio: float = 0.02  # cosine decays to lr * min_lr_ratio
    newbob_threshold: float = 0.005  # newbob: halve once dev frame acc improves less than this per epoch
    # newbob: once halving, stop when an epoch improves the best dev frame acc by less than this
    # (Kaldi nnet1's end_halving_impr); 0 = run to max_epochs
    newbob_stop_threshold: float = 0.0
    batch_size: int = 256
    max_epochs: int = 4
    early_stopping_patience: int = 0  # 0 = off; in epochs of no dev improvement
    # last.ckpt is written at every epoch end and, inside an epoch, every checkpoint_every_s seconds
    # of training (or every checkpoint_every_n_steps steps when > 0), so a killed run resumes there
    checkpoint_every_n_steps: int = field(default=0, metadata=WHERE)
    checkpoint_every_s: float = field(default=300.0, metadata=WHERE)
    in_memory_max_frames: int = 5_000_000  # smaller training sets are loaded into memory, not streamed
    eval_max_frames: int = 2_000_000  # cap on frames for the final train-set frame accuracy (0 = all)
    shuffle_buffer_utts: int = 200
    num_workers: int = field(default=0, metadata=WHERE)
    seed: int = 0
    # On-the-fly augmentation of the training windows (asr_kd.data.augment.spec_augment): a VTLP
    # frequency warp by a factor within 1 +- freq_warp, then SpecAugment-style masks of up to
    # specaug_freq_width mel bins and specaug_time_width frames. Off by default (0).
    freq_warp: float = 0.0
    specaug_freq_masks: int = 0
    specaug_freq_width: int = 8
    specaug_time_masks: int = 0
    specaug_time_width: int = 3
    # Lightning Trainer pass-through
    accelerator: str = field(default="auto", metadata=WHERE)
    devices: str = field(default="1", metadata=WHERE)  # an int as text, or "auto"
    num_nodes: int = field(default=1, metadata=WHERE)
    strategy: str = field(default="auto", metadata=WHERE)  # auto | ddp | ...
    # auto: bf16-mixed where the device runs bf16 fast (GPU; CPU with AMX/AVX512-BF16), else 32-true
    # (asr_kd.nn.precision); or a Lightning precision: 32-true | bf16-mixed | 16-mixed
    precision: str = "auto"
    log_every_n_steps: int = field(default=50, metadata=WHERE)

    def __post_init__(self) -> None:
        _check_choice("train.optimizer", self.optimizer, ("adam", "sgd"))
        _check_choice("train.lr_schedule", self.lr_schedule, ("cosine", "newbob", "constant"))
        if not 0.0 <= self.freq_warp < 0.5:
            raise ConfigError(f"train.freq_warp must lie in [0, 0.5), got {self.freq_warp}")
        for key in ("specaug_freq_masks", "specaug_freq_width", "specaug_time_masks", "specaug_time_width"):
            if getattr(self, key) < 0:
                raise ConfigError(f"train.{key} must be >= 0, got {getattr(self, key)}")


def train_world_size(train: TrainConfig) -> int:
    """How many processes a training run is spread over: ``WORLD_SIZE`` of a launched job (torchrun,
    srun, or the processes Lightning starts), else ``train.devices`` x ``train.num_nodes`` (a
    count, or a list "0,1"; "auto" / "-1": every visible GPU where the accelerator may take one,
    else one process)."""
    import os

    if os.environ.get("WORLD_SIZE", "").isdigit():
        return int(os.environ["WORLD_SIZE"])
    from asr_kd.parallel import devices_per_node

    per_node = devices_per_node(train.accelerator, train.devices)
    return max(per_node, 1) * max(train.num_nodes, 1)


def global_batch_size(train: TrainConfig) -> int:
    """``train.batch_size`` is per process (as a Lightning DataLoader's is); the optimiser sees this
    many windows per step."""
    return train.batch_size * train_world_size(train)


def train_work(train: TrainConfig) -> TrainConfig:
    """``train`` as training results depend on it (what run keys and stage markers hold): its
    ``batch_size`` is the global batch (per-process batch x processes), so 2 processes of 128 train
    what 1 of 256 trains, and 2 of 256 do not (going from 1 device to 2 retrains). Where the
    training runs (devices, workers, logging) is left out of its record (``asr_kd.work.WHERE``)."""
    return dataclasses.replace(train, batch_size=global_batch_size(train))


@dataclass(frozen=True)
class TeachersConfig:
    num_teachers: int = 10
    stacked: bool = True  # train all K in one batched model on one device
    seed_base: int = 1000  # teacher k gets seed seed_base + k
    only: int = field(default=-1, metadata=WHERE)  # >= 0: train only teacher k (one task of a cluster job array); -1 = all


TARGET_MODES = ("online", "cached", "stored")


@dataclass(frozen=True)
class DistillConfig:
    temperatures: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0)
    hard_weight: float = 0.5
    ensemble_mean: str = "arithmetic"  # arithmetic | geometric
    student_hidden_layers: int = 0  # 0 = same as the teachers
    student_hidden_dim: int = 0  # 0 = same as the teachers
    student_max_epochs: int = 0  # epochs of each distilled student; 0 = train.max_epochs (as the teachers)
    # The rule students, Table-5 runs and a baseline_100=train run are trained by ("" / < 0: train's):
    # e.g. newbob with a stop threshold trains each to convergence on dev, capped by its max epochs.
    lr_schedule: str = ""
    newbob_stop_threshold: float = -1.0
    subset_hard_weight: float = -1.0  # hard-target weight of the Table-5 soft_3 run; < 0 = hard_weight
    subset_fraction: float = 0.03  # Table 5: fraction of the training set
    # What the fraction is of: whole utterances, or windows (training examples) drawn from every
    # utterance, as 3 % of a 2,000-hour corpus still spans all of its speakers.
    subset_unit: str = "utterances"  # utterances | frames
    subset_seed: int = 7
    subset_max_epochs: int = 0  # 0 = same as train.max_epochs
    # Passes over the Table-5 subset per epoch (dev check, schedule step, early-stopping unit);
    # 0 = round(1 / subset_fraction), i.e. the steps of one full-data epoch.
    subset_passes_per_epoch: int = 1
    # Where the students' soft targets p_ens(T) come from: online (the frozen ensemble in every
    # training step) | cached (dense, in memory, computed once: small corpora only) | stored (one
    # pass of the ensemble writes top-k + tail-mass targets for every T as shards under
    # distill/targets/, aligned with the training shards; read beside them, any corpus size).
    targets: str = "online"
    # The old spelling of targets=cached: with targets=online, cache_targets=true means cached.
    cache_targets: bool = False
    # stored: the k most probable states kept per frame and T (the rest: one tail bucket). 64: students
    # from top-64 targets matched dense ones, top-16 lost 0.3-0.5 points (benchmarks/README.md)
    targets_k: int = 64
    matching_logits: bool = False  # also train the high-T limit (L2 on logits)
    # The students of every temperature trained as one batched model (as teachers.stacked): each gets
    # the gradient it would get alone, but they share one newbob schedule (on their mean dev frame
    # accuracy) and one stop. On 2 CPU cores four 3 x 320 students train ~1.4x faster so (with cached or
    # stored targets: with targets=online each member's targets still cost one ensemble forward).
    stacked: bool = field(default=False, metadata=ADDED)
    subset_temperature: float = 0.0  # T of the Table-5 soft_3 run; 0 = the student T best on dev
    subset_early_stopping_patience: int = 2  # Table-5 baseline_3: epochs without dev gain before stopping
    baseline_100: str = "teacher0"  # teacher0 (reuse teacher 0) | train (a fresh hard-target run)

    @property
    def target_mode(self) -> str:
        """online | cached | stored: ``targets``, with ``cache_targets=true`` read as cached."""
        return "cached" if self.targets == "online" and self.cache_targets else self.targets

    @property
    def trains_baseline_100(self) -> bool:
        """Whether Table 5's 100 % baseline is a run of its own (``baseline_100 = "train"``) rather
        than teacher 0. The config decides, not a model file left by an earlier run."""
        return self.baseline_100 == "train"

    def trains_table5_run(self, name: str) -> bool:
        """Whether Table 5's run ``name`` is a model of its own: baseline_3 and soft_3 always,
        baseline_100 only when :attr:`trains_baseline_100` (otherwise it is teacher 0)."""
        return name != "baseline_100" or self.trains_baseline_100

    @property
    def subset_period(self) -> int:
        """Passes over the Table-5 subset per (dev-checked) epoch: ``subset_passes_per_epoch``, 0 read
        as round(1 / subset_fraction), the steps of one full-data epoch."""
        passes = self.subset_passes_per_epoch
        return passes if passes > 0 else max(1, round(1.0 / self.subset_fraction))

    def __post_init__(self) -> None:
        _check_choice("distill.ensemble_mean", self.ensemble_mean, ("arithmetic", "geometric"))
        _check_choice("distill.baseline_100", self.baseline_100, ("teacher0", "train"))
        _check_choice("distill.subset_unit", self.subset_unit, ("utterances", "frames"))
        _check_choice("distill.lr_schedule", self.lr_schedule, ("", "cosine", "newbob", "constant"))
        _check_choice("distill.targets", self.targets, TARGET_MODES)
        if self.targets_k < 1:
            raise ConfigError(f"distill.targets_k must be >= 1, got {self.targets_k}")
        if not 0.0 <= self.hard_weight <= 1.0:
            raise ConfigError(f"distill.hard_weight must be in [0, 1], got {self.hard_weight}")
        if not 0.0 < self.subset_fraction <= 1.0:
            raise ConfigError(f"distill.subset_fraction must be in (0, 1], got {self.subset_fraction}")


@dataclass(frozen=True)
class DecodeConfig:
    lm_order: int = 3
    arpa: str = field(default="", metadata=ADDED)  # a user-supplied ARPA LM; "" = estimate one from the LM text
    beam: float = 13.0
    max_active: int = 7000
    lattice_beam: float = 6.0  # decoder=lattice only
    # Kaldi's FasterDecoder (faster: the best path, as decode-faster) or LatticeFasterDecoder (lattice:
    # latgen-faster's lattice, then its best path). The WER needs the best path only. At the same beam,
    # in the stage's pool of 2 search processes on 2 cores the lattice decoder searched ~1.9x slower
    # (one process alone: 1.0-1.2x); the tiny demo's report is the same with either (benchmarks/README.md,
    # "Decoding"). Runs decoded before this option used lattice.
    decoder: str = "faster"
    acoustic_scales: tuple[float, ...] = (0.05, 0.08, 0.1, 0.12, 0.15, 0.2)
    self_loop_scale: float = 0.1
    num_jobs: int = field(default=2, metadata=WHERE)  # decoder processes (search only; the network forward uses torch's threads)
    teachers: str = "all"  # all | first: decode every teacher (mean/std of WER) or teacher 0 only
    # each | first: every teacher's acoustic scale chosen on dev, or teacher 0's used for all ten
    # (they differ only by initialisation; "first" skips 9 dev grid searches; every other system,
    # the ensemble included, still chooses its own)
    teacher_scale: str = "each"
    # each | best: every student's acoustic scale chosen on dev, or the best student's (on dev frame
    # accuracy, the one Table 1 reports) used for the students of the other temperatures
    student_scale: str = field(default="each", metadata=ADDED)
    tune_max_utts: int = 0  # dev utterances used to choose the acoustic scale (0 = all)
    # which ones: first (the first in shard order) | seeded (a fixed seeded draw from the sorted
    # ids: the same subset every run, spread over the speakers of a speaker-sorted dev set)
    tune_draw: str = field(default="first", metadata=ADDED)
    # Utterances whose posteriors are held (and searched) at once; each finished chunk leaves a
    # receipt a killed decode resumes from. Where, not what: not hashed.
    chunk_utts: int = field(default=64, metadata=WHERE)
    # The GMM-HMMs of the align stage are decoded too, with their own scale grid (GMM likelihoods
    # are far sharper than DNN posteriors); with align.context=triphone the monophone system it was
    # built from as well (gmm_monophone: the graph stage builds its HCLG in graph/mono).
    gmm_acoustic_scales: tuple[float, ...] = (0.05, 0.065, 0.08, 0.1)
    gmm_monophone: bool = True

    def __post_init__(self) -> None:
        _check_choice("decode.teachers", self.teachers, ("all", "first"))
        _check_choice("decode.decoder", self.decoder, ("faster", "lattice"))
        _check_choice("decode.teacher_scale", self.teacher_scale, ("each", "first"))
        _check_choice("decode.student_scale", self.student_scale, ("each", "best"))
        _check_choice("decode.tune_draw", self.tune_draw, ("first", "seeded"))
        if self.tune_max_utts < 0:
            raise ConfigError(f"decode.tune_max_utts must be >= 0 (0 = all of dev), got {self.tune_max_utts}")
        if self.chunk_utts < 1:
            raise ConfigError(f"decode.chunk_utts must be >= 1, got {self.chunk_utts}")
        for key in ("acoustic_scales", "gmm_acoustic_scales"):
            grid = getattr(self, key)
            if not grid or min(grid) <= 0:
                raise ConfigError(f"decode.{key} must be positive numbers, got {grid}")
        if self.lm_order < 1:
            raise ConfigError(f"decode.lm_order must be >= 1, got {self.lm_order}")


@dataclass(frozen=True)
class RecipeConfig:
    preset: str = DEFAULT_PRESET
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    lang: LangConfig = field(default_factory=LangConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    teachers: TeachersConfig = field(default_factory=TeachersConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` (from TOML or a command-line string) to type ``tp`` or raise naming ``key``."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        (elem, _ellipsis) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip() != ""]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} expects a list, got {value!r}")
        return tuple(_coerce(key, v, elem) for v in value)
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{key}: optional types are not used in this config")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{key} expects true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key} expects an integer, got {value!r}")
        try:
            if isinstance(value, str):
                return int(value.strip())
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except ValueError:
            raise ConfigError(f"{key} expects an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} expects a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} expects a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key} expects a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported type {tp}")


def _section_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def apply_overrides(cfg: RecipeConfig, overrides: dict[str, Any]) -> RecipeConfig:
    """Return a new config with dotted keys (``"train.lr"``) replaced; values are type-checked."""
    sections: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    top_types = _section_types(RecipeConfig)
    for key, value in overrides.items():
        parts = key.split(".")
        if len(parts) == 1:
            if parts[0] != "preset":
                raise ConfigError(f"unknown config key {key!r} (sections: {', '.join(_section_names())})")
            top["preset"] = _coerce(key, value, str)
            continue
        if len(parts) != 2 or parts[0] not in _section_names():
            raise ConfigError(f"unknown config key {key!r} (sections: {', '.join(_section_names())})")
        section, name = parts
        if key in retired.KEEPS_WORK:
            raise ConfigError(retired.retired_message(key))
        section_cls = top_types[section]
        types_ = _section_types(section_cls)
        if name not in types_:
            raise ConfigError(
                f"unknown config key {key!r}; {section} has: {', '.join(sorted(types_))}"
            )
        sections.setdefault(section, {})[name] = _coerce(key, value, types_[name])
    new_sections = {}
    for section, values in sections.items():
        try:
            new_sections[section] = dataclasses.replace(getattr(cfg, section), **values)
        except ConfigError:
            raise
    return dataclasses.replace(cfg, **top, **new_sections)


def _section_names() -> list[str]:
    return [f.name for f in dataclasses.fields(RecipeConfig) if f.name != "preset"]


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flatten(v, key + "."))
        else:
            flat[key] = v
    return flat


def preset_overrides(name: str) -> dict[str, Any]:
    """The flat ``{"section.key": value}`` overrides a shipped preset makes."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    tree = tomllib.loads(resources.files("asr_kd.presets").joinpath(f"{name}.toml").read_text())
    base = tree.pop("extends", None)
    flat = preset_overrides(base) if base else {}
    flat.update(_flatten(tree))
    return flat


def load_config(preset: str = DEFAULT_PRESET, overrides: dict[str, Any] | None = None) -> RecipeConfig:
    """Defaults, then the preset's values, then the command line's ``--set`` overrides."""
    cfg = apply_overrides(RecipeConfig(preset=preset), preset_overrides(preset))
    return apply_overrides(cfg, overrides or {})


def parse_set_args(items: list[str]) -> dict[str, str]:
    """``["train.lr=0.1", ...]`` -> ``{"train.lr": "0.1"}``."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def to_dict(obj: Any) -> Any:
    """A JSON-ready copy of a config (sub)tree."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj


def from_dict(tree: dict[str, Any]) -> RecipeConfig:
    """Inverse of :func:`to_dict` (used to read the config stored in a run dir or checkpoint). The
    retired keys a run made before their retirement stored are dropped where they held a value that
    kept the run's work; at another value the run is refused (:func:`asr_kd.retired.check_run_config`)."""
    try:
        retired.check_run_config(tree)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    flat = _flatten({k: v for k, v in retired.drop(tree).items() if k != "preset"})
    return apply_overrides(RecipeConfig(preset=tree.get("preset", DEFAULT_PRESET)), flat)
