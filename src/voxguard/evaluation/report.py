"""The report folder: ``summary.json``, PNG figures and ``report.md`` and/or ``report.html``.

The report is built once as a list of blocks (heading, paragraph, table, image, list) and rendered to
Markdown or HTML from the same blocks, so the two formats always say the same thing.
"""

from __future__ import annotations

import csv
import html
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..datasets import BONAFIDE, NO_ATTACK, SPOOF
from ..scoring import fake_probability
from . import plots
from .metrics import ASVSPOOF2019_COST_MODEL
from .scorefile import INCONCLUSIVE_FILE
from .summary import LabelledScores, Summary, scored_files

logger = logging.getLogger(__name__)

FORMATS = ("md", "html")
SCORES_FILE = "scores.txt"
LABELLED_SCORES_FILE = "scores.csv"
SUMMARY_FILE = "summary.json"
MAX_LISTED_FAILURES = 50
MAX_LISTED_MISTAKES = 50


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str  # may hold `code` spans


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: list[tuple[str, ...]]


@dataclass(frozen=True)
class Image:
    file: str
    alt: str


@dataclass(frozen=True)
class BulletList:
    items: list[str]


Block = Heading | Paragraph | Table | Image | BulletList


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.2%}"


def _protocol_text(summary: Summary) -> str:
    run = summary.run
    if run.protocol == "reference":
        text = (
            "Protocol `reference`: each file's score is the model's score of its first 64,600 samples "
            "(4.04 s at 16 kHz; shorter files are repeated to fill them), as in the official evaluation"
        )
        if run.preprocess == "reference":
            return text + ", on the raw samples."
        return text + f", but with `{run.preprocess}` preprocessing (not the official input)."
    run_of = (
        "its most fake window" if run.min_fake_windows == 1 else f"its best run of {run.min_fake_windows}"
    )
    if run.local_margin is not None:
        run_of = f"the lower of the windows' mean and {run_of} plus {run.local_margin:g}"
    return (
        "Protocol `service`: each file gets what the service answers. Every 4.04 s window (2 s apart) is "
        f"scored with `{run.preprocess}` preprocessing, the score offset {run.score_offset:+g} and the "
        f"scale {run.score_scale:g}; the "
        f"file's score is that of {run_of} among the windows that are not silent, so a synthetic stretch "
        f"anywhere counts. Files with less than {run.min_reliable_s:g} s of speech get no verdict "
        "(listed below, left out of the figures)."
    )


def _score_text(offset: float, scale: float) -> str:
    """What a score is: the network's margin, with the service's offset and scale where the protocol
    applies them."""
    if offset == 0 and scale == 1:
        return "Scores are `logit(bona fide) − logit(spoof)`: higher means more human."
    scaled = "" if scale == 1 else f", times the model's score scale ({scale:g})"
    return (
        f"Scores are `logit(bona fide) − logit(spoof)` plus the service's score offset ({offset:+g})"
        f"{scaled}, as the service reports them: higher means more human, and 0 is the service's "
        "decision boundary."
    )


def _results(summary: Summary) -> list[Block]:
    m = summary.at_threshold
    cut = summary.score_cut
    if summary.eer is None or summary.eer_threshold is None:
        eer = f"{summary.eer_note}"
    else:
        p = fake_probability(summary.eer_threshold)
        eer = f"**{summary.eer:.2%}** at score {summary.eer_threshold:.4f} (fake probability {p:.3f})"
    tdcf = summary.tdcf_note or ""
    if summary.tdcf is not None:
        tdcf = f"**{summary.tdcf.min_tdcf:.4f}** at CM score {summary.tdcf.threshold:.4f}"
    at = f"at fake probability ≥ {summary.threshold:g} (score ≤ {cut:.3f})"
    return [
        Heading("Results"),
        Table(
            ("figure", "value"),
            [
                ("EER", eer),
                ("min t-DCF (ASVspoof 2019)", tdcf),
                (f"accuracy {at}", _pct(m.accuracy)),
                (f"precision {at}", _pct(m.precision)),
                (f"recall {at}", _pct(m.recall)),
                (f"F1 {at}", _pct(m.f1)),
            ],
        ),
        Paragraph(
            f"{_score_text(summary.run.score_offset, summary.run.score_scale)} The EER is where the "
            "share of bona fide files rejected equals the share of spoofs accepted. Accuracy, precision, "
            "recall and F1 use the service's own verdict rule (FAKE when `sigmoid(−score) ≥ threshold`) "
            "with **spoof (FAKE) as the positive class**: precision is the share of FAKE verdicts that "
            "were spoofs, recall the share of spoofs called FAKE. A dash means the figure is undefined "
            "(no spoofs, or no FAKE verdicts)."
        ),
    ]


