"""Scoring a data set: batches across files, the two protocols, failures, bounded read-ahead and resume.

A stub scorer stands in for AASIST here, so what was scored, in which batches, is visible exactly;
tests/test_eval_cli.py runs the real model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxguard.audio.options import WINDOW, AudioOptions
from voxguard.audio.windows import prepare
from voxguard.datasets import load_dataset
from voxguard.evaluation import runner
from voxguard.evaluation.runner import score_dataset, scoring_protocol
from voxguard.evaluation.scorefile import resume_scores
from voxguard.model.locate import AASIST_SCORE_OFFSET, AASIST_SCORE_SCALE
from voxguard.scoring import Rule, summarize
from voxguard.settings import Settings

RULE = Settings().rule.for_model(AASIST_SCORE_OFFSET, AASIST_SCORE_SCALE)
REFERENCE = scoring_protocol(AudioOptions(), RULE, name="reference", preprocess=None)
SERVICE = scoring_protocol(AudioOptions(), RULE, name="service", preprocess=None)


class StubScorer:
    """Score = 100 x the window's mean absolute sample (distinct per file); records every batch."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.batches: list[np.ndarray] = []
        self.fail_on_call = fail_on_call

    def scores(self, windows: np.ndarray) -> np.ndarray:
        if self.fail_on_call is not None and len(self.batches) + 1 == self.fail_on_call:
            raise KeyboardInterrupt
        self.batches.append(windows.copy())
        return 100.0 * np.abs(windows).mean(axis=1)

    @property
    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches]


def _tone(path: Path, seconds: float, amplitude: float, rate: int = 16000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, subtype="PCM_16")
    return path


def _folder(root: Path, bonafide: int, spoof: int, seconds: float = 1.5) -> Path:
    for label, n in (("bonafide", bonafide), ("spoof", spoof)):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _tone(
                root / label / f"{label}{i:02d}.wav",
                seconds,
                0.05 + 0.04 * i + (0.3 if label == "spoof" else 0),
            )
    return root


def _run(data, scorer, tmp_path, protocol=REFERENCE, batch_size=4, **kwargs):
    return score_dataset(
        data,
        scorer,
        protocol,
        scores_path=tmp_path / "scores.txt",
        batch_size=batch_size,
        workers=2,
        progress=False,
        **kwargs,
    )


