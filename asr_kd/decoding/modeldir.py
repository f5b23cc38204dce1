"""A trained system outside its run: a self-contained model directory, and a transcriber over it.

The export stage writes one directory per system (``<exp>/models/<system>/``) holding everything
that turns audio into words, and nothing that needs the run directory or its config::

    am.pt                 TorchScript: normalised fbank (T, D) -> log p(state | 26-frame window) (T, N)
    am.onnx               the same network as ONNX (opset 20, dynamic T; input ``feats``, output
                          ``log_posteriors``), when onnx/onnxscript/onnxruntime are installed
                          (the ``onnx`` extra); model.json says why when it is not
    final.mdl, tree       the HMM (transition model) the labels and the graph were built with
    HCLG.fst, words.txt   the decoding graph and its word table
    phones.txt, lexicon.txt   to put times on the words of the best path
    log_priors.npy        log p(state) counted on the training alignments
    cmvn.json             the training set's global CMVN statistics (count, sum, sum of squares)
    README.md             the model card: what the system is, its training data, test WER and frame
                          accuracy with 95 % intervals, size, how to run it (:func:`model_card`)
    model.json            what all of this is: features, CMVN, acoustic scale, sizes, checksums

:class:`Transcriber` reads such a directory: audio (any format soundfile reads, any sample rate)
-> Kaldi fbank -> CMVN -> the network (TorchScript, or ONNX through onnxruntime on CPU) -> scaled
likelihoods -> the HCLG search. It reads neither the run's config nor its directory and imports no
Lightning; fbank and resampling come from torchaudio (through asr_kd.data.features).

CMVN at transcription time: a system trained with per-speaker CMVN normalises each file by its
own statistics (one file, one speaker; Kaldi's usual fallback when speakers are unknown); a
system trained with global CMVN uses the training statistics stored here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from asr_kd.fileio import file_sha256, write_text
from asr_kd.files import ModelDir

FORMAT = "asr_kd.model_dir.v1"
EXPORT_ATOL = 1e-4  # the TorchScript and ONNX networks must match the PyTorch model to this (log-posteriors)
ONNX_OPSET = 20  # torch 2.11's exporter's own opset; onnxruntime >= 1.17 runs it
ONNX_INPUT, ONNX_OUTPUT = "feats", "log_posteriors"
BACKENDS = ("torchscript", "onnx")
CARD = "README.md"  # the model card, beside model.json

log = logging.getLogger(__name__)


class FramePosteriors(nn.Module):
    """feats (T, D) -> log-posteriors (T, N): edge-padded 26-frame windows through one network, or
    the arithmetic/geometric mean of K stacked networks' softmaxes (the ensemble)."""

    def __init__(self, net: nn.Module, left: int, right: int, mean: str = "arithmetic") -> None:
        super().__init__()
        self.net = net
        self.left = left
        self.right = right
        self.geometric = mean == "geometric"
        self.log_members = math.log(int(getattr(net, "num_members", 1)))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        first = feats[:1].expand(self.left, feats.shape[1])  # (L, D)
        last = feats[-1:].expand(self.right, feats.shape[1])  # (R, D)
        padded = torch.cat([first, feats, last], dim=0)  # (T + L + R, D)
        windows = padded.unfold(0, self.left + 1 + self.right, 1).transpose(1, 2)  # (T, L+1+R, D)
        out = self.net(windows)
        if out.dim() == 3:  # (K, T, N): K stacked members
            logp = F.log_softmax(out.float(), dim=-1)
            if self.geometric:
                return F.log_softmax(logp.mean(dim=0), dim=-1)
            return torch.logsumexp(logp, dim=0) - self.log_members
        return F.log_softmax(out.float(), dim=-1)  # (T, N)


def forward_flops_per_frame(net: nn.Module) -> int:
    """2 x multiply-adds of one frame through every affine layer (all K members of a stacked net):
    twice the weights' size, biases ((N,) or (K, 1, N)) left out."""
    return sum(2 * p.numel() for p in net.parameters() if p.dim() >= 2 and 1 not in p.shape[-2:])


