"""The manifest: corpus audio by absolute path, audio the run wrote relative to the manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from asr_kd.data.manifest import Utterance, read_manifest, write_manifest


def test_audio_inside_the_run_is_named_relative_and_read_back_where_the_manifest_is(tmp_path: Path) -> None:
    run = tmp_path / "exp" / "prepare"
    inside = run / "audio" / "train" / "b.wav"
    utts = [Utterance("a", "s", "c", "/corpus/a.flac", "HELLO", 16000, 16000),
            Utterance("b", "s", "c", str(inside), "WORLD", 16000, 16000)]
    write_manifest(run / "manifest-train.jsonl", utts)
    rows = [json.loads(line) for line in (run / "manifest-train.jsonl").read_text().splitlines()]
    assert [r["audio"] for r in rows] == ["/corpus/a.flac", "audio/train/b.wav"]
    assert read_manifest(run / "manifest-train.jsonl") == utts
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "exp", moved)
    back = read_manifest(moved / "prepare" / "manifest-train.jsonl")
    assert back[0].audio == "/corpus/a.flac"
    assert back[1].audio == str(moved.resolve() / "prepare" / "audio" / "train" / "b.wav")
