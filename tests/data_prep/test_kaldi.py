"""The Kaldi data-dir reader: files, pipes, ark entries, segments, other sample rates, and every
kind of input that does not pair up, counted and named."""

from __future__ import annotations

from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf

from data_prep.kaldi import read_kaldi_corpus
from data_prep.librispeech import CorpusError

SR = 16000
WORDS = ["HELLO WORLD", "THE CAT SAT", "A GOOD DAY", "ONE TWO THREE", "YES NO", "RED BLUE GREEN"]


def tone(seconds: float, rate: int = SR, seed: int = 0) -> np.ndarray:
    """Noise in int16 (never silent), ``seconds`` long at ``rate``."""
    rng = np.random.default_rng(seed)
    return rng.integers(-8000, 8000, int(round(seconds * rate)), dtype=np.int16)


def write_dir(d: Path, wav: dict[str, str], text: dict[str, str], utt2spk: dict[str, str],
              segments: list[str] | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "wav.scp").write_text("".join(f"{k} {v}\n" for k, v in wav.items()))
    (d / "text").write_text("".join(f"{k}\t{v}\n" for k, v in text.items()))  # tab or space: both are Kaldi
    (d / "utt2spk").write_text("".join(f"{k} {v}\n" for k, v in utt2spk.items()))
    if segments is not None:
        (d / "segments").write_text("".join(line + "\n" for line in segments))
    return d


def read(root: Path, tmp_path: Path, **kw):
    """Read ``root/train`` as every split (the reader wants three)."""
    return read_kaldi_corpus(root, {"train": ("train",), "dev": ("train",), "test": ("train",)}, tmp_path / "audio",
                             oov_policy="skip", **kw)


def samples_of(path: str) -> np.ndarray:
    data, rate = sf.read(path, dtype="int16")
    assert rate == SR
    return data