def _place(src: Path, dst: Path) -> None:
    """``dst`` as a hard link to ``src`` where the filesystem allows (graphs are shared by every
    system's directory), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


@dataclass(frozen=True)
class ExportSources:
    """What every model directory of a run shares: the files copied in as they are (model-dir
    path -> the run's file), the priors, CMVN and feature settings."""

    copies: dict[str, Path]
    log_priors: np.ndarray  # (N,)
    cmvn_global: dict[str, Any]  # asr_kd.data.features.Stats.to_json() of the training set
    features: dict[str, Any]  # num_mel_bins, frame_length_ms, frame_shift_ms, sample_rate
    cmvn_mode: str  # speaker | global | none (as the network was trained)


def export_model_dir(name: str, net: nn.Module, out_dir: Path, src: ExportSources, *, left: int, right: int,
                     mean: str, acoustic_scale: float, check_feats: np.ndarray, search: dict[str, float],
                     extra: dict[str, Any] | None = None, onnx_skipped: str | None = None,
                     onnx_like: Path | None = None,
                     card: Callable[[dict[str, Any], int], str] | None = None) -> dict[str, Any]:
    """Write ``out_dir`` (atomically: a temp directory renamed into place) for one system.

    The network is traced to TorchScript and read back, and exported to ONNX and run with
    onnxruntime unless ``onnx_skipped`` says why not (it is then recorded in model.json); the
    log-posteriors of both on ``check_feats`` (a real utterance) must equal the PyTorch model's
    within :data:`EXPORT_ATOL`, else ValueError. ``onnx_like``: an am.onnx of the same architecture
    whose graph is reused with this network's weights (:func:`reuse_onnx_graph`) when it fits.
    ``card``: (model.json's contents, the directory's bytes) -> the model card, written as
    :data:`CARD` and listed with the other files' checksums. Returns the ``model.json`` written."""
    net = net.eval().float()
    module = FramePosteriors(net, left, right, mean).eval()
    feats = torch.from_numpy(np.ascontiguousarray(check_feats, dtype=np.float32))
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    md = ModelDir(tmp)
    try:
        # torch 2.11 marks TorchScript deprecated in favour of torch.export, but it is still
        # what C++ (libtorch) and most deployment stacks load; the warnings say nothing new here.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            traced = torch.jit.trace(module, feats[: min(len(feats), 64)], check_trace=False)
            torch.jit.save(traced, str(md.am))
            loaded = torch.jit.load(str(md.am))
            want, got = module(feats), loaded(feats)
        max_diff = float((want - got).abs().max())
        if not max_diff <= EXPORT_ATOL:
            raise ValueError(f"{name}: the TorchScript network differs from the PyTorch model by {max_diff:.2e} "
                             f"(> {EXPORT_ATOL}) on a {len(feats)}-frame utterance; not exported")
        onnx_info = _export_checked_onnx(name, module, feats, md.am_onnx, onnx_skipped, onnx_like)
        for file_name, source in src.copies.items():
            if not source.exists():
                raise FileNotFoundError(f"{source} is missing; re-run the stage that writes it")
            _place(source, tmp / file_name)
        np.save(md.log_priors, np.asarray(src.log_priors, dtype=np.float32))
        md.cmvn.write_text(json.dumps(src.cmvn_global))
        params = sum(p.numel() for p in net.parameters())
        members = int(getattr(net, "num_members", 1))
        info = {
            "format": FORMAT,
            "system": name,
            "acoustic_model": {"file": md.am.name, "kind": "ensemble" if members > 1 else "dnn", "members": members,
                               "mean": mean if members > 1 else None, "params": params,
                               "mflops_per_frame": forward_flops_per_frame(net) / 1e6,
                               "input": f"(T, {feats.shape[1]}) normalised fbank", "context": [left, right],
                               "num_pdfs": int(got.shape[1]), "output": "(T, num_pdfs) log p(state | window)",
                               "torchscript_max_abs_diff": max_diff, "onnx": onnx_info},
            "features": {"type": "kaldi fbank", **src.features, "dither": 0.0, "snip_edges": True,
                         "energy_floor": 0.0, "samples_scaled_to_int16": True},
            "cmvn": {"trained_with": src.cmvn_mode, "file": md.cmvn.name,
                     "at_transcription": {"speaker": "utterance", "global": "global", "none": "none"}[src.cmvn_mode]},
            "decoding": {"graph": md.hclg.name, "words": md.words.name, "hmm": md.final_mdl.name,
                         "tree": md.tree.name, "log_priors": md.log_priors.name, "acoustic_scale": acoustic_scale,
                         "score": "acoustic_scale * (log p(s|x) - log p(s))", "search": search},
            "lexicon": {"phones": md.phones.name, "lexicon": md.lexicon.name},
            "torch": torch.__version__,
            **(extra or {}),
        }
        if card is not None:
            info["card"] = CARD
            size = sum(f.stat().st_size for f in tmp.iterdir() if f.is_file())
            write_text(tmp / CARD, card(info, size))
        info["sha256"] = {f.name: file_sha256(f) for f in sorted(tmp.iterdir()) if f.is_file()}
        md.model_json.write_text(json.dumps(info, indent=2) + "\n")
        os.chmod(tmp, 0o755)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


# ---------------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------------
def onnx_unavailable() -> str | None:
    """None when am.onnx can be written and run here; else why not (a missing package)."""
    missing = []
    for module in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(module)
        except (ImportError, OSError):  # OSError: a native library that does not load
            missing.append(module)
    if missing:
        return (f"{', '.join(missing)} not importable; the 'onnx' extra installs it "
                "(pip install -r requirements.lock, or pip install 'asr-kd[onnx]')")
    return None


def export_onnx(module: nn.Module, example: torch.Tensor, path: Path) -> int:
    """Write ``module`` (a :class:`FramePosteriors`) to ``path`` as ONNX with a dynamic time axis:
    ``feats`` (T, D) -> ``log_posteriors`` (T, N), through torch's dynamo exporter (the TorchScript
    one cannot export the edge padding). Returns the opset written."""
    frames = torch.export.Dim("frames", min=1)
    # The exporter and its optimiser log every pass ("torchvision is not installed", "Removed 5 unused
    # nodes", ...) at INFO/WARNING for every export; the check below is what counts.
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, (example,), dynamo=True, opset_version=ONNX_OPSET, verbose=False,
                                        input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                                        dynamic_shapes={ONNX_INPUT: {0: frames}})
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    program.save(str(path))
    return int(program.model.opset_imports[""])