def test_batches_span_files_and_every_file_gets_one_line(tmp_path: Path) -> None:
    data = load_dataset(_folder(tmp_path / "set", bonafide=6, spoof=4))
    scorer = StubScorer()
    result = _run(data, scorer, tmp_path, batch_size=4)
    assert scorer.sizes == [4, 4, 2]
    assert (result.scored, result.resumed, result.windows, result.failures) == (10, 0, 10, [])
    lines = (tmp_path / "scores.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == [item.key for item in data.items]
    assert resume_scores(tmp_path / "scores.txt") == result.scores
    rows = np.concatenate(scorer.batches)
    assert [result.scores[item.key] for item in data.items] == pytest.approx(100 * np.abs(rows).mean(axis=1))


def test_reference_protocol_is_the_official_first_window_with_tiling(tmp_path: Path) -> None:
    (tmp_path / "set" / "bonafide").mkdir(parents=True)
    short = _tone(tmp_path / "set" / "bonafide" / "short.wav", 1.3, 0.2)
    long = _tone(tmp_path / "set" / "bonafide" / "long.wav", 9.0, 0.2)
    scorer = StubScorer()
    _run(load_dataset(tmp_path / "set"), scorer, tmp_path)
    got = dict(zip(["long", "short"], np.concatenate(scorer.batches), strict=True))
    # The official evaluation: x[:64600], or x tiled int(64600 / len) + 1 times and cut to 64600.
    for name, path in (("short", short), ("long", long)):
        x, _ = sf.read(path, dtype="float32")
        want = x[:WINDOW] if len(x) >= WINDOW else np.tile(x, WINDOW // len(x) + 1)[:WINDOW]
        np.testing.assert_array_equal(got[name], want)


def test_service_protocol_is_the_service_verdict_score(tmp_path: Path) -> None:
    folder = tmp_path / "set" / "spoof"
    folder.mkdir(parents=True)
    rate = 16000
    speech = 0.3 * np.sin(2 * np.pi * 180 * np.arange(6 * rate) / rate)
    quiet = np.concatenate([speech, np.zeros(8 * rate)]).astype(np.float32)  # later windows are silent
    sf.write(folder / "quiet_tail.wav", quiet, rate, subtype="FLOAT")
    _tone(folder / "tone.wav", 11.0, 0.1)
    data = load_dataset(tmp_path / "set")
    scorer = StubScorer()
    result = _run(data, scorer, tmp_path, protocol=SERVICE, batch_size=3)
    assert sum(scorer.sizes) == result.windows > 2
    for item in data.items:
        audio, windows = prepare(item.path.read_bytes(), AudioOptions())
        verdict = summarize(audio, windows, StubScorer().scores(windows.batch), RULE)
        assert result.scores[item.key] == pytest.approx(verdict.decision.score, rel=1e-6)
    assert any(prepare((folder / "quiet_tail.wav").read_bytes(), AudioOptions())[1].silent)


def test_reference_protocol_has_the_official_output_and_no_speech_floor() -> None:
    assert REFERENCE.rule == Rule(threshold=RULE.threshold)
    assert SERVICE.rule == RULE and RULE.min_reliable_s > 0


def test_service_protocol_reports_too_little_speech_instead_of_scoring_it(tmp_path: Path) -> None:
    root = _folder(tmp_path / "set", bonafide=1, spoof=1, seconds=6.0)
    _tone(root / "bonafide" / "blip.wav", 0.6, 0.3)
    data = load_dataset(root)
    result = _run(data, StubScorer(), tmp_path, protocol=SERVICE)
    assert result.failures == []
    (short,) = result.inconclusive
    assert (short.key, short.path) == ("bonafide/blip.wav", str(root / "bonafide" / "blip.wav"))
    assert short.reason.startswith("too short to judge: 0.6 s of speech")
    assert "blip" not in (tmp_path / "scores.txt").read_text()
    # A verdict, not a failure: a rerun does not judge it again.
    scorer = StubScorer()
    again = _run(data, scorer, tmp_path, protocol=SERVICE)
    assert scorer.sizes == [] and (again.resumed, again.scored) == (3, 0)
    assert again.inconclusive == result.inconclusive and again.failures == []
    (tmp_path / "reference").mkdir()
    reference = _run(data, StubScorer(), tmp_path / "reference")  # the official protocol has no floor
    assert reference.failures == reference.inconclusive == [] and len(reference.scores) == 3
    assert not (tmp_path / "reference" / "inconclusive.jsonl").exists()


def test_without_a_score_file_the_inconclusive_list_starts_over(tmp_path: Path) -> None:
    root = _folder(tmp_path / "set", bonafide=1, spoof=0, seconds=6.0)
    _tone(root / "bonafide" / "blip.wav", 0.6, 0.3)
    data = load_dataset(root)
    first = _run(data, StubScorer(), tmp_path, protocol=SERVICE)
    (tmp_path / "scores.txt").unlink()  # what the provenance check tells a user to do to start again
    scorer = StubScorer()
    again = _run(data, scorer, tmp_path, protocol=SERVICE)
    assert sum(scorer.sizes) == first.windows and again.resumed == 0 and len(again.inconclusive) == 1
    assert len((tmp_path / "inconclusive.jsonl").read_text().splitlines()) == 1


def test_undecodable_files_are_reported_not_fatal(tmp_path: Path) -> None:
    root = _folder(tmp_path / "set", bonafide=2, spoof=2)
    (root / "spoof" / "broken.wav").write_bytes(b"RIFF not really a wave file")
    (root / "spoof" / "empty.flac").write_bytes(b"")
    data = load_dataset(root)
    result = _run(data, StubScorer(), tmp_path)
    assert sorted((f.key, f.code) for f in result.failures) == [
        ("spoof/broken.wav", "undecodable_audio"),
        ("spoof/empty.flac", "empty_input"),
    ]
    assert len(result.scores) == 4
    assert "broken" not in (tmp_path / "scores.txt").read_text()
    again = _run(data, StubScorer(), tmp_path)  # failures are retried, scored files are not
    assert (again.resumed, again.scored, len(again.failures)) == (4, 0, 2)


def test_read_ahead_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = load_dataset(_folder(tmp_path / "set", bonafide=12, spoof=12))
    started: list[str] = []
    real_load = runner._load

    def counting_load(item, protocol):
        started.append(item.key)
        return real_load(item, protocol)

    monkeypatch.setattr(runner, "_load", counting_load)
    seen: list[int] = []

    class Recording(StubScorer):
        def scores(self, windows: np.ndarray) -> np.ndarray:
            out = super().scores(windows)
            seen.append(len(started) - sum(self.sizes))  # decoded or decoding, not yet scored
            return out

    _run(data, Recording(), tmp_path, batch_size=2, prefetch=3)
    assert max(seen) <= 3 + 2 and len(started) == 24


def test_an_interrupted_run_resumes_with_only_the_rest(tmp_path: Path) -> None:
    data = load_dataset(_folder(tmp_path / "set", bonafide=5, spoof=3))
    with pytest.raises(KeyboardInterrupt):
        _run(data, StubScorer(fail_on_call=2), tmp_path, batch_size=3)
    first = (tmp_path / "scores.txt").read_text()
    assert len(first.splitlines()) == 3  # the one batch scored before the interruption
    scorer = StubScorer()
    result = _run(data, scorer, tmp_path, batch_size=3)
    assert (result.resumed, result.scored, sum(scorer.sizes)) == (3, 5, 5)
    text = (tmp_path / "scores.txt").read_text()
    assert text.startswith(first) and len(text.splitlines()) == 8
    assert set(result.scores) == {item.key for item in data.items}


def test_a_cut_short_last_line_is_dropped_and_rescored(tmp_path: Path) -> None:
    data = load_dataset(_folder(tmp_path / "set", bonafide=2, spoof=1))
    keys = [item.key for item in data.items]
    (tmp_path / "scores.txt").write_text(f"{keys[0]} 42.0\n{keys[1]} 7.")
    scorer = StubScorer()
    result = _run(data, scorer, tmp_path)
    assert sum(scorer.sizes) == 2 and result.scores[keys[0]] == 42.0
    lines = (tmp_path / "scores.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == [keys[0], keys[1], keys[2]]
