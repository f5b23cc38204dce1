"""The prepare stage's cross-synthesizer split with festival's training-side speakers."""

from __future__ import annotations

from pathlib import Path

import pytest

from asr_kd.data.manifest import Utterance, read_manifest, write_manifest
from asr_kd.paths import RunPaths
from asr_kd.runner import StageError
from asr_kd.stages.prepare import split_by_synthesizer

# speaker -> (split, synthesizer); festival speakers exist in train only, as the generator makes them
SPEAKERS = {"101": ("train", "espeak-ng en-us+m1 s150 p50"), "102": ("train", "flite awb stretch1 f0own"),
            "103": ("dev", "espeak-ng en-gb+f2 s150 p50"), "104": ("dev", "flite slt stretch1 f0own"),
            "105": ("test", "espeak-ng en-gb+m3 s150 p50"), "106": ("test", "flite rms stretch1 f0own"),
            "107": ("train", "festival ked stretch1.1 f0100"), "108": ("train", "festival ked stretch1 f0200 shift+400")}


def fake_corpus(tmp_path: Path) -> tuple[Path, RunPaths]:
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "SPEAKERS.TXT").write_text(";ID  |SEX| SUBSET      |MINUTES| NAME\n" + "".join(
        f"{spk}  | M | {split}-synth |  1.00 | {name}\n" for spk, (split, name) in SPEAKERS.items()))
    paths = RunPaths(tmp_path / "exp")
    for split in ("train", "dev", "test"):
        paths.manifest(split).parent.mkdir(parents=True, exist_ok=True)
        write_manifest(paths.manifest(split), [
            Utterance(f"{spk}-1-{i:04d}", spk, "1", str(root / f"{spk}-{i}.flac"), "A WORD", 16000, 16000)
            for spk, (s, _) in SPEAKERS.items() if s == split for i in range(3)])
    return root, paths


def speakers(path: Path) -> set[str]:
    return {u.speaker for u in read_manifest(path)}


def test_espeak_with_festival_trains_on_both_and_tests_on_flite(tmp_path: Path) -> None:
    root, paths = fake_corpus(tmp_path)
    out = split_by_synthesizer(root, paths, "espeak,festival", per_speaker=2)
    assert speakers(paths.manifest("train")) == {"101", "107", "108"}
    assert speakers(paths.manifest("dev")) == {"103"} and speakers(paths.manifest("test")) == {"105"}
    cross = read_manifest(paths.condition_manifest("cross-synth"))
    assert {u.speaker for u in cross} == {"102", "104", "106"} and len(cross) == 6
    assert out["conditions"]["cross-synth"]["synthesizer"] == "flite"
    assert out["left_out"]["train"] == {"utterances": 0, "speakers": 0}


def test_one_synthesizer_leaves_festival_out_and_counts_it(tmp_path: Path) -> None:
    root, paths = fake_corpus(tmp_path)
    out = split_by_synthesizer(root, paths, "flite")
    assert speakers(paths.manifest("train")) == {"102"}
    assert speakers(paths.condition_manifest("cross-synth")) == {"101", "103", "105"}
    assert out["left_out"]["train"] == {"utterances": 6, "speakers": 2}  # not trained on, not a test condition
    assert out["conditions"]["cross-synth"]["synthesizer"] == "espeak"


def test_a_corpus_without_the_other_synthesizer_is_an_error(tmp_path: Path) -> None:
    root, paths = fake_corpus(tmp_path)
    for split in ("train", "dev", "test"):
        write_manifest(paths.manifest(split), [u for u in read_manifest(paths.manifest(split))
                                               if not SPEAKERS[u.speaker][1].startswith("flite")])
    with pytest.raises(StageError, match="no flite speakers"):
        split_by_synthesizer(root, paths, "espeak,festival")


def test_the_report_counts_where_each_split_went(tmp_path: Path) -> None:
    from asr_kd.stages.report import _synthesizer_table

    root, paths = fake_corpus(tmp_path)
    table = "\n".join(_synthesizer_table(split_by_synthesizer(root, paths, "flite", per_speaker=2)))
    assert "`data.train_synthesizer=flite`" in table and "espeak, held out" in table
    assert "| train | 3 (1 speakers) | 3 (1 speakers) | 6 (2 speakers) |" in table  # festival: left out, counted
    assert "cross-synth: 6 (3 speakers)" in table
    assert _synthesizer_table(None) == []
