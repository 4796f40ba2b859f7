"""``voxguard train`` end to end: a real fine-tuning run whose checkpoint a real ``voxguard serve`` and
``voxguard predict`` load and score with, plus the command's refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from servers import ServerProcess
from training_data import write_csv_set, write_folder_set
from voxguard.audio.options import AudioOptions
from voxguard.audio.windows import prepare
from voxguard.cli import main
from voxguard.cli.parser import build_parser
from voxguard.model.checkpoints import sha256_file
from voxguard.settings import Settings
from voxguard.training.run_files import read_metrics, read_steps


def voxguard(args: list[str | Path], checkpoint_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VOXGUARD_CHECKPOINT_DIR": str(checkpoint_dir)}
    return subprocess.run(
        [sys.executable, "-m", "voxguard.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.mark.slow
def test_fine_tune_then_serve_and_predict_with_the_checkpoint(
    tmp_path: Path, checkpoint_dir: Path, detector_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tones are not speech: serve and predict with the network's own scores and no speech floor, so the
    # fine-tuned model's output is compared with the official one's as it is.
    monkeypatch.setenv("VOXGUARD_SCORE_OFFSET", "0")
    monkeypatch.setenv("VOXGUARD_SCORE_SCALE", "1")
    monkeypatch.setenv("VOXGUARD_MIN_RELIABLE_S", "0")
    # 16 clips to train on (folder layout, WAV), 8 to pick the best epoch with (CSV layout, FLAC).
    train_dir = write_folder_set(tmp_path / "train", 8, seed=1)
    dev_csv = write_csv_set(tmp_path / "dev", 4, seed=2)
    out = tmp_path / "run"
    args = ["train", "--train", train_dir, "--dev", dev_csv, "--out", out, "--init", "aasist-l"]
    args += [
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--lr",
        "5e-4",
        "--device",
        "cpu",
        "--name",
        "tones-vs-noise",
    ]
    proc = voxguard(args, checkpoint_dir)
    assert proc.returncode == 0, proc.stderr
    assert "epoch 2/2" in proc.stderr  # progress bars and logs on stderr; the summary on stdout

    # The official AASIST-L calls these harmonic tones fake; fine-tuning says they are bona fide, so
    # the loss starts high and must fall. A batch of 4 holding one hard tone costs ~10 whenever it
    # comes, so compare the medians of the two halves (robust to such a batch), and the dev loss,
    # which is over the same fixed files every epoch and was measured before training (epoch 0).
    losses = [row.loss for row in read_steps(out / "steps.csv")]
    assert len(losses) == 8
    assert np.median(losses[4:]) < 0.5 * np.median(losses[:4]), losses
    metrics = read_metrics(out / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [0, 1, 2]
    assert metrics[-1]["dev_loss"] < 0.6 * metrics[0]["dev_loss"], metrics
    assert all(0.0 <= m["dev_eer"] <= 1.0 and np.isfinite(m["dev_threshold"]) for m in metrics)
    best, sha = out / "best.pt", sha256_file(out / "best.pt")
    assert metrics[-1]["best_sha256"] == sha and f"sha256 {sha}" in proc.stdout
    assert f"sha256 {sha256_file(out / 'last.pt')}" in proc.stdout
    assert f"sha256 {sha256_file(out / 'swa.pt')}" in proc.stdout  # the official recipe's averaged weights

    # Clips from neither set.
    held = write_folder_set(tmp_path / "held-out", 1, seed=3)
    tone, noise = held / "bonafide" / "bonafide_000.wav", held / "spoof" / "spoof_000.wav"
    server = ServerProcess(
        ["--checkpoint", str(best), "--device", "cpu", "--engine", "eager"], {"TMPDIR": str(tmp_path)}
    )
    try:
        server.wait_ready()
        (model,) = httpx.get(f"{server.url}/v1/models", timeout=30).json()["models"]
        assert (model["name"], model["sha256"], model["parameters"]) == ("tones-vs-noise", sha, 85_306)
        response = httpx.post(
            f"{server.url}/v1/predict",
            files={"file": ("tone.wav", tone.read_bytes(), "audio/wav")},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        served = response.json()
    finally:
        server.close()
    assert served["prediction"] in ("REAL", "FAKE") and served["model"] == "tones-vs-noise"

    proc = voxguard(
        ["predict", "--json", "--checkpoint", best, "--device", "cpu", "--engine", "eager", tone, noise],
        checkpoint_dir,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["model"] for line in lines] == ["tones-vs-noise"] * 2
    assert lines[0]["score"] == pytest.approx(served["score"], abs=1e-4)  # the same weights in both

    # And they are the trained weights: the tone now scores far more bona fide than officially.
    _, windows = prepare(tone.read_bytes(), AudioOptions())
    official = float(np.mean(detector_factory("aasist-l", "eager").scores(windows.batch)))
    assert served["score"] > official + 2.0, (served["score"], official)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--precision", "bf16", "--device", "cpu"], "needs a CUDA device"),
        (["--augment", "gain,reverb"], "unknown augmentation"),
        # Refused by the argument parser itself (it exits 2 and names the option):
        (["--device", "tpu"], "argument --device: 'tpu' is not valid: expected auto, cpu, cuda or cuda:N"),
        (["--epochs", "0"], "argument --epochs: expected a positive integer"),
        (["--stop-after", "0"], "argument --stop-after: expected a positive integer"),
    ],
)
def test_bad_options_exit_2_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    train_dir = write_folder_set(tmp_path / "train", 1, seed=0)
    argv = [
        "train",
        "--train",
        str(train_dir),
        "--dev",
        str(train_dir),
        "--out",
        str(tmp_path / "run"),
        *extra,
    ]
    try:
        status = main(argv)
    except SystemExit as exit_:
        status = exit_.code
    assert status == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_refuses_to_overwrite_a_run_or_resume_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train_dir = write_folder_set(tmp_path / "train", 1, seed=0)
    base = ["train", "--train", str(train_dir), "--dev", str(train_dir), "--batch-size", "2"]
    assert main([*base, "--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert "Nothing to resume" in capsys.readouterr().err
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "last.pt").write_bytes(b"a checkpoint")
    assert main([*base, "--out", str(tmp_path / "used")]) == 2
    assert "already holds a run (last.pt)" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "x"), "--dev", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_missing_official_weights_say_how_to_get_them(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train_dir = write_folder_set(tmp_path / "train", 1, seed=0)
    argv = ["train", "--train", str(train_dir), "--dev", str(train_dir), "--out", str(tmp_path / "run")]
    argv += ["--batch-size", "2", "--init", "aasist", "--checkpoint-dir", str(tmp_path / "none")]
    assert main(argv) == 2
    assert "voxguard weights --model aasist" in capsys.readouterr().err


def test_train_help_names_every_augmentation(capsys: pytest.CaptureFixture) -> None:
    """The help text spells the list out (the CLI does not import the augmentations at start-up), so
    it must follow ``AUGMENTATIONS``."""
    from voxguard.training.augment import AUGMENTATIONS

    with pytest.raises(SystemExit):
        build_parser(Settings()).parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    assert f"comma-separated: {','.join(AUGMENTATIONS)} (empty: none)" in text


def test_defaults_are_the_official_recipe(capsys: pytest.CaptureFixture) -> None:
    parser = build_parser(Settings())
    base = ["train", "--train", "t", "--dev", "d", "--out", "o"]
    args = parser.parse_args(base)
    assert (args.epochs, args.batch_size, args.lr, args.lr_min) == (100, 24, 1e-4, 5e-6)
    assert (args.weight_decay, args.seed, args.class_weights) == (1e-4, 1234, (0.1, 0.9))
    assert (args.augment, args.precision, args.cache, args.init, args.model) == (
        "",
        "auto",
        "memory",
        None,
        None,
    )
    assert args.swa and not parser.parse_args([*base, "--no-swa"]).swa
    assert parser.parse_args([*base, "--class-weights", "0.5,0.5"]).class_weights == (0.5, 0.5)
    for bad in ("0.9", "0.1,-1", "a,b"):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, "--class-weights", bad])
    assert "SPOOF,BONAFIDE" in capsys.readouterr().err