def _confusion(summary: Summary) -> list[Block]:
    m = summary.at_threshold
    return [
        Heading("Confusion matrix"),
        Table(
            ("actual \\ verdict", "REAL", "FAKE"),
            [
                ("bona fide", str(m.true_negative), str(m.false_positive)),
                ("spoof", str(m.false_negative), str(m.true_positive)),
            ],
        ),
        Image("confusion.png", "confusion matrix"),
    ]


def _mistakes(summary: Summary) -> list[Block]:
    wrong = summary.misclassified
    blocks: list[Block] = [Heading("Files with the wrong verdict")]
    if not wrong:
        return [*blocks, Paragraph("None: every scored file got the right verdict at this threshold.")]
    false_fake = sum(f.label == BONAFIDE for f in wrong)
    rows = [
        (
            f"`{f.path}`",
            "bona fide" if f.label == BONAFIDE else "spoof",
            "" if f.attack == NO_ATTACK else f.attack,
            f"{f.score:.3f}",
            f"{f.fake_probability:.4f}",
            f.verdict,
        )
        for f in wrong[:MAX_LISTED_MISTAKES]
    ]
    blocks += [
        Paragraph(
            f"{len(wrong)} of {sum(summary.scored.values())} scored files got the wrong verdict at fake "
            f"probability ≥ {summary.threshold:g} (bona fide called FAKE: {false_fake}, spoofs called REAL: "
            f"{len(wrong) - false_fake}). The most confident mistakes come first; "
            f"`{LABELLED_SCORES_FILE}` lists every file with its label, score and verdict."
        ),
        Table(("file", "label", "attack", "score", "fake probability", "verdict"), rows),
    ]
    if len(wrong) > MAX_LISTED_MISTAKES:
        blocks.append(
            Paragraph(
                f"… and {len(wrong) - MAX_LISTED_MISTAKES} more: see `{SUMMARY_FILE}` or "
                f"`{LABELLED_SCORES_FILE}`."
            )
        )
    return blocks


def _attacks(summary: Summary) -> list[Block]:
    blocks: list[Block] = [Heading("Per attack")]
    if not summary.attacks:
        return [*blocks, Paragraph("No spoof files are listed, so there is no attack to break down.")]
    rows = [
        (
            "(no attack label)" if a.attack == NO_ATTACK else a.attack,
            str(a.files),
            str(a.scored),
            _pct(a.eer),
            _pct(a.detected),
        )
        for a in summary.attacks
    ]
    return [
        *blocks,
        Paragraph(
            "Each attack's spoofs against all bona fide files: its EER, and the share of them the service "
            "threshold calls FAKE."
        ),
        Table(("attack", "files", "scored", "EER vs all bona fide", "called FAKE"), rows),
    ]


def _separated_note(labelled: LabelledScores) -> str:
    return (
        "DET curve not drawn: the classes are perfectly separated (EER 0 %), so every threshold between "
        f"the highest spoof score ({labelled.spoof.max():.3f}) and the lowest bona fide score "
        f"({labelled.bonafide.min():.3f}) makes no error at all and the curve would only be the corner "
        "of its axes"
    )


# The figures plots.py may draw: its name there, the image file and its alt text, the caption.
_FIGURES = (
    (
        "histogram",
        ("scores.png", "score histograms by class"),
        "Score histograms by class. The dashed line is the EER threshold, the dotted one the service "
        "threshold; the further apart the two humps, the easier the set.",
    ),
    (
        "det",
        ("det.png", "DET curve"),
        "DET curve: every threshold's false-alarm rate (spoofs accepted) against its miss rate (bona fide "
        "rejected), on normal-deviate axes, so that normally distributed scores give a straight line. "
        "Lower left is better; the dot is the EER.",
    ),
)


def _figures(summary: Summary, drawn: dict[str, Path | None], labelled: LabelledScores) -> list[Block]:
    blocks: list[Block] = [Heading("Figures")]
    for name, image, caption in _FIGURES:
        if drawn[name] is not None:
            blocks += [Image(*image), Paragraph(caption)]
    if drawn["det"] is None:
        note = _separated_note(labelled) + "." if summary.eer == 0.0 else f"DET curve {summary.eer_note}."
        blocks.append(Paragraph(note))
    return blocks


