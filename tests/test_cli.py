"""The ``voxguard`` command line, run as a real subprocess where output format matters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxguard.audio import AudioOptions, prepare
from voxguard.cli import main
from voxguard.scoring import summarize


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
        want = summarize(audio, windows, detector.scores(windows.batch))
        assert line["prediction"] == want.prediction and line["is_fake"] == want.is_fake
        assert line["model"] == "aasist"
        assert line["score"] == pytest.approx(want.score, abs=1e-4)
        assert line["fake_probability"] == pytest.approx(want.fake_probability, abs=1e-4)
        assert line["confidence"] == pytest.approx(want.confidence, abs=1e-4)
        assert line["duration_s"] == pytest.approx(want.duration_s)
        assert line["sample_rate"] == want.sample_rate
        assert [w["score"] for w in line["windows"]] == pytest.approx(
            [w.score for w in want.windows], abs=1e-4
        )
        assert set(line["windows"][0]) == {"start_s", "end_s", "score", "fake_probability"}
        assert line["warnings"] == want.warnings


def test_golden_wav_window_score_equals_golden_margin(golden, checkpoint_dir, tmp_path):
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
    good = samples_dir / "p225_001_mic1.flac"
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
    assert out[0].split() == ["file", "verdict", "confidence", "fake", "prob", "duration", "windows"]
    assert "voicememo.mp3" in out[1] and "REAL" in out[1]


def test_missing_weights_say_how_to_get_them(tmp_path, capsys, samples_dir):
    code = main(["predict", "--checkpoint-dir", str(tmp_path), str(samples_dir / "voicememo.mp3")])
    assert code == 2
    err = capsys.readouterr().err
    assert "checkpoint" in err and "make weights" in err


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


@pytest.mark.slow
def test_bench_serve_json_schema(checkpoint_dir):
    proc = _run(
        ["bench", "serve", "--model", "aasist-l", "--concurrency", "2", "--requests", "4", "--json"],
        checkpoint_dir,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert {"model", "device", "concurrency", "raw_clips_per_s", "dynamic", "batch1"} <= set(report)
    assert report["concurrency"] == 2 and report["raw_clips_per_s"] > 0
    keys = {"throughput_rps", "p50_ms", "p95_ms", "p99_ms", "mean_batch_size", "errors"}
    for mode in ("dynamic", "batch1"):
        assert set(report[mode]) == keys
        assert report[mode]["errors"] == 0 and report[mode]["throughput_rps"] > 0
    assert report["batch1"]["mean_batch_size"] == 1.0


@pytest.mark.slow
def test_bench_replicas_runs_one_and_two_servers(checkpoint_dir):
    proc = _run(
        [
            "bench",
            "replicas",
            "--model",
            "aasist-l",
            "--device",
            "cpu",
            "--replicas",
            "1,2",
            "--clients",
            "2",
            "--concurrency",
            "2",
            "--requests",
            "4",
            "--json",
        ],
        checkpoint_dir,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [r["replicas"] for r in report["results"]] == [1, 2]
    for row in report["results"]:
        assert row["requests"] == 4 and row["errors"] == 0 and row["throughput_rps"] > 0
        assert row["mean_batch_size"] >= 1.0
