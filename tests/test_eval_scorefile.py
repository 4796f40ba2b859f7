"""CM score files (write, read back exactly, provenance) and the organisers' ASV score files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from voxguard.evaluation.scorefile import (
    ScoreFileError,
    ScoreWriter,
    check_provenance,
    read_asv_scores,
    resume_scores,
)


def test_scores_round_trip_exactly(tmp_path: Path) -> None:
    path = tmp_path / "scores.txt"
    values = {"LA_E_1": -3.123456789012345, "dir/with space.wav": float(np.float32(0.1)), "x": 5e-9}
    writer = ScoreWriter(path)
    for key, value in values.items():
        writer.write(key, value)
    writer.close()
    assert path.read_text().splitlines()[0] == "LA_E_1 -3.123456789012345"
    assert resume_scores(path) == values


def test_missing_file_is_empty_and_bad_lines_name_their_line(tmp_path: Path) -> None:
    assert resume_scores(tmp_path / "none.txt") == {}
    path = tmp_path / "scores.txt"
    path.write_text("a 1.0\nb nan\n")
    with pytest.raises(ScoreFileError, match=r"scores.txt:2"):
        resume_scores(path)
    with pytest.raises(ScoreFileError, match="line break"):
        ScoreWriter(tmp_path / "other.txt").write("a\nb", 1.0)


def test_provenance_is_recorded_then_enforced(tmp_path: Path) -> None:
    scores = tmp_path / "scores.txt"
    run = {"model": "aasist", "protocol": "reference"}
    check_provenance(scores, run)
    assert json.loads((tmp_path / "scores.meta.json").read_text()) == run
    scores.write_text("a 1.0\n")
    check_provenance(scores, run)
    with pytest.raises(ScoreFileError, match=r"model 'aasist' \(now 'aasist-l'\).*another --out"):
        check_provenance(scores, {**run, "model": "aasist-l"})


def test_asv_scores_2019_layout(tmp_path: Path) -> None:
    path = tmp_path / "asv.txt"
    path.write_text("bonafide target 2.5\nbonafide nontarget -3.0\nA07 spoof 0.4\nLA_0001 A08 spoof -0.2\n\n")
    asv = read_asv_scores(path)
    assert asv.target.tolist() == [2.5] and asv.nontarget.tolist() == [-3.0]
    assert asv.spoof.tolist() == [0.4, -0.2]


def test_asv_scores_errors(tmp_path: Path) -> None:
    path = tmp_path / "asv.txt"
    with pytest.raises(ScoreFileError, match="does not exist"):
        read_asv_scores(path)
    path.write_text("bonafide target 2.5\nbonafide 1.0\n")
    with pytest.raises(ScoreFileError, match=r"asv.txt:2: expected an ASV score line"):
        read_asv_scores(path)
    path.write_text("bonafide target 2.5\nbonafide nontarget 1.0\n")
    with pytest.raises(ScoreFileError, match="no spoof trials"):
        read_asv_scores(path)
