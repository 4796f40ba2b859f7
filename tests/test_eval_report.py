"""The report folder from known scores: figures agree with the scores, missing classes, formats."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from voxguard.datasets import Dataset, Item
from voxguard.evaluation import plots
from voxguard.evaluation.metrics import asv_error_rates, equal_error_rate, min_tdcf
from voxguard.evaluation.report import MAX_LISTED_FAILURES, write_report
from voxguard.evaluation.runner import Failure, Inconclusive
from voxguard.evaluation.scorefile import AsvScores
from voxguard.evaluation.summary import RunInfo, build_summary, labelled_scores

RUN = RunInfo("aasist", "ab" * 32, "fast", "cpu", "reference", "reference", 16, 2, 7, 0, 7, 1.5)
# Bona fide scores 1..4, spoofs: A01 at -3, -2 and A02 at -1, 2.5 (one spoof above a bona fide).
SCORES = {"b1": 1.0, "b2": 2.0, "b3": 3.0, "b4": 4.0, "s1": -3.0, "s2": -2.0, "s3": -1.0, "s4": 2.5}
ATTACKS = {"s1": "A01", "s2": "A01", "s3": "A02", "s4": "A02"}


def _dataset(keys: list[str]) -> Dataset:
    items = [
        Item(k, Path(f"/data/{k}.flac"), "spoof" if k.startswith("s") else "bonafide", ATTACKS.get(k, "-"))
        for k in keys
    ]
    return Dataset("toy", "csv", items)


def _report(
    tmp_path: Path, keys: list[str], formats=("md",), asv=None, failures=(), inconclusive=(), run=RUN
):
    data = _dataset(keys)
    labelled = labelled_scores(data, {k: SCORES[k] for k in keys if k in SCORES})
    summary = build_summary(
        data, "toy.csv", labelled, list(failures), list(inconclusive), run, threshold=0.5, asv=asv
    )
    return summary, write_report(tmp_path, summary, labelled, formats)


def _png(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG"
        return image.size


def test_figures_agree_with_the_scores(tmp_path: Path) -> None:
    summary, written = _report(tmp_path, list(SCORES), formats=("md", "html"))
    names = {p.name for p in written}
    assert names == {
        *("scores.png", "det.png", "confusion.png", "summary.json", "scores.csv", "report.md", "report.html")
    }
    for name in ("scores.png", "det.png", "confusion.png"):
        width, height = _png(tmp_path / name)
        assert width >= 300 and height >= 300
    bona, spoof = [1.0, 2.0, 3.0, 4.0], [-3.0, -2.0, -1.0, 2.5]
    assert (summary.eer, summary.eer_threshold) == equal_error_rate(bona, spoof)
    # Verdict FAKE at score <= 0: spoofs -3, -2, -1 caught, 2.5 missed; no bona fide flagged.
    m = summary.at_threshold
    assert (m.true_positive, m.false_negative, m.false_positive, m.true_negative) == (3, 1, 0, 4)
    assert (m.precision, m.recall) == (1.0, 0.75)
    a01, a02 = summary.attacks
    assert (a01.attack, a01.files, a01.eer, a01.detected) == ("A01", 2, 0.0, 1.0)
    assert (a02.attack, a02.eer, a02.detected) == ("A02", equal_error_rate(bona, [-1.0, 2.5])[0], 0.5)
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["eer"] == summary.eer and data["score_cut"] == 0.0 and data["positive_class"] == "spoof"
    assert data["figures"] == ["confusion.png", "det.png", "scores.png"]
    md = (tmp_path / "report.md").read_text()
    assert f"**{summary.eer:.2%}**" in md and "| A02 | 2 | 2 |" in md
    assert "![DET curve](det.png)" in md
    html = (tmp_path / "report.html").read_text()
    assert '<img src="det.png"' in html and f"<strong>{summary.eer:.2%}</strong>" in html


def test_only_bona_fide_reports_eer_as_not_computable_and_the_rest(tmp_path: Path) -> None:
    summary, written = _report(
        tmp_path, ["b1", "b2", "b3"], asv=AsvScores(*map(np.array, ([3.0], [0.0], [1.0])))
    )
    assert summary.eer is None and summary.tdcf is None
    assert "not computable: no spoof files were scored" in (summary.eer_note or "")
    assert summary.tdcf_note == summary.eer_note
    assert {p.name for p in written} == {
        "scores.png",
        "confusion.png",
        "summary.json",
        "scores.csv",
        "report.md",
    }
    m = summary.at_threshold
    assert (m.true_negative, m.accuracy, m.recall, m.f1) == (3, 1.0, None, None)
    md = (tmp_path / "report.md").read_text()
    assert "DET curve not computable: no spoof files were scored" in md
    assert "No spoof files are listed" in md


def test_min_tdcf_with_asv_scores(tmp_path: Path) -> None:
    asv = AsvScores(
        np.array([1.0, 5.0, 6.0, 7.0]), np.array([-3.0, -2.0, -1.0, 2.0]), np.array([0.0, 3.0, 9.0])
    )
    summary, _ = _report(tmp_path, list(SCORES), asv=asv)
    rates = asv_error_rates(asv.target, asv.nontarget, asv.spoof)
    want = min_tdcf([1.0, 2.0, 3.0, 4.0], [-3.0, -2.0, -1.0, 2.5], rates)
    assert summary.tdcf == want and summary.asv == rates and summary.tdcf_note is None
    assert json.loads((tmp_path / "summary.json").read_text())["tdcf"]["min_tdcf"] == want.min_tdcf
    assert "## t-DCF details" in (tmp_path / "report.md").read_text()


def test_html_only_and_long_failure_lists(tmp_path: Path) -> None:
    failures = [Failure(f"x{i}", f"/data/x{i}.wav", "undecodable_audio", "bad") for i in range(60)]
    _report(tmp_path, list(SCORES), formats=("html",), failures=failures)
    assert not (tmp_path / "report.md").exists()
    html = (tmp_path / "report.html").read_text()
    assert html.count("<li><code>/data/x") == MAX_LISTED_FAILURES
    assert f"and {60 - MAX_LISTED_FAILURES} more" in html
    assert len(json.loads((tmp_path / "summary.json").read_text())["failures"]) == 60


def test_inconclusive_files_have_their_own_section_not_the_failures(tmp_path: Path) -> None:
    service = dataclasses.replace(RUN, protocol="service", min_reliable_s=2.0)
    short = [Inconclusive("b5", "/data/b5.flac", "too short to judge: 1.3 s of speech, at least 2 s needed")]
    broken = [Failure("b6", "/data/b6.flac", "undecodable_audio", "bad")]
    summary, _ = _report(tmp_path, [*SCORES, "b5", "b6"], failures=broken, inconclusive=short, run=service)
    head = summary.headline()
    assert (head["files"], head["scored"], head["inconclusive"], head["failed"]) == (10, 8, 1, 1)
    md = (tmp_path / "report.md").read_text()
    section = md.split("## Files with too little speech to judge (INCONCLUSIVE)")[1].split("## ")[0]
    assert "`/data/b5.flac`: too short to judge: 1.3 s of speech" in section and "b6" not in section
    failed = md.split("## Files that could not be scored")[1].split("## ")[0]
    assert "`/data/b6.flac`: undecodable_audio: bad" in failed and "b5" not in failed
    assert "1 inconclusive (too little speech to judge), 1 could not be scored" in md
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert [f["key"] for f in saved["inconclusive"]] == ["b5"] and [f["key"] for f in saved["failures"]] == [
        "b6"
    ]


def test_the_score_wording_names_the_offset_and_scale_the_protocol_applied(tmp_path: Path) -> None:
    service = dataclasses.replace(RUN, protocol="service", score_offset=6.0)
    _report(tmp_path, list(SCORES), run=service)
    assert (
        "`logit(bona fide) − logit(spoof)` plus the service's score offset (+6)"
        in (tmp_path / "report.md").read_text()
    )
    scaled = dataclasses.replace(service, score_scale=0.07)
    _report(tmp_path, list(SCORES), run=scaled)
    assert (
        "`logit(bona fide) − logit(spoof)` plus the service's score offset (+6), times the model's score "
        "scale (0.07)" in (tmp_path / "report.md").read_text()
    )
    assert "the score offset +6 and the scale 0.07" in (tmp_path / "report.md").read_text()
    _report(tmp_path, list(SCORES))  # the reference protocol: the network's own margin
    md = (tmp_path / "report.md").read_text()
    assert "Scores are `logit(bona fide) − logit(spoof)`: higher means more human." in md
    assert "offset" not in md.split("## Results")[1].split("## ")[0]


def test_without_matplotlib_the_cli_says_how_to_install_it(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from voxguard.cli import main\n"
        f"sys.exit(main(['eval', {str(tmp_path)!r}, '--out', {str(tmp_path / 'out')!r}]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, timeout=120
    )
    assert proc.returncode == 2
    assert "pip install 'voxguard[eval]'" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_files_with_the_wrong_verdict_are_listed_and_every_score_has_its_label(tmp_path: Path) -> None:
    summary, _ = _report(tmp_path, list(SCORES), formats=("md", "html"))
    # At threshold 0.5 (FAKE when score <= 0) only s4 (a spoof at 2.5) is wrong.
    assert [(f.key, f.label, f.score, f.verdict) for f in summary.misclassified] == [
        ("s4", "spoof", 2.5, "REAL")
    ]
    data = json.loads((tmp_path / "summary.json").read_text())
    assert [(m["path"], m["label"], m["attack"], m["verdict"]) for m in data["misclassified"]] == [
        ("/data/s4.flac", "spoof", "A02", "REAL")
    ]
    md = (tmp_path / "report.md").read_text()
    assert "## Files with the wrong verdict" in md
    assert "| `/data/s4.flac` | spoof | A02 | 2.500 | 0.0759 | REAL |" in md
    assert "(bona fide called FAKE: 0, spoofs called REAL: 1)" in md
    assert "<td><code>/data/s4.flac</code></td>" in (tmp_path / "report.html").read_text()
    with (tmp_path / "scores.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["key"], r["label"], float(r["score"]), r["verdict"], r["correct"]) for r in rows] == [
        (
            k,
            "spoof" if k.startswith("s") else "bonafide",
            SCORES[k],
            "FAKE" if SCORES[k] <= 0 else "REAL",
            str(k != "s4"),
        )
        for k in SCORES
    ]
    # scores.txt is the runner's: the report does not rewrite it, so it stays two-column for resuming.
    assert not (tmp_path / "scores.txt").exists()


def test_most_confident_mistakes_come_first(tmp_path: Path) -> None:
    data = _dataset(list(SCORES))
    scores = {**SCORES, "b1": -0.5, "b2": -4.0, "s3": 6.0}  # two bona fide called FAKE, s3 far off
    summary = build_summary(
        data, "toy.csv", labelled_scores(data, scores), [], [], RUN, threshold=0.5, asv=None
    )
    assert [f.key for f in summary.misclassified] == ["s3", "b2", "s4", "b1"]


def test_a_rerun_without_a_format_removes_its_stale_report(tmp_path: Path) -> None:
    _report(tmp_path, list(SCORES), formats=("md", "html"))
    assert (tmp_path / "report.html").is_file()
    _, written = _report(tmp_path, list(SCORES), formats=("md",))
    assert not (tmp_path / "report.html").exists() and (tmp_path / "report.md") in written
    _report(tmp_path, list(SCORES), formats=("html",))
    assert not (tmp_path / "report.md").exists() and (tmp_path / "report.html").is_file()


def test_perfect_separation_gives_a_note_instead_of_an_empty_det_plot(tmp_path: Path) -> None:
    (tmp_path / "det.png").write_bytes(b"an earlier run's figure")
    keys = ["b1", "b2", "b3", "b4", "s1", "s2", "s3"]  # every spoof below every bona fide
    summary, written = _report(tmp_path, keys)
    assert summary.eer == 0.0
    assert "det.png" not in {p.name for p in written} and not (tmp_path / "det.png").exists()
    md = (tmp_path / "report.md").read_text()
    assert "DET curve not drawn: the classes are perfectly separated (EER 0 %)" in md
    assert "highest spoof score (-1.000) and the lowest bona fide score (1.000)" in md
    assert "det.png" not in json.loads((tmp_path / "summary.json").read_text())["figures"]


def test_every_figure_has_a_title_and_the_legend_covers_no_bar() -> None:
    data = _dataset(list(SCORES))
    summary = build_summary(
        data, "toy.csv", labelled_scores(data, SCORES), [], [], RUN, threshold=0.5, asv=None
    )
    labelled = labelled_scores(data, SCORES)
    histogram = plots.histogram_figure(labelled, summary.eer_threshold, summary.score_cut)
    figures = [
        histogram,
        plots.det_figure(labelled, summary.eer),
        plots.confusion_figure(summary.at_threshold, 0.5),
    ]
    for figure in figures:
        assert figure.axes[0].get_title()
    histogram.canvas.draw()
    (legend,) = histogram.legends
    axes = histogram.axes[0]
    assert not legend.get_window_extent().overlaps(axes.get_window_extent())
    assert len(legend.get_texts()) == 4  # both classes and both thresholds
