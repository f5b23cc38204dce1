"""The files of the artefacts the library reads and writes, each directory's names spelled once.

A training run (:class:`TrainRunDir`), a lang directory (:class:`LangDir`), a decoding graph
(:class:`GraphDir`), one system's scoring files (:class:`ScoringDir`), a self-contained model
directory (:class:`ModelDir`), an evaluation on another test set (:class:`EvalDir`); shard and GMM file
names; the split and Table-5 run names. Library code (``asr_kd/{data,align,nn,decoding}``) is handed
such a directory and names its files through these classes; where such directories sit in a run
directory, and the stages' markers, are :mod:`asr_kd.paths`' business (which only the stages and the
runner read).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "dev", "test")
# The Table-5 runs (distill/table5-<name>/) and the systems decoded under those names.
TABLE5_RUNS = ("baseline_100", "baseline_3", "soft_3")
SHARD_FILE = "shard-{:06d}.tar"  # shards/<split>/shard-000000.tar, ...
SHARD_INDEX = "index.json"  # beside a split's shards: their files, utterances and frame counts
GMM_MODEL_FILE = "final.mdl"  # a GMM-HMM's Kaldi model: align/ and align/mono/
GMM_TREE_FILE = "tree"  # its context-dependency tree (Kaldi binary)


@dataclass(frozen=True)
class _Dir:
    """A directory whose files are named by properties; ``root`` may be given as a string."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))


@dataclass(frozen=True)
class _Reported(_Dir):
    """A directory that ends in a report: the run's, or one evaluation's."""

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"


@dataclass(frozen=True)
class TrainRunDir(_Dir):
    """Files of one training run (a teacher, a student, a Table-5 run)::

        checkpoints/last.ckpt checkpoints/best.ckpt   Lightning checkpoints (config + history inside)
        logs/                                         CSV (and TensorBoard) logs
        model.pt                                      the selected (best-on-dev) model, standalone
        metrics.json                                  final frame accuracies and per-epoch history
        RUN_KEY.json                                  the key (config + data) the run belongs to
        RUN_DONE.json                                 written last: the run finished
    """

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last_ckpt(self) -> Path:
        return self.checkpoints / "last.ckpt"

    best_ckpt_stem = "best"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def model(self) -> Path:
        return self.root / "model.pt"

    def member_model(self, k: int) -> Path:
        """Member k of a stacked run, before it is copied into its teacher directory."""
        return self.root / f"member-{k}.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def key(self) -> Path:
        """The key (config + data) the run was started with: another key clears the directory."""
        return self.root / "RUN_KEY.json"

    @property
    def done(self) -> Path:
        return self.root / "RUN_DONE.json"


@dataclass(frozen=True)
class ScoringDir(_Dir):
    """Scoring files of one system on one split (``decode/<system>/<split>/``)::

        hyp.txt   the hypotheses, one ``utt words...`` a line
        per_utt   per utterance: ref, hyp, alignment ops, #csid
        wer       the sclite-style summary lines
        wer.json  the same as numbers
    """

    @property
    def hyp(self) -> Path:
        return self.root / "hyp.txt"

    @property
    def per_utt(self) -> Path:
        return self.root / "per_utt"

    @property
    def wer(self) -> Path:
        return self.root / "wer"

    @property
    def wer_json(self) -> Path:
        return self.root / "wer.json"


@dataclass(frozen=True)
class ModelDir(_Dir):
    """A self-contained model directory (``models/<system>/``; asr_kd.decoding.modeldir)::

        am.pt am.onnx model.json log_priors.npy cmvn.json      written by the export stage
        HCLG.fst words.txt final.mdl tree phones.txt lexicon.txt   copied from graph/, align/, lang/
    """

    @property
    def am(self) -> Path:
        """TorchScript: normalised fbank (T, D) -> log-posteriors (T, N)."""
        return self.root / "am.pt"

    @property
    def am_onnx(self) -> Path:
        """The same network as ONNX (dynamic time axis), when onnx and onnxruntime are installed."""
        return self.root / "am.onnx"

    @property
    def model_json(self) -> Path:
        return self.root / "model.json"

    @property
    def log_priors(self) -> Path:
        return self.root / "log_priors.npy"

    @property
    def cmvn(self) -> Path:
        """The training set's global CMVN statistics."""
        return self.root / "cmvn.json"

    @property
    def hclg(self) -> Path:
        return self.root / GraphDir(self.root).hclg.name

    @property
    def words(self) -> Path:
        return self.root / GraphDir(self.root).words.name

    @property
    def final_mdl(self) -> Path:
        return self.root / GMM_MODEL_FILE

    @property
    def tree(self) -> Path:
        return self.root / GMM_TREE_FILE

    @property
    def phones(self) -> Path:
        return self.root / LangDir(self.root).phones.name

    @property
    def lexicon(self) -> Path:
        return self.root / LangDir(self.root).lexicon.name


