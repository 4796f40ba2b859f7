"""Labelled audio lists for evaluation and training, read from the three layouts people actually have.

- an ASVspoof 2019/2021 LA protocol or key file plus its audio folder (official layout);
- a CSV with columns ``path,label[,attack]`` (a header row is optional; ``file`` is accepted for ``path``);
- a folder with ``bonafide/`` (or ``real/``) and ``spoof/`` (or ``fake/``) subfolders, where a further
  subfolder under ``spoof/`` names the attack.

Only paths and labels are read here; audio is decoded by whoever consumes the items.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Label = Literal["bonafide", "spoof"]

BONAFIDE: Label = "bonafide"
SPOOF: Label = "spoof"
NO_ATTACK = "-"
AUDIO_SUFFIXES = (".flac", ".wav", ".mp3", ".m4a", ".aac", ".ogg", ".opus", ".webm")

_LABEL_WORDS: dict[str, Label] = {
    "bonafide": BONAFIDE,
    "bona-fide": BONAFIDE,
    "bona_fide": BONAFIDE,
    "genuine": BONAFIDE,
    "real": BONAFIDE,
    "human": BONAFIDE,
    "spoof": SPOOF,
    "fake": SPOOF,
    "synthetic": SPOOF,
    "deepfake": SPOOF,
}
_FOLDERS: dict[Label, tuple[str, ...]] = {BONAFIDE: ("bonafide", "real"), SPOOF: ("spoof", "fake")}


class DatasetError(ValueError):
    """A data set that cannot be read as given; the message says what was expected."""


@dataclass(frozen=True)
class Item:
    """One labelled file. ``key`` is the utterance id in ASVspoof lists, else the path as listed."""

    key: str
    path: Path
    label: Label
    attack: str = NO_ATTACK


@dataclass(frozen=True)
class Dataset:
    name: str
    layout: Literal["asvspoof", "csv", "folder"]
    items: list[Item]

    def counts(self) -> dict[str, int]:
        """Items per label, for logs and reports."""
        found = Counter(item.label for item in self.items)
        return {BONAFIDE: found[BONAFIDE], SPOOF: found[SPOOF]}


def parse_label(word: str, where: str) -> Label:
    label = _LABEL_WORDS.get(word.strip().lower())
    if label is None:
        raise DatasetError(f"{where}: unknown label {word!r}; use bonafide/real or spoof/fake")
    return label


def load_dataset(source: Path, audio_dir: Path | None = None) -> Dataset:
    """Read ``source`` in whichever layout it has: a folder, a ``.csv`` file, or an ASVspoof protocol.

    ``audio_dir`` is the folder holding an ASVspoof protocol's audio (``flac/`` inside it is looked at
    too); CSV paths are relative to the CSV's own folder unless ``audio_dir`` is given.
    """
    source = Path(source)
    if not source.exists():
        raise DatasetError(f"{source} does not exist")
    if source.is_dir():
        items, layout = _from_folder(source), "folder"
    elif source.suffix.lower() == ".csv":
        items, layout = _from_csv(source, audio_dir or source.parent), "csv"
    else:
        if audio_dir is None:
            raise DatasetError(
                f"{source} looks like an ASVspoof protocol: give its audio folder too "
                "(e.g. --audio-dir ASVspoof2019_LA_eval)"
            )
        items, layout = _from_protocol(source, Path(audio_dir)), "asvspoof"
    if not items:
        raise DatasetError(f"{source} lists no audio files")
    missing = [item.path for item in items if not item.path.is_file()]
    if missing:
        raise DatasetError(f"{source}: {len(missing)} listed files are missing, e.g. {missing[0]}")
    keys = Counter(item.key for item in items)
    repeated = [key for key, n in keys.items() if n > 1]
    if repeated:
        raise DatasetError(f"{source}: {len(repeated)} keys appear more than once, e.g. {repeated[0]!r}")
    return Dataset(name=source.stem if source.is_file() else source.name, layout=layout, items=items)


def _from_folder(root: Path) -> list[Item]:
    items: list[Item] = []
    found = False
    for label, names in _FOLDERS.items():
        for name in names:
            folder = root / name
            if not folder.is_dir():
                continue
            found = True
            for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
                parts = path.relative_to(folder).parts
                attack = parts[0] if label == SPOOF and len(parts) > 1 else NO_ATTACK
                items.append(Item(str(path.relative_to(root)), path, label, attack))
    if not found:
        raise DatasetError(f"{root} has neither bonafide/ (or real/) nor spoof/ (or fake/) subfolders")
    return items


def _from_csv(path: Path, base: Path) -> list[Item]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        rows = [(reader.line_num, row) for row in reader if row and not row[0].startswith("#")]
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0][1]]
    columns: dict[str, int | None] = {"path": 0, "label": 1, "attack": 2}
    if "label" in header and ("path" in header or "file" in header):
        columns = {
            "path": header.index("path" if "path" in header else "file"),
            "label": header.index("label"),
            "attack": header.index("attack") if "attack" in header else None,
        }
        rows = rows[1:]
    items = []
    for line, row in rows:
        where = f"{path}:{line}"
        cells = [row[i].strip() if i is not None and i < len(row) else "" for i in columns.values()]
        name, word, attack = cells
        if not name or not word:
            raise DatasetError(f"{where}: expected path,label[,attack], got {row!r}")
        items.append(Item(name, base / name, parse_label(word, where), attack or NO_ATTACK))
    return items


def _from_protocol(path: Path, audio_dir: Path) -> list[Item]:
    """ASVspoof 2019 (``spk utt - attack key``) and 2021 (``spk utt codec trans attack key ...``) lines:
    the key is the last ``bonafide``/``spoof`` token (2021 repeats ``bonafide`` in the attack column)
    and a spoof's attack is the token before it."""
    folder = audio_dir / "flac" if (audio_dir / "flac").is_dir() else audio_dir
    items = []
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        tokens = text.split()
        if not tokens:
            continue
        where = f"{path}:{line}"
        key_at = max((i for i, t in enumerate(tokens) if t in (BONAFIDE, SPOOF)), default=None)
        if key_at is None or key_at < 2:
            raise DatasetError(
                f"{where}: expected an ASVspoof line such as 'LA_0079 LA_T_1138215 - - bonafide'"
            )
        utterance, label = tokens[1], parse_label(tokens[key_at], where)
        attack = tokens[key_at - 1] if label == SPOOF and key_at >= 3 else NO_ATTACK
        items.append(Item(utterance, _audio_file(folder, utterance), label, attack))
    return items


def _audio_file(folder: Path, utterance: str) -> Path:
    for suffix in AUDIO_SUFFIXES:
        candidate = folder / f"{utterance}{suffix}"
        if candidate.exists():
            return candidate
    return folder / f"{utterance}.flac"