def _tdcf_details(summary: Summary) -> list[Block]:
    if summary.tdcf is None or summary.asv is None:
        return []
    asv, cost, model = summary.asv, summary.tdcf, ASVSPOOF2019_COST_MODEL
    return [
        Heading("t-DCF details"),
        Paragraph(
            "ASVspoof 2019 tandem detection cost of this CM in front of the given ASV system, whose "
            "operating point is its own EER threshold. Normalised min t-DCF: 1 or more means the CM "
            "does not help the ASV. Cost model: "
            f"P(target) {model.p_target:g}, P(non-target) {model.p_nontarget:g}, "
            f"P(spoof) {model.p_spoof:g}, C_miss,asv {model.c_miss_asv:g}, C_fa,asv {model.c_fa_asv:g}, "
            f"C_miss,cm {model.c_miss_cm:g}, C_fa,cm {model.c_fa_cm:g}."
        ),
        Table(
            ("ASV EER", "ASV threshold", "Pfa,asv", "Pmiss,asv", "Pmiss,spoof,asv", "C1", "C2"),
            [
                (
                    _pct(asv.eer),
                    f"{asv.threshold:.4f}",
                    f"{asv.false_alarm:.4f}",
                    f"{asv.miss:.4f}",
                    f"{asv.spoof_miss:.4f}",
                    f"{cost.c1:.4f}",
                    f"{cost.c2:.4f}",
                )
            ],
        ),
    ]


def _listed(title: str, what: str, lines: list[str]) -> list[Block]:
    """A section listing files, the first ``MAX_LISTED_FAILURES`` of them, or saying there are none."""
    if not lines:
        return [Heading(title), Paragraph("None.")]
    blocks: list[Block] = [Heading(title), Paragraph(what), BulletList(lines[:MAX_LISTED_FAILURES])]
    if len(lines) > MAX_LISTED_FAILURES:
        blocks.append(Paragraph(f"… and {len(lines) - MAX_LISTED_FAILURES} more: see `{SUMMARY_FILE}`."))
    return blocks


def _inconclusive(summary: Summary) -> list[Block]:
    files = summary.inconclusive
    if summary.run.protocol != "service" and not files:
        return []
    return _listed(
        "Files with too little speech to judge (INCONCLUSIVE)",
        f"{len(files)} files have less than {summary.run.min_reliable_s:g} s of speech, where the model is "
        "not reliable: the service answers INCONCLUSIVE for them, so they get no score and are left out of "
        f"every figure above. They are recorded in `{INCONCLUSIVE_FILE}` and not judged again by a rerun.",
        [f"`{f.path}`: {f.reason}" for f in files],
    )


def _failures(summary: Summary) -> list[Block]:
    failures = summary.failures
    return _listed(
        "Files that could not be scored",
        f"{len(failures)} files could not be read or decoded; they are left out of every figure above and "
        "tried again by a rerun.",
        [f"`{f.path}`: {f.code}: {f.detail}" for f in failures],
    )


