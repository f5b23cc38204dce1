"""Every file name in a run directory, spelled in one place.

Layout of ``<exp>/`` (one directory per stage, each ending with its ``DONE.json`` marker)::

    config.json                      resolved config, written before any stage runs
    prepare/manifest-<split>.jsonl   one utterance a line (see data_prep.manifest)
    lang/phones.txt words.txt lexicon.txt topo L.fst L_disambig.fst
    features/<split>/fbank.{ark,scp} raw 40-dim log-Mel fbank (float32, Kaldi ark)
    features/<split>/mfcc.{ark,scp}  13-dim MFCC for the GMM aligner
    features/cmvn.json               CMVN statistics (global + per speaker)
    align/final.mdl tree             Kaldi binary transition model + GMM, context dependency
    align/<split>/ali.{ark,scp}      transition-id alignments (int32 per frame)
    align/<split>/pdf.{ark,scp}      HMM-state (pdf) ids (int32 per frame): the DNN labels
    shards/<split>/shard-NNNNNN.tar  webdataset shards; shards/<split>/index.json
    teachers/teacher-K/              Lightning checkpoints and metrics of teacher K
    ensemble/                        the ensemble's evaluation
    distill/T<t>/, distill/table5-<name>/
    graph/HCLG.fst G.fst lm.arpa
    decode/<system>/<split>/         hypotheses, per-utterance errors, WER
    report.json report.md *.png      the paper-shaped report
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "dev", "test")
MARKER = "DONE.json"


@dataclass(frozen=True)
class RunPaths:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # -- whole run -----------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / "config.json"

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def marker(self, stage: str) -> Path:
        return self.stage_dir(stage) / MARKER

    # -- prepare ---------------------------------------------------------------
    def manifest(self, split: str) -> Path:
        return self.stage_dir("prepare") / f"manifest-{split}.jsonl"

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
        return self.align / "final.mdl"

    @property
    def tree(self) -> Path:
        return self.align / "tree"

    def ali_scp(self, split: str) -> Path:
        return self.align / split / "ali.scp"

    def pdf_scp(self, split: str) -> Path:
        return self.align / split / "pdf.scp"

    # -- shards ----------------------------------------------------------------
    def shard_dir(self, split: str) -> Path:
        return self.stage_dir("shards") / split

    def shard_index(self, split: str) -> Path:
        return self.shard_dir(split) / "index.json"

    # -- training ----------------------------------------------------------------
    def teacher_dir(self, k: int) -> Path:
        return self.stage_dir("teachers") / f"teacher-{k}"

    def student_dir(self, temperature: float) -> Path:
        return self.stage_dir("distill") / f"T{temperature:g}"

    def table5_dir(self, name: str) -> Path:
        return self.stage_dir("distill") / f"table5-{name}"

    # -- graph / decode / report ---------------------------------------------------
    @property
    def graph(self) -> Path:
        return self.stage_dir("graph")

    def decode_dir(self, system: str, split: str) -> Path:
        return self.stage_dir("decode") / system / split

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"
