"""Hybrid DNN-HMM decoding: scaled log-likelihood ratios through HCLG with Kaldi's decoders.

Owns the decoding maths and the per-utterance search; the systems of a run are decoded by
:mod:`asr_kd.stages._decode`, driven by the decode stage (:mod:`asr_kd.stages.decode`). A hybrid acoustic model gives posteriors p(s | x) over HMM states (pdfs);
the decoder needs likelihoods, so per frame (Bourlard & Morgan's scaled likelihood)::

    score[t, j] = acoustic_scale * (log p(s | x_t) - log p(s))    with s = pdf(transition id j + 1)

where p(s) are state priors counted from the training alignments. ``DecodableCtc`` treats column
j as the HCLG input label j + 1 (transition id), hence the ``[1:]`` of the transition-id -> pdf
map, whose entry 0 is a dummy. The GMM aligner's model is decoded through the same graph as a
sanity baseline, with its own scaled log-likelihoods (``DecodableAmDiagGmmScaled``).

A posterior source is any callable ``feats (T, D) -> log-posteriors (T, N)`` (:data:`PosteriorFn`),
so the search is testable without a trained network.

Two of Kaldi's decoders search (``decode.decoder``): ``faster``, its ``FasterDecoder`` (the
``decode-faster`` binaries: the best path only), and ``lattice``, its ``LatticeFasterDecoder``
(``latgen-faster``: a lattice pruned to ``lattice_beam``, determinised, then its best path). The
WER needs the best path only, and the acoustic scale is tuned by searching again at each scale, not
by rescoring lattices. At the same beam and max-active the best-path decoder keeps no lattice
bookkeeping: in the decode stage's pool (one search process per core) it searched ~1.9x faster
(benchmarks/README.md, "Decoding").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kaldi_hmm_gmm as khg
import kaldifst
import numpy as np

from asr_kd.files import GraphDir

log = logging.getLogger(__name__)

PosteriorFn = Callable[[np.ndarray], np.ndarray]  # feats (T, D) -> log p(s | x) (T, N)

UNSEEN_LOG_PRIOR = 1e10  # log prior of a state with no training frames: it can never win (as Kaldi nnet1)


DECODERS = ("faster", "lattice")


@dataclass(frozen=True)
class SearchConfig:
    beam: float = 13.0
    max_active: int = 7000
    lattice_beam: float = 6.0  # the lattice decoder's only
    decoder: str = "faster"  # faster (best path) | lattice: see the module's docstring

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            raise ValueError(f"unknown decoder {self.decoder!r}; choose one of {', '.join(DECODERS)}")

    @classmethod
    def of(cls, decode: Any) -> SearchConfig:
        """The search a config's ``decode`` section asks for."""
        return cls(decode.beam, decode.max_active, decode.lattice_beam, decode.decoder)

    def record(self) -> list[Any]:
        """What of the search a result depends on (the decode receipts' key; the exported model's settings)."""
        return [self.beam, self.max_active, self.lattice_beam, self.decoder]


@dataclass(frozen=True)
class Hypothesis:
    utt: str
    words: list[str]
    ok: bool  # False: no path reached a final state (best partial path returned)
    num_frames: int
    search_s: float