def build_blocks(summary: Summary, drawn: dict[str, Path | None], labelled: LabelledScores) -> list[Block]:
    run = summary.run
    listed, scored = summary.listed, summary.scored
    intro = (
        f"{sum(listed.values())} files listed ({listed[BONAFIDE]} bona fide, {listed[SPOOF]} spoof) "
        f"in `{summary.source}` ({summary.layout} layout); {scored[BONAFIDE]} bona fide and "
        f"{scored[SPOOF]} spoof files scored, {len(summary.inconclusive)} inconclusive (too little speech "
        f"to judge), {len(summary.failures)} could not be scored."
    )
    timing = f"{run.scored} files ({run.windows} windows) in {run.seconds:.1f} s"
    if run.resumed:
        timing += f"; {run.resumed} resumed from `{SCORES_FILE}` and `{INCONCLUSIVE_FILE}`"
    return [
        Heading(f"Evaluation of {run.model} on {summary.dataset}", 1),
        Paragraph(intro),
        Table(
            ("model", "checkpoint sha256", "engine", "device", "protocol", "preprocess", "batch", "this run"),
            [
                (
                    run.model,
                    f"`{run.checkpoint_sha256[:16]}…`",
                    run.engine,
                    run.device,
                    run.protocol,
                    run.preprocess,
                    str(run.batch_size),
                    timing,
                )
            ],
        ),
        Paragraph(_protocol_text(summary)),
        *_results(summary),
        *_confusion(summary),
        *_mistakes(summary),
        *_attacks(summary),
        *_figures(summary, drawn, labelled),
        *_tdcf_details(summary),
        *_inconclusive(summary),
        *_failures(summary),
        Heading("Files"),
        BulletList(
            [
                f"`{SCORES_FILE}`: one `key score` line per scored file (ASVspoof 2021 submission format; "
                "a rerun resumes from it)",
                *(
                    [f"`{INCONCLUSIVE_FILE}`: one `{{key, reason}}` line per file with too little speech"]
                    if summary.inconclusive
                    else []
                ),
                f"`{LABELLED_SCORES_FILE}`: every scored file with its path, label, attack, score, fake "
                "probability and verdict",
                f"`{SUMMARY_FILE}`: every figure above, rates as fractions",
                "the figures: " + ", ".join(f"`{p.name}`" for p in drawn.values() if p is not None),
            ]
        ),
    ]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            out.append(block.text)
        elif isinstance(block, Table):
            lines = [
                "| " + " | ".join(block.header) + " |",
                "|" + "---|" * len(block.header),
                *("| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows),
            ]
            out.append("\n".join(lines))
        elif isinstance(block, Image):
            out.append(f"![{block.alt}]({block.file})")
        else:
            out.append("\n".join(f"- {item}" for item in block.items))
    return "\n\n".join(out) + "\n"


def _inline_html(text: str) -> str:
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


def render_html(blocks: list[Block], title: str) -> str:
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{_inline_html(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{_inline_html(block.text)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{_inline_html(c)}</th>" for c in block.header)
            rows = "".join(
                "<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in block.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, Image):
            body.append(f'<p><img src="{html.escape(block.file)}" alt="{html.escape(block.alt)}"></p>')
        else:
            body.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in block.items) + "</ul>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}"
        "img{max-width:100%}"
    )
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_report(
    out: Path, summary: Summary, labelled: LabelledScores, formats: tuple[str, ...] = ("md",)
) -> list[Path]:
    """Draw the figures, write ``summary.json`` and the report in ``formats``; returns the files written."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"report formats are {FORMATS}, got {sorted(unknown)}")
    out.mkdir(parents=True, exist_ok=True)
    drawn: dict[str, Path | None] = {
        "histogram": plots.score_histogram(
            out / "scores.png", labelled, summary.eer_threshold, summary.score_cut
        ),
        "det": plots.det_plot(out / "det.png", labelled, summary.eer) if summary.eer else None,
        "confusion": plots.confusion_plot(out / "confusion.png", summary.at_threshold, summary.threshold),
    }
    for stale in {"scores.png", "det.png"} - {p.name for p in drawn.values() if p is not None}:
        (out / stale).unlink(missing_ok=True)  # a figure an earlier run drew that this one cannot
    data = {**summary.to_dict(), "figures": sorted(p.name for p in drawn.values() if p is not None)}
    written = [p for p in drawn.values() if p is not None]
    (out / SUMMARY_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    written.append(out / SUMMARY_FILE)
    written.append(write_labelled_scores(out / LABELLED_SCORES_FILE, labelled, summary.threshold))
    blocks = build_blocks(summary, drawn, labelled)
    renderers = {
        "md": lambda: render_markdown(blocks),
        "html": lambda: render_html(blocks, f"voxguard evaluation: {summary.run.model} on {summary.dataset}"),
    }
    for fmt in FORMATS:
        report = out / f"report.{fmt}"
        if fmt in formats:
            report.write_text(renderers[fmt](), encoding="utf-8")
            written.append(report)
        else:
            report.unlink(missing_ok=True)  # an earlier run's report would no longer match these figures
    logger.info("report in %s: %s", out, ", ".join(p.name for p in written))
    return written


def write_labelled_scores(path: Path, labelled: LabelledScores, threshold: float) -> Path:
    """``scores.csv``: every scored file with its label, score and verdict, in the data set's order.

    ``scores.txt`` stays the two-column ASVspoof file that resuming and other tools read; this one
    adds what the labels say, for a spreadsheet or a script looking for the files it got wrong.
    """
    columns = ("key", "path", "label", "attack", "score", "fake_probability", "verdict", "correct")
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for f in scored_files(labelled, threshold):
            writer.writerow(
                (
                    f.key,
                    f.path,
                    f.label,
                    f.attack,
                    repr(f.score),
                    f"{f.fake_probability:.6g}",
                    f.verdict,
                    f.correct,
                )
            )
    return path


def render_text(summary: Summary, written: list[Path]) -> str:
    """A few lines for the terminal: what ran, the headline figures, where the report is."""
    run, m = summary.run, summary.at_threshold
    files = summary.headline()
    eer = summary.eer_note
    if summary.eer is not None:
        eer = f"{summary.eer:.2%} at score {summary.eer_threshold:.4f}"
    tdcf = f"{summary.tdcf.min_tdcf:.4f}" if summary.tdcf else summary.tdcf_note
    rates = ", ".join(
        f"{name} {_pct(value)}"
        for name, value in (
            ("accuracy", m.accuracy),
            ("precision", m.precision),
            ("recall", m.recall),
            ("F1", m.f1),
        )
    )
    reports = ", ".join(str(p) for p in written if p.suffix in (".md", ".html"))
    return "\n".join(
        [
            f"{run.model} on {summary.dataset} ({run.protocol} protocol, {run.preprocess} preprocessing): "
            f"{files['files']} files, {files['scored']} scored, {files['inconclusive']} inconclusive "
            f"(too little speech), {files['failed']} could not be scored",
            f"EER: {eer}",
            f"min t-DCF: {tdcf}",
            f"at fake probability >= {summary.threshold:g} (positive class spoof): {rates}",
            f"report: {reports}",
        ]
    )