def test_files_pipes_and_ark_entries_are_read_and_bad_ones_counted(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    audio = {u: tone(1.0, seed=i) for i, u in enumerate(["a", "b", "c"])}
    sf.write(src / "a.wav", audio["a"], SR)
    sf.write(src / "b.flac", audio["b"], SR)
    with open(src / "c.ark", "wb") as f:
        kaldiio.save_ark(f, {"c": (SR, audio["c"])}, scp=str(src / "c.scp"))
    ark_entry = (src / "c.scp").read_text().split()[1]
    wav = {"a": str(src / "a.wav"), "b": f"sox {src / 'b.flac'} -t wav - |", "c": ark_entry,
           "d": "false |", "e": str(src / "missing.wav"), "g": str(src / "a.wav"), "h": str(src / "a.wav")}
    text = {"a": WORDS[0], "b": WORDS[1], "c": WORDS[2], "d": WORDS[3], "e": WORDS[4], "f": WORDS[5], "h": WORDS[0]}
    spk = {u: "spk1" for u in "abcdefg"}
    write_dir(tmp_path / "root" / "train", wav, text, spk)

    corpus = read(tmp_path / "root", tmp_path)
    utts = {u.id: u for u in corpus.splits["train"]}
    assert sorted(utts) == ["a", "b", "c"]
    assert utts["a"].audio == str((src / "a.wav").resolve())  # a 16 kHz file is read in place
    for u in "abc":
        assert np.array_equal(samples_of(utts[u].audio), audio[u]), u  # pipes and arks: sample-exact
        assert utts[u].num_samples == SR and utts[u].speaker == "spk1" and utts[u].text == text[u]
    assert Path(utts["b"].audio).parent == (tmp_path / "audio" / "train").resolve()
    s = corpus.summary["splits"]["train"]
    assert (s["materialised"], s["resampled"]) == (2, 0)
    assert s["skipped"]["counts"] == {"pipe_failed": 1, "missing_audio_file": 1, "transcript_without_audio": 1,
                                      "audio_without_transcript": 1, "no_speaker": 1}
    ex = s["skipped"]["examples"]
    assert ex["pipe_failed"][0].startswith("d: `false` exited 1")  # the utterance and its command
    assert "missing.wav" in ex["missing_audio_file"][0] and "(e)" in ex["missing_audio_file"][0]
    assert "(f)" in ex["transcript_without_audio"][0] and "(g)" in ex["audio_without_transcript"][0]
    assert "h" in ex["no_speaker"][0]


def test_segments_are_cut_sample_exact_and_bad_ones_counted(tmp_path: Path) -> None:
    parts = [tone(0.5, seed=1), tone(0.7321875, seed=2), tone(0.4, seed=3)]
    rec = np.concatenate(parts)  # 1.6321875 s
    sf.write(tmp_path / "rec1.wav", rec, SR)
    sf.write(tmp_path / "rec2.wav", tone(1.0, seed=4), SR)
    b0, b1 = len(parts[0]) / SR, (len(parts[0]) + len(parts[1])) / SR
    segments = [
        f"u1 rec1 0 {b0!r}", f"u2 rec1 {b0!r} {b1!r}",
        f"u3 rec1 {b1!r} {len(rec) / SR + 0.3!r}",  # overshoots by 0.3 s: cut at the end (Kaldi: up to 0.5 s)
        "u4 rec1 1.5 -1",  # -1: to the end
        "u5 rec1 3.0 4.0",  # outside the recording
        "u6 nosuch 0 1",  # recording not in wav.scp
        "u7 rec1 0.5 0.2",  # ends before it starts
    ]
    wav = {"rec1": str(tmp_path / "rec1.wav"), "rec2": str(tmp_path / "rec2.wav")}
    text = {f"u{i}": WORDS[i % len(WORDS)] for i in range(1, 8)}
    write_dir(tmp_path / "root" / "train", wav, text, {u: "s" for u in text}, segments)

    corpus = read(tmp_path / "root", tmp_path)
    utts = {u.id: u for u in corpus.splits["train"]}
    assert sorted(utts) == ["u1", "u2", "u3", "u4"]
    assert np.array_equal(samples_of(utts["u1"].audio), parts[0])
    assert np.array_equal(samples_of(utts["u2"].audio), parts[1])
    assert np.array_equal(samples_of(utts["u3"].audio), parts[2])
    assert np.array_equal(samples_of(utts["u4"].audio), rec[round(1.5 * SR):])
    assert utts["u2"].chapter == "rec1" and utts["u2"].num_samples == len(parts[1])
    s = corpus.summary["splits"]["train"]
    assert s["materialised"] == 4
    assert s["skipped"]["counts"] == {"segment_outside_audio": 1, "missing_recording": 1, "bad_table_line": 1,
                                      "recording_without_segments": 1}
    assert "u5" in " ".join(s["skipped"]["examples"]["segment_outside_audio"])
    assert "nosuch" in s["skipped"]["examples"]["missing_recording"][0]


def test_other_sample_rates_are_resampled_and_counted(tmp_path: Path) -> None:
    sf.write(tmp_path / "lo.wav", tone(1.0, rate=8000), 8000)
    sf.write(tmp_path / "hi.flac", tone(1.0, rate=44100), 44100)
    sf.write(tmp_path / "ok.wav", tone(1.0), SR)
    wav = {"lo": str(tmp_path / "lo.wav"), "hi": str(tmp_path / "hi.flac"), "ok": str(tmp_path / "ok.wav")}
    text = {"lo": WORDS[0], "hi": WORDS[1], "ok": WORDS[2]}
    write_dir(tmp_path / "root" / "train", wav, text, {u: "s" for u in wav})

    corpus = read(tmp_path / "root", tmp_path)
    utts = {u.id: u for u in corpus.splits["train"]}
    assert sorted(utts) == ["hi", "lo", "ok"]
    for u in ("lo", "hi"):
        info = sf.info(utts[u].audio)
        assert info.samplerate == SR and info.frames == utts[u].num_samples == SR
    assert utts["ok"].audio == str((tmp_path / "ok.wav").resolve())
    s = corpus.summary["splits"]["train"]
    assert (s["materialised"], s["resampled"]) == (2, 2)
    assert s["skipped"]["counts"] == {}


def test_stereo_and_silent_audio_are_skipped_with_the_librispeech_reasons(tmp_path: Path) -> None:
    sf.write(tmp_path / "st.wav", np.stack([tone(1.0), tone(1.0, seed=5)], axis=1), SR)
    sf.write(tmp_path / "zero.wav", np.zeros(SR, dtype=np.int16), 8000)
    sf.write(tmp_path / "ok.wav", tone(1.0), SR)
    wav = {"st": f"sox {tmp_path / 'st.wav'} -t wav - |", "zero": str(tmp_path / "zero.wav"),
           "ok": str(tmp_path / "ok.wav")}
    text = {"st": WORDS[0], "zero": WORDS[1], "ok": WORDS[2]}
    write_dir(tmp_path / "root" / "train", wav, text, {u: "s" for u in wav})
    s = read(tmp_path / "root", tmp_path).summary["splits"]["train"]
    assert s["skipped"]["counts"] == {"not_mono": 1, "silent_audio": 1}
    assert s["utterances"] == 1


def test_a_missing_tool_stops_the_reader_naming_the_utterance_and_command(tmp_path: Path) -> None:
    write_dir(tmp_path / "root" / "train", {"a": "no-such-tool-xyz -d a.flac |"}, {"a": WORDS[0]}, {"a": "s"})
    with pytest.raises(CorpusError, match=r"wav.scp entry of a: `no-such-tool-xyz -d a.flac` exited 127"):
        read(tmp_path / "root", tmp_path)


def test_a_data_dir_without_text_or_speakers_is_named(tmp_path: Path) -> None:
    d = write_dir(tmp_path / "root" / "train", {"a": "x.wav"}, {"a": WORDS[0]}, {"a": "s"})
    (d / "utt2spk").unlink()
    with pytest.raises(CorpusError, match="neither utt2spk nor spk2utt"):
        read(tmp_path / "root", tmp_path)
    (d / "text").unlink()
    with pytest.raises(CorpusError, match=r"train is not a Kaldi data dir: it has no text"):
        read(tmp_path / "root", tmp_path)
    with pytest.raises(CorpusError, match="subset directory .*nodir does not exist"):
        read_kaldi_corpus(tmp_path / "root", {"train": ("nodir",)}, tmp_path / "audio")


def test_spk2utt_alone_gives_the_speakers(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.wav", tone(1.0), SR)
    d = write_dir(tmp_path / "root" / "train", {"a": str(tmp_path / "a.wav")}, {"a": WORDS[0]}, {"a": "s"})
    (d / "utt2spk").unlink()
    (d / "spk2utt").write_text("spkA a\n")
    assert read(tmp_path / "root", tmp_path).splits["train"][0].speaker == "spkA"
