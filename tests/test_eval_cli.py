"""``voxguard eval`` with the official AASIST weights: each input layout, resume, missing class, --json,
and an end-to-end run on the shared samples plus espeak-ng speech.

espeak-ng (a formant synthesiser) is the spoof class here: honest, but far easier than a modern deepfake.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthetic_speech import espeak_ng
from voxguard.audio.decoding import decode
from voxguard.audio.options import WINDOW, AudioOptions
from voxguard.audio.windows import make_windows, prepare
from voxguard.cli import main
from voxguard.evaluation.metrics import asv_error_rates, equal_error_rate, min_tdcf
from voxguard.evaluation.scorefile import read_asv_scores, resume_scores
from voxguard.model.locate import AASIST_SCORE_OFFSET, AASIST_SCORE_SCALE
from voxguard.scoring import fake_probability, summarize
from voxguard.settings import Settings

SENTENCES = ("The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.")
VOICES = ("en-us", "en-gb+f3")


@pytest.fixture(autouse=True)
def _weights(checkpoint_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXGUARD_CHECKPOINT_DIR", str(checkpoint_dir))


@pytest.fixture(scope="module")
def spoof_clips(tmp_path_factory) -> dict[str, list[Path]]:
    """Two espeak-ng voices (the attacks) speaking two sentences each."""
    folder = tmp_path_factory.mktemp("espeak")
    return {
        voice: [espeak_ng(text, folder / f"{voice}_{i}.wav", voice) for i, text in enumerate(SENTENCES)]
        for voice in VOICES
    }


@pytest.fixture(scope="module")
def bona_fide(samples_dir: Path) -> list[Path]:
    """The two takes with enough speech for a verdict (2.3 and 2.5 s)."""
    return [samples_dir / "p225_002_mic1.flac", samples_dir / "p225_002_mic2.flac"]


def _fake(score: float) -> bool:
    return fake_probability(score) >= Settings().threshold


def _eval(capsys, *args: object) -> tuple[int, dict | str]:
    code = main(["eval", *map(str, args)])
    out = capsys.readouterr().out
    return code, json.loads(out) if "--json" in args else out


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_asvspoof_protocol_with_asv_scores(tmp_path, capsys, bona_fide, spoof_clips) -> None:
    flac = tmp_path / "LA_eval" / "flac"
    flac.mkdir(parents=True)
    lines = []
    for i, path in enumerate(bona_fide):
        (flac / f"LA_E_{i}.flac").symlink_to(path)
        lines.append(f"LA_0001 LA_E_{i} - - bonafide")
    for i, (attack, path) in enumerate(
        [("A07", spoof_clips["en-us"][0]), ("A08", spoof_clips["en-gb+f3"][0])]
    ):
        (flac / f"LA_E_9{i}.wav").symlink_to(path)
        lines.append(f"LA_0002 LA_E_9{i} - {attack} spoof")
    protocol = tmp_path / "ASVspoof2019.LA.cm.eval.trl.txt"
    protocol.write_text("\n".join(lines) + "\n")
    asv = tmp_path / "asv.txt"
    asv.write_text(
        "bonafide target 4.0\nbonafide target 2.0\nbonafide nontarget -3.0\nbonafide nontarget 2.5\n"
    )
    asv.write_text(asv.read_text() + "A07 spoof 3.0\nA08 spoof -1.0\n")
    out = tmp_path / "report"

    code, head = _eval(
        capsys, protocol, "--audio-dir", tmp_path / "LA_eval", "--out", out, "--asv-scores", asv, "--json"
    )
    assert code == 0
    assert (head["layout"], head["files"], head["scored"], head["failed"]) == ("asvspoof", 4, 4, 0)
    scores = resume_scores(out / "scores.txt")
    assert sorted(scores) == ["LA_E_0", "LA_E_1", "LA_E_90", "LA_E_91"]
    bona, spoof = [scores["LA_E_0"], scores["LA_E_1"]], [scores["LA_E_90"], scores["LA_E_91"]]
    assert head["eer"] == equal_error_rate(bona, spoof)[0]
    asv_scores = read_asv_scores(asv)
    rates = asv_error_rates(asv_scores.target, asv_scores.nontarget, asv_scores.spoof)
    assert head["min_tdcf"] == min_tdcf(bona, spoof, rates).min_tdcf
    assert [a["attack"] for a in _summary(out)["attacks"]] == ["A07", "A08"]


def test_csv_layout_html_report_failures_and_text_output(tmp_path, capsys, bona_fide, spoof_clips) -> None:
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(b"ID3 this is not an mp3")
    rows = [f"{p},bonafide" for p in bona_fide] + [
        f"{p},spoof,espeak-{v}" for v, ps in spoof_clips.items() for p in ps
    ]
    listing = tmp_path / "list.csv"
    listing.write_text("path,label,attack\n" + "\n".join([*rows, "broken.mp3,bonafide"]) + "\n")
    out = tmp_path / "report"
    code, text = _eval(capsys, listing, "--out", out, "--format", "html", "--batch-size", "4")
    assert code == 0
    assert "7 files, 6 scored, 0 inconclusive (too little speech), 1 could not be scored" in text
    assert "report.html" in text
    assert (out / "report.html").is_file() and not (out / "report.md").exists()
    assert f"<li><code>{broken}</code>: undecodable_audio" in (out / "report.html").read_text()
    assert len((out / "scores.txt").read_text().splitlines()) == 6
    summary = _summary(out)
    assert [(f["key"], f["code"]) for f in summary["failures"]] == [("broken.mp3", "undecodable_audio")]
    assert summary["layout"] == "csv" and summary["run"]["batch_size"] == 4
    assert summary["run"]["protocol"] == "service" and summary["run"]["preprocess"] == "robust"
    assert [(a["attack"], a["scored"]) for a in summary["attacks"]] == [
        ("espeak-en-gb+f3", 2),
        ("espeak-en-us", 2),
    ]


def test_folder_layout_by_default_is_the_service_verdict(tmp_path, capsys, detector_factory) -> None:
    (tmp_path / "set" / "real").mkdir(parents=True)
    (tmp_path / "set" / "fake" / "espeak").mkdir(parents=True)
    long = espeak_ng(" ".join(SENTENCES * 3), tmp_path / "set" / "fake" / "espeak" / "long.wav")
    out = tmp_path / "report"
    code, head = _eval(capsys, tmp_path / "set", "--out", out, "--json")
    assert code == 0
    assert (head["layout"], head["protocol"], head["preprocess"]) == ("folder", "service", "robust")
    assert head["eer"] is None and head["spoof"] == 1
    audio, windows = prepare(long.read_bytes(), AudioOptions())
    assert len(windows.batch) > 2  # several windows, judged as the service judges them
    margins = detector_factory("aasist", "fast").scores(windows.batch)
    want = summarize(
        audio, windows, margins, Settings().rule.for_model(AASIST_SCORE_OFFSET, AASIST_SCORE_SCALE)
    ).decision.score
    assert resume_scores(out / "scores.txt")["fake/espeak/long.wav"] == pytest.approx(want, abs=1e-3)
    assert _summary(out)["run"]["windows"] == len(windows.batch)
    assert (
        _summary(out)["run"]["score_offset"]
        == Settings().rule.for_model(AASIST_SCORE_OFFSET, AASIST_SCORE_SCALE).offset
    )
    assert "Protocol `service`" in (out / "report.md").read_text()


def test_reference_protocol_is_one_flag_away(tmp_path, capsys, bona_fide, detector_factory) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text(f"{bona_fide[0]},bonafide\n")
    out = tmp_path / "report"
    code, head = _eval(capsys, listing, "--out", out, "--protocol", "reference", "--json")
    assert code == 0 and (head["protocol"], head["preprocess"]) == ("reference", "reference")
    audio = decode(bona_fide[0].read_bytes())
    window = make_windows(audio.waveform[:WINDOW], preprocess="reference").batch
    want = float(detector_factory("aasist", "fast").scores(window)[0])  # the network's own margin
    assert resume_scores(out / "scores.txt")[str(bona_fide[0])] == pytest.approx(want, abs=1e-3)
    assert "Protocol `reference`" in (out / "report.md").read_text()


def test_only_bona_fide_still_reports(tmp_path, capsys, samples_dir) -> None:
    out = tmp_path / "report"
    code, head = _eval(capsys, samples_dir / "labels.csv", "--out", out, "--json")
    assert code == 0
    # p225_001 (both microphones) has 1.3-1.7 s of speech: no verdict, so not scored
    assert (head["scored"], head["inconclusive"], head["failed"], head["bonafide"], head["spoof"]) == (
        3,
        2,
        0,
        3,
        0,
    )
    assert head["eer"] is None and head["min_tdcf"] is None and head["recall"] is None
    real = [not _fake(s) for s in resume_scores(out / "scores.txt").values()]
    assert head["accuracy"] == sum(real) / 3
    summary = _summary(out)
    assert summary["failures"] == [] and len(summary["inconclusive"]) == 2
    assert all(f["reason"].startswith("too short to judge") for f in summary["inconclusive"])
    # A rerun into the same --out judges nothing again and reports the same.
    code, again = _eval(capsys, samples_dir / "labels.csv", "--out", out, "--json")
    assert code == 0 and (again["scored"], again["inconclusive"], again["failed"]) == (3, 2, 0)
    assert _summary(out)["run"]["windows"] == 0
    assert summary["eer_note"].startswith("not computable: no spoof files were scored")
    assert not (out / "det.png").exists() and (out / "scores.png").is_file()
    assert "| EER | not computable: no spoof files were scored" in (out / "report.md").read_text()


def test_resume_scores_only_the_rest(tmp_path, capsys, bona_fide, spoof_clips) -> None:
    paths = [*bona_fide, *spoof_clips["en-us"]]
    listing = tmp_path / "list.csv"
    listing.write_text("".join(f"{p},{'spoof' if p.suffix == '.wav' else 'bonafide'}\n" for p in paths))
    out = tmp_path / "report"
    out.mkdir()
    # An earlier, interrupted run scored two files (sentinel scores no model would give) and was cut
    # short while writing a third line.
    (out / "scores.txt").write_text(f"{paths[0]} 123.0\n{paths[2]} -77.0\n{paths[1]} 4.")
    code, head = _eval(capsys, listing, "--out", out, "--json")
    assert code == 0 and head["scored"] == 4
    run = _summary(out)["run"]
    assert (run["resumed"], run["scored"], run["windows"]) == (2, 2, 2)
    scores = resume_scores(out / "scores.txt")
    assert (scores[str(paths[0])], scores[str(paths[2])]) == (123.0, -77.0)
    assert len((out / "scores.txt").read_text().splitlines()) == 4
    assert head["eer"] == equal_error_rate([123.0, scores[str(paths[1])]], [-77.0, scores[str(paths[3])]])[0]


def test_errors_are_reported_before_scoring(tmp_path, capsys, bona_fide) -> None:
    protocol = tmp_path / "protocol.txt"
    protocol.write_text("LA_0001 LA_E_1 - - bonafide\n")
    assert main(["eval", str(protocol), "--out", str(tmp_path / "a")]) == 2
    assert "--audio-dir" in capsys.readouterr().err
    listing = tmp_path / "list.csv"
    listing.write_text(f"{bona_fide[0]},bonafide\n")
    out = tmp_path / "b"
    out.mkdir()
    (out / "scores.txt").write_text(f"{bona_fide[0]} 1.0\n")
    (out / "scores.meta.json").write_text(json.dumps({"model": "aasist-l"}))
    assert main(["eval", str(listing), "--out", str(out)]) == 2
    assert "model 'aasist-l' (now 'aasist')" in capsys.readouterr().err
    assert main(["eval", str(listing), "--out", str(out), "--asv-scores", str(tmp_path / "none.txt")]) == 2
    assert "none.txt does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_end_to_end_on_the_shared_samples(tmp_path, samples_dir, spoof_clips, checkpoint_dir) -> None:
    bona = sorted(p for p in [*samples_dir.iterdir(), *(samples_dir / "derived").iterdir()] if p.is_file())
    bona = [p for p in bona if p.suffix in (".flac", ".mp3", ".wav", ".ogg")]
    assert len(bona) == 30
    spoofs = [(voice, p) for voice, paths in spoof_clips.items() for p in paths]
    listing = tmp_path / "samples.csv"
    rows = [f"{p.resolve()},bonafide" for p in bona] + [f"{p.resolve()},spoof,{v}" for v, p in spoofs]
    listing.write_text("path,label,attack\n" + "\n".join(rows) + "\n")
    out = tmp_path / "report"
    env = {**os.environ, "VOXGUARD_CHECKPOINT_DIR": str(checkpoint_dir)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "voxguard.cli",
            "eval",
            str(listing),
            "--out",
            str(out),
            "--json",
            "--format",
            "both",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "scoring samples" in proc.stderr  # progress goes to stderr, the JSON alone to stdout
    assert "\r" not in proc.stderr  # not a terminal: plain progress lines, no redrawn bar
    head = json.loads(proc.stdout)
    floor = Settings().min_reliable_s
    judged = [p for p in bona if prepare(p.read_bytes(), AudioOptions())[1].speech_s >= floor]
    assert 10 <= len(judged) < 30  # the clips of p225_001 have too little speech to judge
    assert (
        head["files"],
        head["scored"],
        head["inconclusive"],
        head["failed"],
        head["bonafide"],
        head["spoof"],
    ) == (34, len(judged) + 4, 30 - len(judged), 0, len(judged), 4)

    lines = (out / "scores.txt").read_text().splitlines()
    scores = {key: float(value) for key, value in (line.rsplit(maxsplit=1) for line in lines)}
    assert set(scores) == {str(p.resolve()) for p in judged} | {str(p.resolve()) for _, p in spoofs}
    bona_scores = np.array([scores[str(p.resolve())] for p in judged])
    spoof_scores = np.array([scores[str(p.resolve())] for _, p in spoofs])
    assert (head["eer"], head["eer_threshold"]) == equal_error_rate(bona_scores, spoof_scores)
    fake = [_fake(s) for s in [*bona_scores, *spoof_scores]]
    summary = json.loads((out / "summary.json").read_text())
    m = summary["at_threshold"]
    assert m["false_positive"] == sum(fake[: len(judged)]) == 0  # no real recording called FAKE
    assert m["true_positive"] == sum(fake[len(judged) :]) == 4  # every synthetic clip caught
    assert [(a["attack"], a["scored"]) for a in summary["attacks"]] == [("en-gb+f3", 2), ("en-us", 2)]
    assert summary["failures"] == [] and len(summary["inconclusive"]) == 30 - len(judged)

    # With every spoof below every bona fide (EER 0) there is no DET curve to draw; the report says so.
    det = ["det.png"] if head["eer"] > 0 else []
    assert summary["figures"] == sorted(["scores.png", "confusion.png", *det])
    for name in summary["figures"]:
        with Image.open(out / name) as image:
            image.verify()
            assert image.format == "PNG"
    for report in ("report.md", "report.html"):
        text = (out / report).read_text()
        assert f"{head['eer']:.2%}" in text and "34 files listed (30 bona fide, 4 spoof)" in text
        assert "too short to judge" in text
        assert ("DET curve not drawn" in text) == (not det)