class OnnxPosteriors:
    """am.onnx through onnxruntime on CPU, called as the TorchScript network is: (T, D) -> (T, N).

    ``threads``: onnxruntime's intra-op threads (default: torch's, i.e. OMP_NUM_THREADS)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # errors only
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, feats: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input: np.ascontiguousarray(feats.numpy(), dtype=np.float32)})[0]
        return torch.from_numpy(out)

    def eval(self) -> OnnxPosteriors:
        return self


def reuse_onnx_graph(module: nn.Module, like: Path, path: Path) -> int | None:
    """Write ``path`` as the ONNX graph ``like`` (another system's am.onnx, of a network of the
    same architecture) holding ``module``'s weights, which saves the exporter's seconds; returns its
    opset. None, and nothing written, unless every weight of ``module`` is an initializer of
    ``like`` by name and shape (the exporter folds a weight it permutes into a new constant, as
    the ensemble's first layer: such a graph is exported anew)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(like))
    weights = {k: v.detach().float().cpu().numpy() for k, v in module.state_dict().items()}
    inits = {i.name: i for i in model.graph.initializer}
    if any(k not in inits or tuple(inits[k].dims) != v.shape for k, v in weights.items()):
        return None
    for k, v in weights.items():
        inits[k].CopyFrom(numpy_helper.from_array(v, k))
    onnx.save(model, str(path))
    return int(next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")))


def _onnx_max_abs_diff(module: nn.Module, path: Path, feats: torch.Tensor) -> float:
    """max |PyTorch - onnxruntime| of the log-posteriors on ``feats`` and on its first 5 frames."""
    am = OnnxPosteriors(path, threads=1)
    with torch.no_grad():
        return max(float((module(x) - am(x)).abs().max()) for x in (feats, feats[:5]))


def _export_checked_onnx(name: str, module: nn.Module, feats: torch.Tensor, path: Path,
                         skipped: str | None, like: Path | None) -> dict[str, Any]:
    """am.onnx for ``module`` (the graph of ``like`` with this module's weights where it fits, else
    exported), checked against PyTorch on ``feats`` (a real utterance) and on its first 5 frames
    (fewer than a window); what model.json says of it."""
    if skipped is not None:
        return {"file": None, "skipped": skipped}
    import onnxruntime

    opset = reuse_onnx_graph(module, like, path) if like is not None else None
    max_diff = _onnx_max_abs_diff(module, path, feats) if opset is not None else math.inf
    graph = f"{like.parent.name}'s, with these weights" if opset is not None else "exported"
    if not max_diff <= EXPORT_ATOL:
        if opset is not None:
            log.info("%s: %s's ONNX graph does not fit (%.2e); exporting its own", name, like.parent.name, max_diff)
        opset, graph = export_onnx(module, feats[: min(len(feats), 64)], path), "exported"
        max_diff = _onnx_max_abs_diff(module, path, feats)
    if not max_diff <= EXPORT_ATOL:
        raise ValueError(f"{name}: {path.name} run by onnxruntime {onnxruntime.__version__} differs from the PyTorch "
                         f"model by {max_diff:.2e} (> {EXPORT_ATOL}) on a {len(feats)}-frame utterance; not exported. "
                         "Install the locked versions (pip install -r requirements.lock), or uninstall onnxruntime "
                         "to export TorchScript only")
    return {"file": path.name, "opset": opset, "input": ONNX_INPUT, "output": ONNX_OUTPUT, "dynamic_axes": ["T"],
            "max_abs_diff": max_diff, "exporter": f"torch.onnx (dynamo) {torch.__version__}", "graph": graph,
            "onnxruntime": onnxruntime.__version__}


# ---------------------------------------------------------------------------------------------
# Inference cost
# ---------------------------------------------------------------------------------------------
def measure_rtf(am: nn.Module, feats: np.ndarray, *, streaming_frames: int = 100, repeats: int = 3) -> dict[str, float]:
    """Acoustic-model real-time factors on one CPU thread: the whole utterance in one call, and
    streaming-style (one 26-frame window a call, batch 1) over ``streaming_frames`` frames."""
    x = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            am(x[:32])  # warm-up (TorchScript profiling runs)
            whole = min(_timed(lambda: am(x)) for _ in range(repeats))
            n = min(streaming_frames, len(x))
            frames = [x[max(0, t - 20) : t + 6] for t in range(n)]
            stream = min(_timed(lambda: [am(f) for f in frames]) for _ in range(repeats))
    finally:
        torch.set_num_threads(threads)
    # Streaming: each call returns posteriors for all the frames it is given; the cost per frame
    # is the call's cost (a window of <= 26 frames stands for one output frame).
    return {"whole_utterance_rtf": whole / (len(x) * 0.01), "streaming_batch1_rtf": stream / (n * 0.01),
            "frames": int(len(x))}


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# Reading a model directory back: the transcriber
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Word:
    word: str
    start: float | None  # seconds (None: the word could not be matched to the path's phones)
    end: float | None


@dataclass(frozen=True)
class Transcript:
    utt: str
    words: list[Word]
    ok: bool  # False: no path reached a final state (the best partial path is given)
    duration: float  # seconds of audio
    rtf: float  # (features + network + search) seconds / audio seconds

    @property
    def text(self) -> str:
        return " ".join(w.word for w in self.words)

    def as_json(self) -> dict[str, Any]:
        return {"utt": self.utt, "text": self.text, "ok": self.ok, "duration": round(self.duration, 3),
                "rtf": round(self.rtf, 4),
                "words": [{"word": w.word, "start": w.start, "end": w.end} for w in self.words]}


class ModelDirError(ValueError):
    """A directory that is not a complete model directory; names the missing or bad file."""


class Transcriber:
    """Audio files -> words with one model directory (see the module docstring).

    ``backend``: ``torchscript`` runs am.pt with torch, ``onnx`` runs am.onnx with onnxruntime
    (CPU, as many threads as torch would use); both give the same log-posteriors within 1e-4."""

    def __init__(self, model_dir: str | os.PathLike, *, beam: float | None = None, max_active: int | None = None,
                 acoustic_scale: float | None = None, backend: str = "torchscript") -> None:
        from asr_kd.align.model import load_model
        from asr_kd.decoding.graph import read_hclg, read_word_symbols
        from asr_kd.decoding.search import Decoder, SearchConfig

        self.dir = Path(model_dir)
        md = ModelDir(self.dir)
        meta = md.model_json
        if not meta.exists():
            raise ModelDirError(f"{self.dir}: no {meta.name}; a model directory is written by the export stage "
                                f"(<exp>/models/<system>/)")
        self.info = json.loads(meta.read_text())
        if self.info.get("format") != FORMAT:
            raise ModelDirError(f"{meta}: format {self.info.get('format')!r}, this version reads {FORMAT!r}")
        for f in self.info.get("sha256", {}):
            if not (self.dir / f).exists():
                raise ModelDirError(f"{self.dir / f} is missing; copy the whole model directory")
        self.backend = backend
        self.am = self._load_network(md)
        hmm = load_model(self.dir)
        run = self.info["decoding"].get("search", {})  # the run's decode settings, unless overridden
        search = SearchConfig(beam or run.get("beam", 13.0), max_active or int(run.get("max_active", 7000)),
                              run.get("lattice_beam", 6.0), run.get("decoder", "lattice"))  # older dirs: lattice
        self.decoder = Decoder(read_hclg(md.hclg), hmm.trans_model, read_word_symbols(md.words), search)
        self.trans_model = hmm.trans_model
        self.log_prior = np.load(md.log_priors)
        self.scale = acoustic_scale or float(self.info["decoding"]["acoustic_scale"])
        cmvn = json.loads(md.cmvn.read_text())
        count = float(cmvn["count"])
        self.global_mean = np.asarray(cmvn["sum"], np.float64) / count
        self.global_std = np.sqrt(np.maximum(np.asarray(cmvn["sumsq"], np.float64) / count - self.global_mean ** 2,
                                             1e-10))
        self.cmvn = self.info["cmvn"]["at_transcription"]
        self.fc = self.info["features"]
        self.phone_names = read_word_symbols(md.phones)  # the same 'symbol id' table format
        self.prons = _read_lexicon(md.lexicon)

    def _load_network(self, md: ModelDir) -> Any:
        """The acoustic model of the chosen backend: (T, D) tensor -> (T, N) log-posteriors."""
        if self.backend == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return torch.jit.load(str(md.am)).eval()
        if self.backend != "onnx":
            raise ModelDirError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        onnx_info = self.info["acoustic_model"].get("onnx") or {}
        if not onnx_info.get("file"):
            why = onnx_info.get("skipped") or "exported before ONNX was written"
            raise ModelDirError(f"{self.dir}: no am.onnx when it was exported: {why}. Re-run the export stage with "
                                "the 'onnx' extra installed, or use --backend torchscript")
        try:
            return OnnxPosteriors(self.dir / onnx_info["file"])
        except ImportError as e:
            raise ModelDirError(f"--backend onnx needs onnxruntime ({e}); pip install 'asr-kd[onnx]', or use "
                                "--backend torchscript") from e

    # -- features -------------------------------------------------------------------------
    def read_audio(self, path: str | os.PathLike) -> np.ndarray:
        """Mono float samples at the model's sample rate (resampled when the file differs)."""
        import soundfile as sf

        try:
            samples, sr = sf.read(str(path), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, OSError) as e:
            raise ModelDirError(f"{path}: cannot read audio ({e})") from e
        if samples.shape[0] == 0:
            raise ModelDirError(f"{path}: no samples")
        mono = samples.mean(axis=1)
        want = int(self.fc["sample_rate"])
        if sr != want:
            import torchaudio.functional as taf

            mono = taf.resample(torch.from_numpy(mono), sr, want).numpy()
        return mono

    def features(self, samples: np.ndarray) -> np.ndarray:
        """Kaldi fbank with the run's settings, normalised as the model directory says: (T, D)."""
        from asr_kd.config import FeatureConfig
        from asr_kd.data.features import fbank

        fc = FeatureConfig(num_mel_bins=int(self.fc["num_mel_bins"]), frame_length_ms=float(self.fc["frame_length_ms"]),
                           frame_shift_ms=float(self.fc["frame_shift_ms"]))
        feats = fbank(samples, int(self.fc["sample_rate"]), fc).astype(np.float64)  # (T, D)
        if self.cmvn == "utterance":
            mean = feats.mean(axis=0)
            std = np.sqrt(np.maximum(feats.var(axis=0), 1e-10))
        elif self.cmvn == "global":
            mean, std = self.global_mean, self.global_std
        else:
            return feats.astype(np.float32)
        return ((feats - mean) / std).astype(np.float32)

    # -- search ---------------------------------------------------------------------------
    def transcribe_samples(self, utt: str, samples: np.ndarray) -> Transcript:
        import kaldi_hmm_gmm as khg

        from asr_kd.decoding.search import hybrid_scores

        t0 = time.perf_counter()
        feats = self.features(samples)
        duration = len(samples) / float(self.fc["sample_rate"])
        if len(feats) == 0:
            return Transcript(utt, [], False, duration, 0.0)
        with torch.no_grad():
            lp = self.am(torch.from_numpy(feats)).numpy()
        scores = hybrid_scores(lp, self.log_prior, self.decoder.tid_pdf, self.scale)
        ok, ali, word_ids = self.decoder.best_path(utt, khg.DecodableCtc(scores))
        words = [self.decoder.word_symbols[i] for i in word_ids]
        shift = float(self.fc["frame_shift_ms"]) / 1000.0
        timed = word_times(words, phone_segments(ali, self.trans_model), self.phone_names, self.prons, shift)
        return Transcript(utt, timed, bool(ok), duration, (time.perf_counter() - t0) / max(duration, 1e-9))

    def transcribe(self, path: str | os.PathLike, utt: str | None = None) -> Transcript:
        return self.transcribe_samples(utt or Path(path).stem, self.read_audio(path))


def phone_segments(ali: Sequence[int], trans_model: Any) -> list[tuple[int, int, int]]:
    """(phone id, first frame, last frame + 1) of each phone on a transition-id path.

    A phone is over once its HMM has taken the transition out of its final state; the next frame
    whose transition belongs to a first HMM state starts the next phone. This holds with Kaldi's
    reordered transitions (the self-loops of a state after its forward transition) and without,
    for phones of two or more states."""
    segs: list[tuple[int, int, int]] = []
    ended = True
    for t, tid in enumerate(map(int, ali)):
        if ended and trans_model.transition_ids_is_start_of_phone(tid):
            segs.append((int(trans_model.transition_id_to_phone(tid)), t, t + 1))
            ended = False
        elif segs:
            p, s, _ = segs[-1]
            segs[-1] = (p, s, t + 1)
        ended = ended or trans_model.is_final(tid)
    return segs


def word_times(words: Sequence[str], segs: Sequence[tuple[int, int, int]], phone_names: dict[int, str],
               prons: dict[str, list[tuple[str, ...]]], shift: float) -> list[Word]:
    """Times of the best path's words: walk its phones, skipping optional silence, and match each
    word to one of its pronunciations. A word that does not match gets no times (and the walk
    stops matching), never wrong ones."""
    names = [phone_names.get(p, "") for p, _, _ in segs]
    out: list[Word] = []
    i = 0
    for w in words:
        while i < len(names) and _is_silence(names[i]) and not any(pr and _is_silence(pr[0])
                                                                     for pr in prons.get(w, [])):
            i += 1
        match = next((pr for pr in sorted(prons.get(w, []), key=len, reverse=True)
                      if tuple(names[i : i + len(pr)]) == pr), None)
        if match is None:
            out.append(Word(w, None, None))
            i = len(names) + 1  # lost: no times for the rest
            continue
        start, end = segs[i][1], segs[i + len(match) - 1][2]
        out.append(Word(w, round(start * shift, 3), round(end * shift, 3)))
        i += len(match)
    return out


def _is_silence(phone: str) -> bool:
    return phone.split("_")[0] == "SIL"


def _read_lexicon(path: Path) -> dict[str, list[tuple[str, ...]]]:
    prons: dict[str, list[tuple[str, ...]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if parts:
            prons.setdefault(parts[0], []).append(tuple(parts[1:]))
    return prons


# ---------------------------------------------------------------------------------------------
# The model card (README.md of a model directory)
# ---------------------------------------------------------------------------------------------
SYNTHETIC_WARNING = ("**A demo model: it does not read real speech.** It was trained on the embedded "
                     "synthetic corpus (English sentences read by speech synthesizers), for the recipe's demo "
                     "and tests. Use it to try the tools; train on a real corpus (`--data-root`) to "
                     "transcribe recordings.")


def card_scores(counts: Any | None, decoded: dict[str, Any]) -> dict[str, Any]:
    """A system's test figures for its card: WER and frame accuracy from its decode summary, with
    95 % intervals from the paired bootstrap of :mod:`asr_kd.decoding.stats` over its test
    utterances (the report's resamples when every system has the same utterances), and the counts.
    ``counts``: its :class:`~asr_kd.decoding.stats.UttCounts` (None: the figures without intervals)."""
    from asr_kd.decoding.stats import Bootstrap, interval

    out: dict[str, Any] = {"wer": decoded.get("wer"), "frame_acc": decoded.get("frame_acc"),
                           "dev_frame_acc": decoded.get("dev_frame_acc"), "wer_ci": None, "frame_acc_ci": None,
                           "utterances": None, "words": None, "frames": None}
    if counts is None or not counts.utts:
        return out
    utts = sorted(counts.utts)
    c = counts.reorder(utts)
    boot = Bootstrap(utts)
    out.update(wer_ci=interval(boot.wer(c)), utterances=len(utts), words=int(c.words.sum()),
               frames=int(c.frames.sum()))
    if c.frames.sum() > 0:
        out["frame_acc_ci"] = interval(boot.frame_acc(c))
    return out


def _pct(x: float | None, ci: Sequence[float] | None = None) -> str:
    if x is None:
        return "n/a"
    return f"{100 * x:.1f} %" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def model_card(info: dict[str, Any], size_bytes: int, *, what: str, training: dict[str, Any],
               scores: dict[str, Any]) -> str:
    """The model card of one model directory, in Markdown.

    ``info``: its model.json (without checksums); ``what``: one sentence on the system;
    ``training``: ``synthetic`` (bool), ``corpus`` (a sentence), and optionally ``utterances``,
    ``speakers``, ``hours`` of the training split; ``scores``: :func:`card_scores`."""
    name = info["system"]
    am = info["acoustic_model"]
    lines = [f"# {name}", ""]
    if training.get("synthetic"):
        lines += [f"> {SYNTHETIC_WARNING}", ""]
    lines += ["## What it is", "", what, "",
              f"A hybrid DNN-HMM system: the network maps a {sum(am['context']) + 1}-frame window of "
              f"{info['features'].get('num_mel_bins', 40)} log-Mel filterbanks (Kaldi fbank, CMVN: "
              f"{info['cmvn']['trained_with']}) to log p(state) over {am['num_pdfs']} tied HMM states; "
              "the state log-likelihoods (posterior minus prior, times the acoustic scale "
              f"{info['decoding']['acoustic_scale']} chosen on dev) are searched through the HCLG graph "
              "(trigram LM, lexicon, HMM). Written by asr-kd's export stage.", "",
              "## Training data", "", training.get("corpus", "(not recorded)"), ""]
    counts = [f"{training[k]:,} {k}" for k in ("utterances", "speakers") if training.get(k) is not None]
    hours = training.get("hours")
    if hours is not None:
        counts.append(f"{hours:.1f} hours" if hours >= 1 else f"{60 * hours:.1f} minutes")
    if counts:
        lines += [f"Training split: {', '.join(counts)}.", ""]
    lines += ["## Test results", "",
              "On the run's test split (speakers not heard in training), at the acoustic scale chosen on dev; "
              "95 % intervals from 1,000 bootstrap resamples of the test utterances.", "",
              "| WER | frame accuracy | test utterances | reference words |", "|---|---|---|---|",
              f"| {_pct(scores.get('wer'), scores.get('wer_ci'))} | "
              f"{_pct(scores.get('frame_acc'), scores.get('frame_acc_ci'))} | "
              f"{scores['utterances'] if scores.get('utterances') is not None else 'n/a'} | "
              f"{scores['words'] if scores.get('words') is not None else 'n/a'} |", ""]
    if scores.get("dev_frame_acc") is not None:
        lines += [f"Dev frame accuracy: {_pct(scores['dev_frame_acc'])}.", ""]
    if training.get("synthetic"):
        lines += ["These figures are on synthetic voices; they say nothing of real speech.", ""]
    members = am.get("members", 1)
    lines += ["## Size", "",
              f"- {am['params']:,} parameters" + (f" ({members} networks, {am.get('mean')} mean of their softmaxes)"
                                                  if members > 1 else ""),
              f"- {am['mflops_per_frame']:.2f} MFLOPs per frame (acoustic model)",
              f"- {size_bytes / 1e6:.1f} MB on disk (networks, graph, HMM and the rest of this directory)", "",
              "## How to run it", "", "From the directory that holds this one:", "", "```bash",
              f"python -m asr_kd.transcribe {name} a.flac b.wav            # 'utt-id words' a line",
              f"python -m asr_kd.transcribe {name} a.flac --json           # with word times and RTF"]
    if (am.get("onnx") or {}).get("file"):
        lines.append(f"python -m asr_kd.transcribe {name} a.flac --backend onnx  # am.onnx through onnxruntime")
    lines += ["```", "",
              "Any audio format soundfile reads, at any sample rate (resampled to "
              f"{info['features'].get('sample_rate', 16000)} Hz). It needs asr-kd installed (torch, torchaudio and "
              "the Kaldi wheels); it reads nothing outside this directory. Copy the whole directory: "
              "model.json lists every file with its sha256.", "",
              "## Files", "",
              "`am.pt` (TorchScript) and `am.onnx` (ONNX, when written): normalised fbank (T, D) -> log-posteriors "
              "(T, N); `HCLG.fst`, `words.txt`: the decoding graph; `final.mdl`, `tree`: the HMM; "
              "`log_priors.npy`: state priors; `cmvn.json`: training CMVN statistics; `phones.txt`, `lexicon.txt`: "
              "for word times; `model.json`: all settings and checksums.", ""]
    return "\n".join(lines)