def log_priors_from_counts(counts: np.ndarray) -> np.ndarray:
    """log p(s) from per-pdf frame counts (N,); states never seen in training get a huge log prior,
    so that ``log p(s|x) - log p(s)`` rules them out instead of rewarding an untrained output."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.sum() <= 0:
        raise ValueError("state priors need a 1-d array of pdf counts with a positive total")
    with np.errstate(divide="ignore"):
        log_prior = np.log(counts / counts.sum())
    log_prior[counts == 0] = UNSEEN_LOG_PRIOR
    return log_prior.astype(np.float32)


def count_pdfs(alignments: Iterable[np.ndarray], num_pdfs: int) -> np.ndarray:
    """Frame counts per pdf id (N,) over per-utterance pdf-id arrays."""
    counts = np.zeros(num_pdfs, dtype=np.int64)
    for ali in alignments:
        ali = np.asarray(ali)
        if ali.size and (ali.min() < 0 or ali.max() >= num_pdfs):
            raise ValueError(f"pdf id out of range 0..{num_pdfs - 1} in the alignments")
        counts += np.bincount(ali, minlength=num_pdfs)
    return counts


def tid_to_pdf(trans_model: Any) -> np.ndarray:
    """pdf id of each transition id 1..num_tids (index 0 = transition id 1)."""
    return np.asarray(trans_model.transition_id_to_pdf_array()[1:], dtype=np.int64)


def hybrid_log_likelihoods(log_post: np.ndarray, log_prior: np.ndarray) -> np.ndarray:
    """The unscaled pseudo log-likelihoods (T, N): ``log p(s | x) - log p(s)``, per pdf."""
    if log_post.ndim != 2 or log_post.shape[1] != log_prior.shape[0]:
        raise ValueError(f"log-posteriors {log_post.shape} do not match {log_prior.shape[0]} state priors")
    return log_post - log_prior[None, :]  # (T, N)


def scaled_scores(log_lik: np.ndarray, tid_pdf: np.ndarray, acoustic_scale: float) -> np.ndarray:
    """Decoder input (T, num_tids) from pseudo log-likelihoods (T, N): ``scale * log_lik`` gathered
    per transition id. The decode stage's search processes apply it to the unscaled
    :func:`hybrid_log_likelihoods` they receive, once per scale."""
    return np.ascontiguousarray(acoustic_scale * log_lik[:, tid_pdf], dtype=np.float32)  # (T, num_tids)


def hybrid_scores(log_post: np.ndarray, log_prior: np.ndarray, tid_pdf: np.ndarray,
                  acoustic_scale: float) -> np.ndarray:
    """Decoder input (T, num_tids): ``scale * (log_post - log_prior)`` gathered per transition id."""
    return scaled_scores(hybrid_log_likelihoods(log_post, log_prior), tid_pdf, acoustic_scale)


class Decoder:
    """One HCLG + transition model; decodes score matrices to word sequences."""

    def __init__(self, hclg: Any, trans_model: Any, word_symbols: dict[int, str], search: SearchConfig) -> None:
        self.hclg = hclg  # the C++ decoder keeps a pointer to it: keep it alive as long as the decoder
        self.search = search
        if search.decoder == "faster":
            opts = khg.FasterDecoderOptions()
            # the lattice decoder's pruning: its beam, max-active and min-active (200; FasterDecoder's own is 20)
            opts.beam, opts.max_active, opts.min_active = search.beam, search.max_active, 200
            self.decoder = khg.FasterDecoder(hclg, opts)
        else:
            config = khg.LatticeFasterDecoderConfig(
                beam=search.beam, max_active=search.max_active, lattice_beam=search.lattice_beam
            )
            self.decoder = khg.LatticeFasterDecoder(hclg, config)
        self.trans_model = trans_model
        self.word_symbols = word_symbols
        self.tid_pdf = tid_to_pdf(trans_model)
        self.num_pdfs = int(self.tid_pdf.max()) + 1 if len(self.tid_pdf) else 0

    def decode_log_likelihoods(self, utt: str, log_lik: np.ndarray, acoustic_scale: float) -> Hypothesis:
        """Best path for unscaled pseudo log-likelihoods (T, N) (:func:`hybrid_log_likelihoods`) at a scale."""
        if log_lik.ndim != 2 or log_lik.shape[1] < self.num_pdfs:
            raise ValueError(f"{utt}: log-likelihoods {log_lik.shape} do not cover the model's {self.num_pdfs} pdfs")
        return self.decode(utt, scaled_scores(log_lik, self.tid_pdf, acoustic_scale))

    def decode(self, utt: str, scores: np.ndarray) -> Hypothesis:
        """Best path for a (T, num_tids) score matrix (see :func:`hybrid_scores`)."""
        if scores.shape[1] != len(self.tid_pdf):
            raise ValueError(f"{utt}: score matrix has {scores.shape[1]} columns, the model has "
                             f"{len(self.tid_pdf)} transition ids")
        return self._search(utt, khg.DecodableCtc(scores), scores.shape[0])

    def decode_gmm(self, utt: str, am: Any, feats: np.ndarray, acoustic_scale: float) -> Hypothesis:
        """Best path of the GMM model ``am`` (``AmDiagGmm``) on its features (T, D): the sanity baseline."""
        feats = np.ascontiguousarray(feats, dtype=np.float32)
        decodable = khg.DecodableAmDiagGmmScaled(am=am, tm=self.trans_model, feats=feats, scale=acoustic_scale)
        return self._search(utt, decodable, feats.shape[0])

    def best_path(self, utt: str, decodable: Any) -> tuple[bool, list[int], list[int]]:
        """(ok, transition ids per frame, word ids) of the best path through HCLG. ``ok`` is False
        when the faster decoder reached no final state (its best partial path is returned, as
        ``decode-faster --allow-partial``); the lattice decoder's flag is Kaldi's success of
        ``DecodeUtteranceLatticeFaster``."""
        if self.search.decoder == "faster":
            self.decoder.decode(decodable)
            ok = self.decoder.reached_final()
            got, best = self.decoder.get_best_path()
            if not got:
                return False, [], []
            _, ali, word_ids, _ = kaldifst.get_linear_symbol_sequence(best)
            return ok, list(ali), list(word_ids)
        ok, ali, word_ids, _cost = khg.decode_utterance_lattice_faster(
            decoder=self.decoder, decodable=decodable, trans_model=self.trans_model, utt=utt, allow_partial=True
        )
        return ok, ali, word_ids

    def _search(self, utt: str, decodable: Any, num_frames: int) -> Hypothesis:
        t0 = time.perf_counter()
        ok, _ali, word_ids = self.best_path(utt, decodable)
        words = [self.word_symbols[i] for i in word_ids]
        return Hypothesis(utt, words, bool(ok), num_frames, time.perf_counter() - t0)


def decode_posteriors(decoder: Decoder, utts: Sequence[tuple[str, np.ndarray]], log_prior: np.ndarray,
                      acoustic_scale: float) -> list[Hypothesis]:
    """Decode (utt id, log-posteriors (T, N)) pairs at one acoustic scale."""
    return [decoder.decode(utt, hybrid_scores(lp, log_prior, decoder.tid_pdf, acoustic_scale)) for utt, lp in utts]


def read_hclg_decoder(graph_dir: Path, trans_model: Any, search: SearchConfig) -> Decoder:
    """A :class:`Decoder` over ``<graph_dir>/HCLG.fst`` and ``words.txt``."""
    from asr_kd.decoding.graph import read_hclg, read_word_symbols

    graph = GraphDir(graph_dir)
    return Decoder(read_hclg(graph.hclg), trans_model, read_word_symbols(graph.words), search)
