"""``python -m asr_kd.transcribe``: what it needs and how it fails (the end-to-end run is in
tests/recipes/test_smoke.py)."""

from __future__ import annotations

import subprocess
import sys

from asr_kd import transcribe


def test_transcription_does_not_load_lightning() -> None:
    code = ("import sys, asr_kd.transcribe, asr_kd.decoding.modeldir, asr_kd.align.model, "
            "asr_kd.decoding.graph, asr_kd.decoding.search; "
            "print(sorted(m for m in ('lightning', 'pytorch_lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_directory_that_is_not_a_model_directory_is_named(tmp_path, capsys) -> None:
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"")
    assert transcribe.main([str(tmp_path / "nowhere"), str(audio)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nowhere" in err and "export stage" in err


def test_exp_dir_without_exported_models_says_which_stage_to_run(tmp_path) -> None:
    try:
        transcribe.main(["--exp-dir", str(tmp_path / "exp"), "x.wav"])
    except SystemExit as e:
        assert "models/index.json is missing" in str(e) and "--stage export" in str(e)
    else:
        raise AssertionError("expected SystemExit")


def test_backend_onnx_on_a_model_dir_without_onnx_says_why_and_what_to_do(tmp_path, capsys) -> None:
    import numpy as np
    import torch

    from asr_kd.decoding import modeldir
    from asr_kd.nn.models import AcousticDNN

    src = modeldir.ExportSources(copies={}, log_priors=np.zeros(17), cmvn_global={"count": 1.0, "sum": [0.0] * 40,
                                 "sumsq": [1.0] * 40}, features={"num_mel_bins": 40, "sample_rate": 16000},
                                 cmvn_mode="speaker")
    modeldir.export_model_dir("teacher-0", AcousticDNN(26 * 40, 1, 16, 17), tmp_path / "m", src, left=20, right=5,
                              mean="arithmetic", acoustic_scale=0.1, check_feats=torch.randn(30, 40).numpy(),
                              search={}, onnx_skipped="onnxruntime not importable")
    assert transcribe.main([str(tmp_path / "m"), str(tmp_path / "a.wav"), "--backend", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "no am.onnx when it was exported: onnxruntime not importable" in err and "--backend torchscript" in err
