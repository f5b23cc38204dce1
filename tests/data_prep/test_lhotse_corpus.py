"""The lhotse reader, through the real lhotse package: one utterance per supervision, channels,
CutSets, files read in place, resampling, and what does not pair up counted."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_prep.librispeech import CorpusError
from data_prep.lhotse_corpus import read_lhotse_corpus

lhotse = pytest.importorskip("lhotse")

SR = 16000


def noise(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-8000, 8000, n, dtype=np.int16)


def sup(id_: str, rec: str, start: float, duration: float, text: str | None = "HELLO WORLD",
        speaker: str | None = "spk1", channel: int | list[int] = 0):
    return lhotse.SupervisionSegment(id=id_, recording_id=rec, start=start, duration=duration, channel=channel,
                                     text=text, speaker=speaker)


def write_part(root: Path, part: str, recordings: list, supervisions: list) -> None:
    root.mkdir(parents=True, exist_ok=True)
    lhotse.RecordingSet.from_recordings(recordings).to_file(root / f"corpus_recordings_{part}.jsonl.gz")
    lhotse.SupervisionSet.from_segments(supervisions).to_file(root / f"corpus_supervisions_{part}.jsonl.gz")


def read(root: Path, tmp_path: Path, part: str = "train"):
    return read_lhotse_corpus(root, {"train": (part,), "dev": (part,), "test": (part,)}, tmp_path / "audio",
                              oov_policy="skip")


def samples_of(path: str) -> np.ndarray:
    data, rate = sf.read(path, dtype="int16")
    assert rate == SR
    return data


def test_a_recording_with_several_supervisions_gives_one_utterance_each(tmp_path: Path) -> None:
    audio = noise(3 * SR, seed=1)
    sf.write(tmp_path / "long.wav", audio, SR)
    sf.write(tmp_path / "other.wav", noise(SR, seed=2), SR)
    long = lhotse.Recording.from_file(tmp_path / "long.wav", recording_id="long")
    other = lhotse.Recording.from_file(tmp_path / "other.wav", recording_id="other")
    sups = [sup("s1", "long", 0.0, 1.0), sup("s2", "long", 1.0, 1.25, text="THE CAT SAT", speaker="spk2"),
            sup("s3", "long", 2.25, 0.75), sup("s4", "nosuch", 0.0, 1.0), sup("s5", "long", 0.5, 0.5, text=""),
            sup("s6", "long", 0.5, 0.5, speaker=None), sup("s7", "long", 5.0, 1.0)]
    write_part(tmp_path / "root", "train", [long, other], sups)

    corpus = read(tmp_path / "root", tmp_path)
    utts = {u.id: u for u in corpus.splits["train"]}
    assert sorted(utts) == ["s1", "s2", "s3"]
    assert np.array_equal(samples_of(utts["s1"].audio), audio[:SR])
    assert np.array_equal(samples_of(utts["s2"].audio), audio[SR : SR + 20000])
    assert np.array_equal(samples_of(utts["s3"].audio), audio[36000:])
    assert (utts["s2"].speaker, utts["s2"].text, utts["s2"].chapter) == ("spk2", "THE CAT SAT", "long")
    s = corpus.summary["splits"]["train"]
    assert (s["materialised"], s["resampled"], s["downmixed"]) == (3, 0, 0)
    assert s["skipped"]["counts"] == {"transcript_without_audio": 1, "empty_transcript": 1, "no_speaker": 1,
                                      "segment_outside_audio": 1, "audio_without_transcript": 1}
    assert "s4" in s["skipped"]["examples"]["transcript_without_audio"][0]
    assert "other" in s["skipped"]["examples"]["audio_without_transcript"][0]


def test_whole_files_are_read_in_place_and_other_rates_resampled(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.flac", noise(SR, seed=3), SR)
    sf.write(tmp_path / "b.wav", noise(22050, seed=4), 22050)
    recs = [lhotse.Recording.from_file(tmp_path / "a.flac", recording_id="a"),
            lhotse.Recording.from_file(tmp_path / "b.wav", recording_id="b")]
    write_part(tmp_path / "root", "train", recs, [sup("a", "a", 0.0, 1.0), sup("b", "b", 0.0, 1.0)])

    corpus = read(tmp_path / "root", tmp_path)
    utts = {u.id: u for u in corpus.splits["train"]}
    assert utts["a"].audio == str((tmp_path / "a.flac").resolve())
    assert sf.info(utts["b"].audio).samplerate == SR and utts["b"].num_samples == SR
    s = corpus.summary["splits"]["train"]
    assert (s["materialised"], s["resampled"]) == (1, 1)


def test_the_supervision_channel_is_read_and_several_are_downmixed(tmp_path: Path) -> None:
    left, right = noise(SR, seed=5), noise(SR, seed=6)
    sf.write(tmp_path / "st.wav", np.stack([left, right], axis=1), SR)
    rec = lhotse.Recording.from_file(tmp_path / "st.wav", recording_id="st")
    write_part(tmp_path / "root", "train", [rec],
               [sup("r", "st", 0.0, 1.0, channel=1), sup("both", "st", 0.0, 1.0, channel=[0, 1])])

    corpus = read(tmp_path / "root", tmp_path)
    utts = {u.id: u for u in corpus.splits["train"]}
    assert np.array_equal(samples_of(utts["r"].audio), right)
    mean = samples_of(utts["both"].audio).astype(np.float64)
    assert np.abs(mean - (left.astype(np.float64) + right) / 2).max() <= 1
    assert corpus.summary["splits"]["train"]["downmixed"] == 1


def test_a_cutset_is_cut_at_its_supervisions(tmp_path: Path) -> None:
    audio = noise(2 * SR, seed=7)
    sf.write(tmp_path / "c.wav", audio, SR)
    rec = lhotse.Recording.from_file(tmp_path / "c.wav", recording_id="c")
    cuts = lhotse.CutSet.from_manifests(
        recordings=lhotse.RecordingSet.from_recordings([rec]),
        supervisions=lhotse.SupervisionSet.from_segments([sup("x", "c", 0.0, 0.5), sup("y", "c", 0.5, 1.5)]))
    root = tmp_path / "root"
    root.mkdir()
    cuts.to_file(root / "cuts_train.jsonl.gz")

    corpus = read(root, tmp_path)
    utts = {u.id: u for u in corpus.splits["train"]}
    assert sorted(utts) == ["x", "y"]
    assert np.array_equal(samples_of(utts["x"].audio), audio[: SR // 2])
    assert np.array_equal(samples_of(utts["y"].audio), audio[SR // 2 :])
    # a part may also be named by its file
    again = read(root, tmp_path, part="cuts_train.jsonl.gz")
    assert [u.id for u in again.splits["train"]] == ["x", "y"]


def test_a_missing_part_lists_the_parts_there(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.wav", noise(SR, seed=8), SR)
    write_part(tmp_path / "root", "dev-clean", [lhotse.Recording.from_file(tmp_path / "a.wav", recording_id="a")],
               [sup("a", "a", 0.0, 1.0)])
    with pytest.raises(CorpusError, match=r"no lhotse manifests for part 'train'.*dev-clean \(recordings, supervisions\)"):
        read(tmp_path / "root", tmp_path)


def test_without_lhotse_installed_the_error_says_how_to_install_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "lhotse", None)  # import lhotse -> ImportError
    (tmp_path / "root").mkdir()
    with pytest.raises(CorpusError, match=r"needs the lhotse package.*asr-kd\[lhotse\]"):
        read(tmp_path / "root", tmp_path)
