"""The table ``voxguard predict`` prints: a row per file, numbered notes under it (imported when it runs:
``scoring`` brings torch)."""

from __future__ import annotations

from collections.abc import Callable

from ..scoring import REPEATED, describe_segment


def _percent(p: float) -> str:
    """0.9996 is ">99.9%", never a rounded-up "100.0%" that would claim certainty (as on the web page)."""
    return ">99.9%" if p > 0.999 else "<0.1%" if p < 0.001 else f"{p:.1%}"


def _judged(show: Callable[[float], str], field: str) -> Callable[[dict], str]:
    """A verdict column: ``-`` where the outcome is INCONCLUSIVE and the field is null."""
    return lambda r: "-" if r[field] is None else show(r[field])


# The table's columns: header and how to show a scored file's record. Errors and warnings are not
# columns: a file that failed says ERROR with its code in "notes", and every warning (but the
# "repeated" one, a column of its own), error detail, synthetic segment or reason for no verdict is
# listed under the table, numbered like the notes that point to it.
_COLUMNS: tuple[tuple[str, Callable[[dict], str]], ...] = (
    ("verdict", lambda r: r["prediction"]),
    ("confidence", _judged(_percent, "confidence")),
    ("fake prob", _judged(lambda p: f"{p:.4f}", "fake_probability")),
    ("duration", lambda r: f"{r['duration_s']:.2f} s"),
    ("windows", lambda r: str(len(r["windows"]))),
)


def _leaning(r: dict) -> str:
    return "" if r["leaning"] is None else f"{r['leaning']} ({r['leaning_fake_probability']:.4f})"


# Shown only when a file is INCONCLUSIVE; the legend under the table says it is not a verdict.
_LEANING = ("leaning*", _leaning)
_LEANING_LEGEND = (
    "* leaning: for INCONCLUSIVE files only, the side the model leaned to and its fake probability; "
    "unreliable on so little speech, not a verdict"
)


def _repeated(r: dict) -> bool:
    return any(w.endswith(REPEATED) for w in r["warnings"])


# Audio shorter than a window is common (voice notes) and says the same thing for every such file, so it
# is a column with one legend line, not a numbered note per file that would bury segments and errors.
_REPEATED = ("repeated*", lambda r: "yes" if _repeated(r) else "")
_REPEATED_LEGEND = (
    "* repeated: the audio is shorter than the model's 4.04 s window, so its speech was repeated to fill it"
)


def print_table(rows: list[dict]) -> None:
    columns = list(_COLUMNS)
    scored = [r for r in rows if "error" not in r]
    leaning = any(r["leaning"] for r in scored)
    repeated = any(_repeated(r) for r in scored)
    if leaning:
        columns.insert([name for name, _ in columns].index("fake prob") + 1, _LEANING)
    if repeated:
        columns.append(_REPEATED)
    header = ("file", *(name for name, _ in columns), "notes")
    lines = [header]
    notes: list[str] = []
    for r in rows:
        if "error" in r:
            code = r["error"]["code"]
            notes.append(f"{r['file']}: {code}: {r['error']['detail']}")
            lines.append((r["file"], "ERROR", *[""] * (len(columns) - 1), f"{code} [{len(notes)}]"))
            continue
        marks = []
        said = [describe_segment(x) for x in r["segments"]] + ([r["reason"]] if r["reason"] else [])
        for note in said + [w for w in r["warnings"] if not w.endswith(REPEATED)]:
            notes.append(f"{r['file']}: {note}")
            marks.append(f"[{len(notes)}]")
        lines.append((r["file"], *(show(r) for _, show in columns), " ".join(marks)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    for shown, legend in ((leaning, _LEANING_LEGEND), (repeated, _REPEATED_LEGEND)):
        if shown:
            print(legend)
    if notes:
        print()
        for number, note in enumerate(notes, start=1):
            print(f"[{number}] {note}")