@dataclass(frozen=True)
class EvalDir(_Reported):
    """``python -m asr_kd.evaluate``'s work on one test set (``eval/<name>/``; asr_kd.stages._evaluate)::

        data.npz data.json                normalised fbank and GMM labels per utterance; their key
        decode/<system>/summary.json      per system: WER, frame accuracy, per-utterance counts
        decode/<system>/hyp.txt per_utt wer wer.json   (see ScoringDir)
        report.json report.md
    """

    @property
    def data(self) -> Path:
        return self.root / "data.npz"

    @property
    def data_info(self) -> Path:
        return self.root / "data.json"

    @property
    def manifest(self) -> Path:
        """An extra test set's utterances (data.extra_test_subsets), as the conditions stage read them."""
        return self.root / "manifest.jsonl"

    @property
    def audio(self) -> Path:
        """Audio the corpus reader wrote for an extra test set (Kaldi pipes, lhotse, resampled)."""
        return self.root / "audio"

    def system_dir(self, system: str) -> Path:
        return self.root / "decode" / system

    def summary(self, system: str) -> Path:
        return self.system_dir(system) / "summary.json"


@dataclass(frozen=True)
class LangDir(_Dir):
    """A lang directory in Kaldi's ``data/lang`` format (``lang/``; asr_kd.data.lang)::

        phones.txt words.txt lexicon.txt lexicon_disambig.txt topo L.fst L_disambig.fst lang_info.json
        lexicon_g2p.txt (data.oov_policy=g2p: the words pronounced by the G2P)
        phones/silence.csl phones/nonsilence.csl phones/disambig.int phones/optional_silence.txt
    """

    @property
    def phones(self) -> Path:
        return self.root / "phones.txt"

    @property
    def words(self) -> Path:
        return self.root / "words.txt"

    @property
    def lexicon(self) -> Path:
        return self.root / "lexicon.txt"

    @property
    def lexicon_disambig(self) -> Path:
        return self.root / "lexicon_disambig.txt"

    @property
    def lexicon_g2p(self) -> Path:
        """With data.oov_policy=g2p: the words without a lexicon pronunciation and the G2P's, a line each."""
        return self.root / "lexicon_g2p.txt"

    @property
    def topo(self) -> Path:
        return self.root / "topo"

    @property
    def l_fst(self) -> Path:
        return self.root / "L.fst"

    @property
    def l_disambig_fst(self) -> Path:
        return self.root / "L_disambig.fst"

    @property
    def info(self) -> Path:
        """sil_prob and position-dependent phones, as the lexicon FSTs were made."""
        return self.root / "lang_info.json"

    def phone_list(self, name: str) -> Path:
        """phones/silence.csl, phones/nonsilence.csl, phones/disambig.int, phones/optional_silence.txt."""
        return self.root / "phones" / name


@dataclass(frozen=True)
class GraphDir(_Dir):
    """Files of one decoding graph (``graph/``; ``graph/mono/`` for the monophone GMM)::

        G.fst HCLG.fst words.txt graph_info.json
    """

    @property
    def g_fst(self) -> Path:
        return self.root / "G.fst"

    @property
    def hclg(self) -> Path:
        return self.root / "HCLG.fst"

    @property
    def words(self) -> Path:
        """words.txt of the graph (the output symbols of HCLG.fst)."""
        return self.root / "words.txt"

    @property
    def info(self) -> Path:
        """Sizes, build time and cache key of HCLG.fst."""
        return self.root / "graph_info.json"
