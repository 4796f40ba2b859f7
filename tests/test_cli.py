"""The ``voxguard`` command line, run as a real subprocess where output format matters."""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxguard.audio.decoding import decode
from voxguard.audio.options import AudioOptions
from voxguard.audio.windows import prepare
from voxguard.cli import main
from voxguard.cli.parser import build_parser
from voxguard.model import locate
from voxguard.model.locate import AASIST_SCORE_OFFSET, AASIST_SCORE_SCALE
from voxguard.progress import LineProgress
from voxguard.scoring import summarize
from voxguard.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], checkpoint_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VOXGUARD_CHECKPOINT_DIR": str(checkpoint_dir)}
    return subprocess.run(
        [sys.executable, "-m", "voxguard.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture(scope="module")
def sample_files(samples_dir) -> list[Path]:
    return [
        *sorted(samples_dir.glob("*.flac")),
        samples_dir / "voicememo.mp3",
        *sorted((samples_dir / "derived").glob("voicememo_*")),
    ]


def test_predict_json_equals_detector(sample_files, checkpoint_dir, detector_factory):
    proc = _run(["predict", "--json", "--engine", "eager", *map(str, sample_files)], checkpoint_dir)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["file"] for line in lines] == [str(p) for p in sample_files]
    detector = detector_factory("aasist", "eager")
    for line, path in zip(lines, sample_files, strict=True):
        audio, windows = prepare(path.read_bytes(), AudioOptions())
        want = summarize(
            audio,
            windows,
            detector.scores(windows.batch),
            Settings().rule.for_model(AASIST_SCORE_OFFSET, AASIST_SCORE_SCALE),
        )
        d = want.decision
        assert line["prediction"] == d.prediction and line["is_fake"] == d.is_fake
        assert line["model"] == "aasist"
        if d.prediction == "INCONCLUSIVE":
            assert line["score"] is line["fake_probability"] is line["confidence"] is None
            assert line["reason"] == d.reason
            assert line["leaning"] == ("FAKE" if d.fake_probability >= 0.5 else "REAL")
            assert line["leaning_fake_probability"] == pytest.approx(d.fake_probability, abs=1e-4)
        else:
            assert line["leaning"] is line["leaning_fake_probability"] is None
            assert line["score"] == pytest.approx(d.score, abs=1e-4)
            assert line["fake_probability"] == pytest.approx(d.fake_probability, abs=1e-4)
            assert line["confidence"] == pytest.approx(d.confidence, abs=1e-4)
        assert line["speech_s"] == pytest.approx(want.speech_s, abs=1e-3)
        assert line["duration_s"] == pytest.approx(want.duration_s)
        assert line["sample_rate"] == want.sample_rate
        assert [w["score"] for w in line["windows"]] == pytest.approx(
            [w.score for w in want.windows], abs=1e-4
        )
        assert set(line["windows"][0]) == {"start_s", "end_s", "score", "fake_probability"}
        assert line["warnings"] == want.warnings


def test_golden_wav_window_score_equals_golden_margin(golden, checkpoint_dir, tmp_path, monkeypatch):
    # The network's own margin, as the golden file has it.
    monkeypatch.setenv("VOXGUARD_SCORE_OFFSET", "0")
    monkeypatch.setenv("VOXGUARD_SCORE_SCALE", "1")
    paths = []
    for i, name in enumerate(golden["row_names"]):
        path = tmp_path / f"{name}.wav"
        sf.write(path, golden["inputs"][i], 16000, subtype="FLOAT")
        paths.append((i, path))
    for model, key in (("aasist", "aasist"), ("aasist-l", "aasist_l")):
        proc = _run(
            [
                "predict",
                "--json",
                "--model",
                model,
                "--engine",
                "eager",
                "--preprocess",
                "reference",
                *[str(p) for _, p in paths],
            ],
            checkpoint_dir,
        )
        assert proc.returncode == 0, proc.stderr
        for (i, _), line in zip(paths, proc.stdout.splitlines(), strict=True):
            result = json.loads(line)
            logits = golden[f"{key}_logits"][i]
            assert len(result["windows"]) == 1
            assert result["windows"][0]["score"] == pytest.approx(float(logits[1] - logits[0]), abs=1e-4)


def test_failed_file_gives_error_line_and_nonzero_exit(samples_dir, checkpoint_dir, tmp_path):
    bad = tmp_path / "not-audio.wav"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    good = samples_dir / "p225_002_mic2.flac"
    proc = _run(["predict", "--json", str(bad), str(good), str(tmp_path / "missing.wav")], checkpoint_dir)
    assert proc.returncode == 1
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[0] == {
        "file": str(bad),
        "error": {"code": "undecodable_audio", "detail": lines[0]["error"]["detail"]},
    }
    assert "Accepted" in lines[0]["error"]["detail"]
    assert lines[1]["prediction"] == "REAL"
    assert lines[2]["error"]["code"] == "unreadable_file"


def test_table_output(samples_dir, checkpoint_dir, monkeypatch, capsys):
    monkeypatch.setenv("VOXGUARD_CHECKPOINT_DIR", str(checkpoint_dir))
    assert main(["predict", str(samples_dir / "voicememo.mp3")]) == 0
    out = capsys.readouterr().out.splitlines()
    header = ["file", "verdict", "confidence", "fake", "prob", "duration", "windows", "repeated*", "notes"]
    assert out[0].split() == header  # voicememo.mp3 is 3.3 s, under one window
    assert "voicememo.mp3" in out[1] and "REAL" in out[1]


def test_audio_shorter_than_a_window_is_a_column_not_a_note_per_file(
    samples_dir, checkpoint_dir, monkeypatch, capsys, tmp_path
):
    monkeypatch.setenv("VOXGUARD_CHECKPOINT_DIR", str(checkpoint_dir))
    short = [samples_dir / "p225_002_mic1.flac", samples_dir / "voicememo.mp3"]  # under 4.04 s
    long = tmp_path / "long.wav"
    sf.write(long, np.concatenate([decode(p.read_bytes()).waveform for p in short]), 16000)
    assert main(["predict", *map(str, short), str(long)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = lines[0]
    assert header.split()[-2:] == ["repeated*", "notes"]
    flags = [line[header.index("repeated*") : header.index("notes")].strip() for line in lines[1:4]]
    assert flags == ["yes", "yes", ""]
    assert lines[4].startswith("* repeated: the audio is shorter than the model's 4.04 s window")
    assert "repeated to fill the window" not in out and "[1]" not in out  # no note per file


def test_table_lists_warnings_and_keeps_errors_out_of_the_figures(
    samples_dir, checkpoint_dir, monkeypatch, capsys, tmp_path
):
    monkeypatch.setenv("VOXGUARD_CHECKPOINT_DIR", str(checkpoint_dir))
    phone = samples_dir / "derived" / "voicememo_tel8k.wav"
    missing = tmp_path / "missing.wav"
    assert main(["predict", str(phone), str(missing)]) == 1
    out = capsys.readouterr().out.splitlines()
    header, scored, failed = out[:3]
    starts = {
        name: header.index(name) for name in ("verdict", "confidence", "fake prob", "leaning*", "notes")
    }
    assert scored[starts["verdict"] :].split()[0] == "INCONCLUSIVE"  # 1.9 s of speech
    assert scored[starts["confidence"] : starts["leaning*"]].split() == ["-", "-"]  # no verdict figures
    assert re.fullmatch(r"REAL \(0\.\d{4}\)", scored[starts["leaning*"] : header.index("duration")].strip())
    assert scored[header.index("duration") : starts["notes"]].split() == ["3.32", "s", "1"]
    assert out[3].startswith("* leaning: for INCONCLUSIVE files only") and "not a verdict" in out[3]
    assert scored[starts["notes"] :].split() == ["[1]", "[2]"]  # why no verdict, and 8 kHz
    assert failed[starts["verdict"] :].split()[0] == "ERROR"
    assert failed[starts["confidence"] : starts["notes"]].strip() == ""  # no code among the figures
    assert failed[starts["notes"] :].split() == ["unreadable_file", "[3]"]
    notes = out[out.index("") + 1 :]
    assert notes[0] == f"[1] {phone}: too short to judge: 1.9 s of speech, at least 2 s needed"
    assert notes[1].startswith(f"[2] {phone}: audio was sampled at 8000 Hz")
    assert notes[2].startswith(f"[3] {missing}: unreadable_file: ")


def test_predict_scores_the_audio_files_in_a_folder(samples_dir, checkpoint_dir, tmp_path):
    folder = tmp_path / "calls"
    (folder / "day2").mkdir(parents=True)
    (folder / "b.mp3").symlink_to(samples_dir / "voicememo.mp3")
    (folder / "day2" / "a.flac").symlink_to(samples_dir / "p225_001_mic1.flac")
    (folder / "notes.txt").write_text("not audio")
    proc = _run(["predict", "--json", str(folder)], checkpoint_dir)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["file"] for line in lines] == [str(folder / "b.mp3"), str(folder / "day2" / "a.flac")]
    assert [line["prediction"] for line in lines] == ["REAL", "INCONCLUSIVE"]  # a.flac: 1.3 s of speech
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _run(["predict", str(empty)], checkpoint_dir)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"voxguard: {empty} is a folder with no audio files in it.")


def test_progress_off_a_terminal_is_plain_lines(samples_dir, checkpoint_dir):
    proc = _run(
        ["predict", str(samples_dir / "voicememo.mp3"), str(samples_dir / "p225_001_mic1.flac")],
        checkpoint_dir,
    )
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr
    assert re.search(r"^scoring: 2/2 files \(100%\) in [\d.]+ s$", proc.stderr, re.M), proc.stderr


def test_line_progress_prints_at_most_one_line_per_interval():
    out = io.StringIO()
    bar = LineProgress(5, "scoring set", "file", initial=1, interval_s=3600, stream=out)
    for _ in range(4):
        bar.update(1)
    bar.close()
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and re.fullmatch(r"scoring set: 5/5 files \(100%\) in [\d.]+ s", lines[0])
    out = io.StringIO()
    bar = LineProgress(3, "x", "B", interval_s=0.0, stream=out)
    bar.update(1)
    bar.update(2)  # the end: only close() reports it
    bar.close()
    assert out.getvalue().splitlines()[0] == "x: 1/3 B (33%)" and len(out.getvalue().splitlines()) == 2


def test_missing_weights_say_how_to_get_them(tmp_path, capsys, samples_dir):
    code = main(["predict", "--checkpoint-dir", str(tmp_path), str(samples_dir / "voicememo.mp3")])
    assert code == 2
    err = capsys.readouterr().err
    assert "checkpoint" in err and "make weights" in err


def test_installed_outside_a_repository_the_hint_names_the_variable(
    tmp_path, capsys, samples_dir, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VOXGUARD_CHECKPOINT_DIR", raising=False)
    monkeypatch.setattr(locate, "source_checkout", lambda: None)  # a wheel: no repository to look in
    assert main(["predict", str(samples_dir / "voicememo.mp3")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("voxguard: Checkpoint for 'aasist' not found:")
    assert f"no AASIST.pth in checkpoints (relative to the current directory, {tmp_path})." in err
    for hint in ("voxguard weights --model aasist", "make weights", "VOXGUARD_CHECKPOINT_DIR"):
        assert hint in err


def test_from_any_directory_the_cli_finds_the_weights_by_the_one_rule(tmp_path, samples_dir, checkpoint_dir):
    """In the repository's venv, `voxguard predict` and `voxguard weights` find the weights beside the
    repository (../shared/aasist here, as `make run` does) without VOXGUARD_CHECKPOINT_DIR."""
    found = locate_dir_without_the_variable()
    assert found is not None, "no weights in checkpoints/ or ../shared/aasist of this repository"
    env = {k: v for k, v in os.environ.items() if k != "VOXGUARD_CHECKPOINT_DIR"}
    command = [sys.executable, "-m", "voxguard.cli"]
    run = dict(capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    proc = subprocess.run([*command, "predict", "--json", str(samples_dir / "voicememo.mp3")], **run)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["prediction"] == "REAL"
    proc = subprocess.run([*command, "weights", "--model", "aasist"], **run)  # offline: a copy is found
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"aasist: {found / 'AASIST.pth'} (sha256 verified)\n"
    assert not (tmp_path / "checkpoints").exists()


def test_make_targets_and_compose_use_the_folder_the_cli_finds():
    env = {k: v for k, v in os.environ.items() if k != "VOXGUARD_CHECKPOINT_DIR"}
    found = locate_dir_without_the_variable()
    proc = subprocess.run(
        ["make", "-n", "up", "up-cpu", "up-scale"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    composes = [line for line in proc.stdout.splitlines() if "compose" in line and "test -f" not in line]
    assert len(composes) == 3 and all(
        line.startswith(f"VOXGUARD_CHECKPOINT_DIR={found} ") for line in composes
    )
    assert proc.stdout.count(f"test -f {found}/AASIST.pth") == 3


def locate_dir_without_the_variable() -> Path | None:
    """The folder the rule finds for this repository, asked as the Makefile asks (no variable set)."""
    env = {k: v for k, v in os.environ.items() if k != "VOXGUARD_CHECKPOINT_DIR"}
    env["PYTHONPATH"] = str(REPO / "src")
    proc = subprocess.run(
        [sys.executable, "-m", "voxguard.model.locate"], cwd=REPO, env=env, capture_output=True, text=True
    )
    path = Path(proc.stdout.strip())
    return path if (path / "AASIST.pth").is_file() else None


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("VOXGUARD_ENGINE", "turbo", "Input should be 'eager', 'fast', 'bf16' or 'simulated'"),
        ("VOXGUARD_DEVICE", "gpu", "expected auto, cpu, cuda or cuda:N"),
        ("VOXGUARD_THRESHOLD", "1.5", "Input should be less than or equal to 1"),
        ("VOXGUARD_PORT", "http", "Input should be a valid integer, unable to parse string as an integer"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(variable, value, reason, monkeypatch, capsys):
    monkeypatch.setenv(variable, value)
    assert main(["predict", "x.wav"]) == 2
    err = capsys.readouterr().err
    assert err == f"voxguard: {variable}={value!r} is not valid: {reason}. Hint: fix or unset {variable} " + (
        "(every setting: `voxguard serve --help` and the README's settings table)\n"
    )


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (
            ["predict", "--threshold", "1.5", "x.wav"],
            "argument --threshold: '1.5' is not valid: Input should be less than or equal to 1",
        ),
        (["predict", "--device", "gpu", "x.wav"], "argument --device: 'gpu' is not valid: expected auto"),
        (["predict", "--threads", "-1", "x.wav"], "argument --threads: '-1' is not valid"),
        (["predict", "--engine", "turbo", "x.wav"], "argument --engine: 'turbo' is not valid"),
        (["eval", "set", "--out", "o", "--threshold", "-0.1"], "argument --threshold: '-0.1' is not valid"),
        (["serve", "--port", "70000"], "argument --port: '70000' is not valid"),
        (["serve", "--queue-size", "0"], "argument --queue-size: '0' is not valid"),
        (["serve", "--models", ","], "argument --models: ',' is not valid: at least one model is needed"),
        (["bench", "serve", "--connections", "0"], "argument --connections: expected a positive integer"),
        (["train", "--train", "t", "--dev", "d", "--out", "o", "--epochs", "0"], "argument --epochs"),
    ],
)
def test_every_option_is_validated_where_it_enters(args, reason, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert reason in capsys.readouterr().err


def _parsers(parser: argparse.ArgumentParser, name: str = "voxguard"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                yield from _parsers(child, f"{name} {sub}")


def test_every_option_has_help_and_shows_its_default():
    parser = build_parser(Settings())
    for name, sub in _parsers(parser):
        assert sub.formatter_class is argparse.ArgumentDefaultsHelpFormatter, name
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
        text = sub.format_help()
        optional = [a for a in sub._actions if a.option_strings and a.default is not argparse.SUPPRESS]
        optional = [a for a in optional if not isinstance(a, argparse._HelpAction)]
        assert text.count("(default:") >= len(optional), name


def test_help_does_not_import_torch():
    """``voxguard --help`` used to take 2 s importing torch; every command imports it when it runs."""
    code = (
        "import sys\n"
        "from voxguard.cli import main\n"
        "for argv in (['--help'], ['predict', '--help'], ['serve', '--help'], ['train', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchaudio', 'numpy')))"
    )
    imported = subprocess.check_output([sys.executable, "-c", code], text=True, timeout=120)
    assert imported.splitlines()[-1] == "[]"


def test_cuda_asked_for_without_cuda_is_one_line_before_any_weights_load(
    samples_dir, checkpoint_dir, monkeypatch, capsys, caplog
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("VOXGUARD_CHECKPOINT_DIR", str(checkpoint_dir))
    caplog.set_level(logging.INFO, logger="voxguard")
    assert main(["predict", "--device", "cuda", str(samples_dir / "voicememo.mp3")]) == 2
    assert capsys.readouterr().err == (
        "voxguard: device 'cuda' requested but CUDA is not available on this machine. Hint: use --device "
        "cpu (VOXGUARD_DEVICE=cpu), or auto to use CUDA only where it is present\n"
    )
    assert not [r for r in caplog.records if "loaded aasist" in r.getMessage()]


def test_weights_command_fetches_from_a_local_url(checkpoint_dir, tmp_path, capsys):
    url = (checkpoint_dir / "AASIST-L.pth").resolve().as_uri()
    assert main(["weights", "--model", "aasist-l", "--dir", str(tmp_path), "--url", url]) == 0
    assert (tmp_path / "AASIST-L.pth").read_bytes() == (checkpoint_dir / "AASIST-L.pth").read_bytes()
    assert "sha256 verified" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_model_json_schema(checkpoint_dir):
    proc = _run(
        ["bench", "model", "--model", "aasist-l", "--batch-sizes", "1,2", "--repeat", "1", "--json"],
        checkpoint_dir,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert {"model", "device", "threads", "torch", "results"} <= set(report)
    assert report["model"] == "aasist-l" and report["device"] == "cpu" and report["threads"] >= 1
    assert [(r["engine"], r["batch_size"]) for r in report["results"]] == [
        (e, b) for e in ("eager", "fast", "bf16") for b in (1, 2)
    ]
    assert all(
        set(r) == {"engine", "batch_size", "ms_per_clip"} and r["ms_per_clip"] > 0 for r in report["results"]
    )
    assert np.isfinite([r["ms_per_clip"] for r in report["results"]]).all()


def test_bench_agreement_compares_margins_and_decides_by_the_models_own_rule(
    checkpoint_dir, sample_files, monkeypatch, capsys
):
    """The difference is the network's, so the model's score scale must not shrink it."""
    monkeypatch.setenv("VOXGUARD_CHECKPOINT_DIR", str(checkpoint_dir))
    args = ["bench", "agreement", "--model", "aasist-l", "--engine", "bf16", "--json", str(sample_files[0])]
    reports = []
    for scale in (None, "1"):
        if scale:
            monkeypatch.setenv("VOXGUARD_SCORE_SCALE", scale)
        assert main(args) == 0
        reports.append(json.loads(capsys.readouterr().out))
    scaled, raw = reports
    assert scaled["decision_agreement"] == raw["decision_agreement"] == 1.0
    assert 0 < scaled["max_score_delta"] == raw["max_score_delta"] < 0.5


@pytest.mark.slow
def test_bench_replicas_runs_one_and_two_servers_each_under_its_own_wrk(checkpoint_dir):
    proc = _run(
        [
            *("bench", "replicas", "--engine", "simulated", "--replicas", "1,2"),
            *("--connections", "4", "--duration", "1", "--json"),
        ],
        checkpoint_dir,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [r["replicas"] for r in report["results"]] == [1, 2]
    for row in report["results"]:
        assert row["non_2xx"] == 0 and row["socket_errors"] == 0 and row["throughput_rps"] > 0
