"""Every file name in a run directory, spelled in one place (the files inside one artefact's
directory, a training run's, a graph's, a lang's, ..., are spelled in :mod:`asr_kd.files`).

Only the runner and the stages read a run directory; the library is handed the files it needs.

Layout of ``<exp>/`` (one directory per stage, each ending with its ``DONE.json`` marker)::

    config.json                      resolved config, written before any stage runs
    recipe.log .lock                 the recipe's log (appended); the owning process (asr_kd.runlock)
    prepare/manifest-<split>.jsonl   one utterance a line (see asr_kd.data.manifest)
    prepare/audio/<split>/<utt>.wav  audio prepare wrote (Kaldi pipes and segments, lhotse, resampled)
    lang/phones.txt words.txt lexicon.txt topo L.fst L_disambig.fst
    features/<split>/fbank.{ark,scp} raw 40-dim log-Mel fbank (float32, Kaldi ark)
    features/<split>/mfcc.{ark,scp}  13-dim MFCC for the GMM aligner
    features/cmvn.json               CMVN statistics (global + per speaker)
    align/final.mdl tree             Kaldi binary transition model + GMM, context dependency
    align/<split>/ali.{ark,scp}      transition-id alignments (int32 per frame)
    align/<split>/pdf.{ark,scp}      HMM-state (pdf) ids (int32 per frame): the DNN labels
    align/<split>/failed.txt         utterances that could not be aligned, with the reason
    align/mono/final.mdl tree        the monophone system (when the final one is triphone)
    align/resume/                    receipts that let a killed align stage resume (asr_kd.align.resume)
    align/lang/                      align.source=kaldi: the lang the imported model decodes with, when it
                                     is Kaldi's or ours renumbered to Kaldi's phone ids (else lang/ is)
    shards/<split>/shard-NNNNNN.tar  webdataset shards; shards/<split>/index.json
    teachers/teacher-K/              teacher K: model.pt, metrics.json, checkpoints/ (see TrainRunDir)
    teachers/stacked/                all K teachers trained as one stacked model (teachers.stacked)
    ensemble/metrics.json            the ensemble's evaluation
    distill/T<t>/, distill/table5-<name>/, distill/matching-logits/   students (TrainRunDir each)
    distill/targets/                 stored soft targets: shard-NNNNNN.tar (+ .json receipt) per training shard, index.json
    graph/HCLG.fst G.fst words.txt graph_info.json   (see GraphDir)
    graph/lm.arpa lm-train-text.txt  the decoding LM and (without decode.arpa) its text: LM text + train transcripts
    graph/mono/HCLG.fst words.txt    the monophone GMM's graph (align.context=triphone)
    decode/<system>/<split>/         hyp.txt, per_utt, wer, wer.json (see ScoringDir)
    decode/<system>/summary.json     WER per acoustic scale on dev, chosen scale, test WER
    models/<system>/                 a self-contained model directory (asr_kd.decoding.modeldir)
    models/index.json                the exported systems and the best student on dev
    eval/<name>/                     python -m asr_kd.evaluate on another test set (asr_kd.stages._evaluate); the
                                     conditions stage's conditions (manifest.jsonl: a data.extra_test_subsets set)
    report.json report.md *.png      the paper-shaped report

A run directory can be moved or copied: every path it records of its own files is relative
(an scp names its ark relative to itself, :mod:`asr_kd.data.scp`; ``index.json`` its shards relative
to itself; ``RUN_DONE.json`` relative to the run directory) and is resolved when read. Only the
corpus (manifests' audio, ``data.root``) is named by absolute path; audio the prepare stage wrote
(``prepare/audio/``) is named relative to the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from asr_kd.files import (  # the artefacts' own files (re-exported: the stages name them through this module too)
    GMM_MODEL_FILE,
    GMM_TREE_FILE,
    SHARD_FILE,
    SHARD_INDEX,
    SPLITS,
    TABLE5_RUNS,
    EvalDir,
    GraphDir,
    LangDir,
    ModelDir,
    ScoringDir,
    TrainRunDir,
    _Reported,
)

__all__ = ["MARKER", "STAGE_NAMES", "LOCK_NAME", "RunPaths", "SPLITS", "TABLE5_RUNS", "SHARD_FILE", "SHARD_INDEX",
           "GMM_MODEL_FILE", "GMM_TREE_FILE", "EvalDir", "GraphDir", "LangDir", "ModelDir", "ScoringDir", "TrainRunDir"]

MARKER = "DONE.json"
# The stage directories, in pipeline order (the recipe's STAGES list the same names: a test checks it).
STAGE_NAMES = ("prepare", "lang", "features", "align", "shards", "teachers", "ensemble", "distill", "graph",
               "decode", "conditions", "export", "report")
LOCK_NAME = ".lock"  # <exp>/.lock: the PID and host of the recipe process that owns the run directory


@dataclass(frozen=True)
class RunPaths(_Reported):
    """A run directory (the layout above)."""

    # -- whole run -----------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def recipe_log(self) -> Path:
        """Everything the recipe logged, appended run after run (tracebacks of failures included)."""
        return self.root / "recipe.log"

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def marker(self, stage: str) -> Path:
        return self.stage_dir(stage) / MARKER

    # -- prepare ---------------------------------------------------------------
    def manifest(self, split: str) -> Path:
        return self.stage_dir("prepare") / f"manifest-{split}.jsonl"

    @property
    def prepared_audio(self) -> Path:
        """Audio the prepare stage wrote itself, ``<split>/<utt>.wav`` (see data_prep.audio)."""
        return self.stage_dir("prepare") / "audio"

    @property
    def augmented_audio(self) -> Path:
        """The training set's augmented copies, ``<copy id>.flac`` (asr_kd.data.augment)."""
        return self.stage_dir("prepare") / "augment"

    # -- lang ------------------------------------------------------------------
    @property
    def lang(self) -> Path:
        return self.stage_dir("lang")

    # -- features --------------------------------------------------------------
    def fbank_scp(self, split: str) -> Path:
        return self.stage_dir("features") / split / "fbank.scp"

    def mfcc_scp(self, split: str) -> Path:
        return self.stage_dir("features") / split / "mfcc.scp"

    @property
    def cmvn(self) -> Path:
        return self.stage_dir("features") / "cmvn.json"

    # -- align -----------------------------------------------------------------
    @property
    def align(self) -> Path:
        return self.stage_dir("align")

    @property
    def final_mdl(self) -> Path:
        return self.align / GMM_MODEL_FILE

    @property
    def tree(self) -> Path:
        return self.align / GMM_TREE_FILE

    def ali_scp(self, split: str) -> Path:
        return self.align / split / "ali.scp"

    def pdf_scp(self, split: str) -> Path:
        return self.align / split / "pdf.scp"

    def align_failed(self, split: str) -> Path:
        """Utterances of ``split`` that could not be aligned, one ``utt-id reason`` a line."""
        return self.align / split / "failed.txt"

    @property
    def mono_dir(self) -> Path:
        """With align.context=triphone: the monophone system's final.mdl and tree."""
        return self.align / "mono"

    @property
    def align_lang(self) -> Path:
        """With align.source=kaldi: Kaldi's lang (or ours renumbered to its phone ids), when lang/ is not it."""
        return self.align / "lang"

    @property
    def decode_lang(self) -> Path:
        """The lang directory the run's HMM (``align/final.mdl``) goes with, for the graph and everything
        that decodes: ``align/lang/`` when the align stage imported a Kaldi model with Kaldi's lang (or
        renumbered ours to its phone ids; :mod:`asr_kd.align.kaldi_lang`), else the lang stage's ``lang/``."""
        return self.align_lang if LangDir(self.align_lang).phones.exists() else self.lang

    @property
    def align_resume(self) -> Path:
        """The built-in aligner's receipts: trained systems and finished chunks (asr_kd.align.resume)."""
        return self.align / "resume"

    @property
    def mono_mdl(self) -> Path:
        return self.mono_dir / GMM_MODEL_FILE

    @property
    def mono_tree(self) -> Path:
        return self.mono_dir / GMM_TREE_FILE

    # -- shards ----------------------------------------------------------------
    def shard_dir(self, split: str) -> Path:
        return self.stage_dir("shards") / split

    def shard_index(self, split: str) -> Path:
        return self.shard_dir(split) / SHARD_INDEX

    def shard_indexes(self) -> dict[str, Path]:
        """Every split's shard index (what ``asr_kd.data.datamodule.shard_datamodule`` reads)."""
        return {split: self.shard_index(split) for split in SPLITS}

    # -- training ----------------------------------------------------------------
    def teacher_dir(self, k: int) -> Path:
        return self.stage_dir("teachers") / f"teacher-{k}"

    def student_dir(self, temperature: float) -> Path:
        return self.stage_dir("distill") / f"T{temperature:g}"

    @property
    def soft_targets_dir(self) -> Path:
        """Stored sparse soft targets (distill.targets=stored): a shard per training shard, index.json."""
        return self.stage_dir("distill") / "targets"

    def table5_dir(self, name: str) -> Path:
        return self.stage_dir("distill") / f"table5-{name}"

    @property
    def ensemble_metrics(self) -> Path:
        return self.stage_dir("ensemble") / "metrics.json"

    @property
    def matching_logits_dir(self) -> Path:
        """The optional student trained on the high-T limit (L2 on logits)."""
        return self.stage_dir("distill") / "matching-logits"

    @property
    def students_stacked_dir(self) -> Path:
        """The run that trains the students of every temperature at once (distill.stacked=true)."""
        return self.stage_dir("distill") / "stacked"

    @property
    def teachers_stacked_dir(self) -> Path:
        """The run that trains all K teachers at once (teachers.stacked=true)."""
        return self.stage_dir("teachers") / "stacked"

    def teacher_dirs(self, num_teachers: int) -> list[Path]:
        """The K teachers every stage after ``teachers`` uses."""
        return [self.teacher_dir(k) for k in range(num_teachers)]

    # -- graph / decode / report ---------------------------------------------------
    @property
    def graph(self) -> Path:
        return self.stage_dir("graph")

    @property
    def lm_arpa(self) -> Path:
        """The decoding LM: estimated from the LM text and the training transcripts, or decode.arpa
        (gunzipped, with the training words it lacks added as unigrams)."""
        return self.graph / "lm.arpa"

    @property
    def lm_train_text(self) -> Path:
        """The training transcripts as LM text (when the corpus has no LM text of its own)."""
        return self.graph / "lm-train-text.txt"

    @property
    def mono_graph(self) -> Path:
        """With align.context=triphone: the monophone system's HCLG.fst and words.txt."""
        return self.graph / "mono"

    def decode_dir(self, system: str, split: str) -> Path:
        """hyp.txt, per_utt, wer, wer.json of one system on one split (see ScoringDir)."""
        return self.stage_dir("decode") / system / split

    def decode_utt_counts(self, system: str) -> Path:
        """Per test utterance: word errors, reference words, frame hits, frames (asr_kd.decoding.stats)."""
        return self.decode_dir(system, "test") / "utt_stats.json"

    def decode_summary(self, system: str) -> Path:
        """One system's decoding summary: dev WER per acoustic scale, chosen scale, test WER, frame accuracy."""
        return self.stage_dir("decode") / system / "summary.json"

    # -- export ------------------------------------------------------------------------
    @property
    def models_dir(self) -> Path:
        """<exp>/models/: the export stage's model directories (its DONE.json stays in export/)."""
        return self.root / "models"

    def model_dir(self, system: str) -> Path:
        """A self-contained model directory (asr_kd.decoding.modeldir): what transcribe reads."""
        return self.models_dir / system

    @property
    def models_index(self) -> Path:
        """The exported systems, the best student on dev, the default for transcribe --exp-dir."""
        return self.models_dir / "index.json"

    def eval_dir(self, name: str) -> Path:
        """``python -m asr_kd.evaluate``'s results on another test set (asr_kd.stages._evaluate)."""
        return self.root / "eval" / name

    @property
    def plot_vs_temperature(self) -> Path:
        """Frame accuracy and WER of the distilled students against T (with teacher/ensemble lines)."""
        return self.root / "frame_acc_wer_vs_T.png"

    @property
    def plot_table5_curves(self) -> Path:
        """Per-epoch train/test frame accuracy of the 3%-data hard- and soft-target runs."""
        return self.root / "table5_curves.png"
