"""The recipe behind voxguard's own detector (SpecNet): leave-one-family-out runs, the shipped model, and
the held-out figures against the official AASIST weights on the same files (docs/evaluation.md).

    python scripts/detector_recipe.py --corpus build/corpus --out build/detector

Each step keeps its results in --out, so a rerun resumes where it stopped. Steps, in order:

1. ``aasist``: the official AASIST scores every test-split file once, as the service would (cached).
   ``scales`` (run on its own): the official AASIST and AASIST-L score the dev split, and each gets the
   score scale that makes its confidence mean what it says there, its offset kept
   (``official-scales.json``, with what each states on the test split raw and scaled); the values
   go into ``model/locate.py`` by hand, as the shipped model's sha256 does.
2. for each fold (``piper``, ``kokoro``, ``copysynth`` = WORLD, Griffin-Lim and LPC copies, ``hifigan`` =
   HiFi-GAN copies, ``vocoders`` = both, ``classic`` = espeak-ng + flite + festival + FreeTTS, each
   classic engine alone, then ``all``): train SpecNet without that family (``voxguard
   train``'s loop), fit the calibration on the fold's dev split and fold it into the weights, then score
   the fold's test files: the held-out family (every channel copy) and the held-out real speakers (every
   channel copy).
3. ``report.json`` and ``report.md``: per fold, SpecNet and AASIST side by side; for ``all``, also the
   rates at each ``VOXGUARD_THRESHOLD`` on dev (where an operating point is picked) and on test
   (``operating-points.json``).
4. with ``--seeds``: each fold is trained again with every extra seed (in ``<fold>-seed<N>``), and the
   report adds each held-out family's EER per seed and their mean (``all`` excepted). One seed's fold
   is one draw: on the same corpus, seeds 1234, 1235 and 1236 gave the copy-synthesis fold 32.1, 38.4
   and 38.7 %.
5. ``whisper`` (run on its own, after the folds): the frozen Whisper tiny.en encoder's pooled output
   for the training and test files (``whisper-train.npz``, ``whisper-test.npz``), a linear head on it per
   fold (trained without the fold's family), and each held-out family's EER for the head alone, each
   seed's SpecNet alone, their sum, and the seeds' SpecNets averaged plus the head (``whisper.json``,
   ``whisper.md``); with ``all`` in ``--folds``, also the shipped model's fold: its seeds' SpecNets
   averaged plus the head, the sum recalibrated on dev, at the service's decision and at each threshold,
   and that network (``specnet-whisper.pt``). Needs ``voxguard[whisper]``.

The ``all`` fold's calibrated checkpoint is the shipped ``specnet`` model; ``specnet-whisper.pt`` is the
shipped ``specnet-whisper`` (``ship`` copies both into the package, with their recorded scores).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from voxguard.corpus.build import BONAFIDE, read_manifest
from voxguard.corpus.folds import fold_lists
from voxguard.evaluation import heldout
from voxguard.inference import Detector
from voxguard.model.checkpoints import load_checkpoint, save_checkpoint, sha256_file
from voxguard.model.config import SpecWhisperConfig
from voxguard.model.locate import BUNDLED_DIR, spec_of
from voxguard.model.specwhisper import SpecWhisper
from voxguard.model.whisper import load_encoder
from voxguard.pipeline import Pipeline
from voxguard.scoring import Decision, Rule
from voxguard.settings import Settings
from voxguard.training.calibration import Calibration, fit_platt, fit_scale, fold_into
from voxguard.training.feature_head import LinearHead, fit_linear_head
from voxguard.training.recipe import Recipe
from voxguard.training.trainer import Runtime, train

logger = logging.getLogger("detector_recipe")

CLASSIC = ("espeak", "flite", "festival", "freetts")
FOLDS: dict[str, tuple[str, ...]] = {
    "piper": ("piper",),
    "kokoro": ("kokoro",),
    "copysynth": ("copysynth",),
    "hifigan": ("hifigan",),
    "vocoders": ("copysynth", "hifigan"),
    "classic": CLASSIC,
    **{engine: (engine,) for engine in CLASSIC},
    "all": (),
}
# The folds issue 20's bar averages: today's neural TTS and copy-synthesis.
BAR_FOLDS = ("piper", "kokoro", "copysynth")
# The Whisper head's strength and features (the encoder's mean over time): what an inner
# leave-one-family-out on the dev split picked for every bar fold (docs/evaluation.md).
HEAD_STRENGTH = 0.001
# The file rule's margin for one window's evidence in `specnet-whisper` (scoring.Rule.local_margin), in
# the units of the fused margin before its dev calibration: a file is FAKE on its windows' mean, or on
# one window this much more synthetic. The largest value whose dev spliced files (never trained or
# calibrated on) rank within half a point of the best-window rule (docs/evaluation.md).
LOCAL_MARGIN = 1.5


def _files(entries, keep) -> list[heldout.HeldOutFile]:  # type: ignore[no-untyped-def]
    """Channel: the copy's (``gsm``, ``vorbis``, ``babble``), or ``original`` for the file as made."""
    return [
        heldout.HeldOutFile(str(e.path), e.label, e.family, e.channel if e.parent else "original")
        for e in entries
        if keep(e)
    ]


def _csv(path: Path, corpus: Path, entries) -> None:  # type: ignore[no-untyped-def]
    rows = ["path,label,attack"] + [
        f"{(corpus / e.path).resolve()},{e.label},{e.family if e.label != BONAFIDE else '-'}" for e in entries
    ]
    path.write_text("\n".join(rows) + "\n")


def _rule(
    offset: float, scale: float = 1.0, threshold: float = 0.5, local_margin: float | None = None
) -> Rule:
    return Settings(threshold=threshold).rule.for_model(offset, scale, local_margin)


def official_margins(
    corpus: Path, out: Path, checkpoint_dir: Path, model: str = "aasist", split: str = "test"
) -> dict[str, np.ndarray]:
    """An official model's window margins for every file of a split, scored once and cached."""
    cache = out / (f"{model}-margins.npz" if split == "test" else f"{model}-{split}-margins.npz")
    result: dict[str, np.ndarray] = {}
    if cache.exists():
        with np.load(cache) as data:
            result = {k: data[k] for k in data.files}
    files = _files(read_manifest(corpus), lambda e: e.split == split)
    files = [replace(f, path=str(corpus / f.path)) for f in files if str(corpus / f.path) not in result]
    if not files:
        return result
    detector = Detector.load(model, checkpoint_dir=checkpoint_dir, engine="fast", device="cpu")
    logger.info("%s: scoring %d %s files (%d already scored)", model, len(files), split, len(result))
    for i in range(0, len(files), 50):  # saved as it goes: a rerun resumes
        cuts = heldout.cut(files[i : i + 50])
        result.update(
            {c.file.path: m for c, m in zip(cuts, heldout.score(cuts, detector, batch=4), strict=True)}
        )
        np.savez(cache, **result)
        logger.info("%s: %d %s files scored", model, len(result), split)
    return result


def official_scales(corpus: Path, out: Path, checkpoint_dir: Path) -> dict[str, dict]:
    """Each official model's score scale (``CheckpointSpec.score_scale``), fitted on the dev split with
    its offset kept, so its verdicts stay and its confidence means what it says on speech it never
    heard; then what it states on the test split, raw and scaled (``official-scales.json``)."""
    dev = [
        replace(f, path=str(corpus / f.path))
        for f in _files(read_manifest(corpus), lambda e: e.split == "dev")
    ]
    dev_cuts = heldout.cut(dev)
    bonafide = np.array([c.file.label == BONAFIDE for c in dev_cuts])
    test_cuts = fold_test_cuts((), corpus)
    scales = {}
    for model in ("aasist", "aasist-l"):
        margins = official_margins(corpus, out, checkpoint_dir, model, "dev")
        file_margins = heldout.file_margins(dev_cuts, [margins[c.file.path] for c in dev_cuts])
        offset = spec_of(model).score_offset
        scale = fit_scale(file_margins, bonafide, offset)
        test = official_margins(corpus, out, checkpoint_dir, model)
        test_margins = [test[c.file.path] for c in test_cuts]
        scales[model] = {"offset": offset, "scale": scale, "dev_files": len(dev_cuts)}
        for name, s in (("raw", 1.0), ("scaled", scale)):
            summary = heldout.summarise(test_cuts, heldout.judge(test_cuts, test_margins, _rule(offset, s)))
            scales[model][f"test_{name}"] = {
                k: getattr(summary, k)
                for k in (
                    "files",
                    "eer",
                    "fake_caught",
                    "real_flagged",
                    "confident_answers",
                    "confident_wrong",
                )
            } | {"reliability": summary.reliability}
        logger.info("%s: score scale %s", model, json.dumps(scales[model]))
    (out / "official-scales.json").write_text(json.dumps(scales, indent=1) + "\n")
    return scales


def fold_folder(out: Path, name: str, seed: int, main_seed: int) -> Path:
    """The main seed keeps the plain fold name, so runs made before ``--seeds`` existed are reused."""
    return out / name if seed == main_seed else out / f"{name}-seed{seed}"


def run_fold(
    name: str, held_out: tuple[str, ...], corpus: Path, folder: Path, epochs: int, seed: int, threads: int
) -> Path:
    """Train, calibrate and save one fold's model; returns the calibrated checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    calibrated = folder / "calibrated.pt"
    if calibrated.exists():
        return calibrated
    lists = fold_lists(read_manifest(corpus), held_out)
    # The corpus plan's copies only (an earlier plan made a third random chain, left out here).
    train_rows = [e for e in lists["train"] if not e.path.endswith(".random2.flac")]
    dev_rows = lists["dev"]
    _csv(folder / "train.csv", corpus, train_rows)
    _csv(folder / "dev.csv", corpus, dev_rows)
    real = sum(e.label == BONAFIDE for e in train_rows)
    recipe = Recipe(
        train=str(folder / "train.csv"),
        dev=str(folder / "dev.csv"),
        model="specnet",
        name=f"specnet-lofo-{name}" if held_out else "specnet",
        epochs=epochs,
        batch_size=32,
        lr=1e-3,
        lr_min=1e-5,
        # Both classes weigh the same in the loss whatever their counts.
        spoof_weight=real / len(train_rows),
        bonafide_weight=1 - real / len(train_rows),
        seed=seed,
        swa=False,
    )
    runtime = Runtime(
        threads=threads,
        out=folder / "run",
        device="cpu",
        progress=False,
        resume=(folder / "run" / "last.pt").exists(),
    )
    summary = train(recipe, runtime)
    loaded = load_checkpoint("specnet", path=summary.out / "best.pt")
    cuts = fold_test_cuts(held_out, corpus, "dev")
    detector = Detector(loaded, engine="eager", device="cpu")
    margins = heldout.score(cuts, detector)
    calibration = fit_platt(
        heldout.file_margins(cuts, margins), np.array([c.file.label == BONAFIDE for c in cuts])
    )
    logger.info("fold %s: dev calibration %s", name, calibration)
    fold_into(loaded.model.out_layer, calibration)
    save_checkpoint(
        calibrated,
        loaded.model,
        name=recipe.name,
        extra={
            "score_offset": 0.0,
            "calibration": asdict(calibration),
            "held_out_families": list(held_out),
            "recipe": recipe.to_dict(),
            "trained_from": str(folder / "run" / "best.pt"),
        },
    )
    return calibrated


def fold_test_cuts(held_out: tuple[str, ...], corpus: Path, split: str = "test") -> list[heldout.Cut]:
    """A fold's test (or dev) files, decoded and windowed once for every model scored on them."""
    rows = fold_lists(read_manifest(corpus), held_out)[split]
    return heldout.cut([replace(f, path=str(corpus / f.path)) for f in _files(rows, lambda e: True)])


def evaluate_fold(
    name: str,
    held_out: tuple[str, ...],
    cuts: list[heldout.Cut],
    checkpoint: Path,
    aasist: dict[str, np.ndarray],
) -> dict:
    detector = Detector(load_checkpoint("specnet", path=checkpoint), engine="eager", device="cpu")
    ours = heldout.score(cuts, detector)
    theirs = [aasist[c.file.path] for c in cuts]
    result: dict = {"fold": name, "held_out": list(held_out), "files": len(cuts)}
    for model, margins in (("specnet", ours), ("aasist", theirs)):
        spec = spec_of(model)
        result[model] = _summary(cuts, margins, _rule(spec.score_offset, spec.score_scale))
    return result


def _summary(cuts: list[heldout.Cut], margins: list[np.ndarray], rule: Rule) -> dict:
    """The service's verdicts on a fold's files: the summary, and each family's EER and catch rate."""
    decisions = heldout.judge(cuts, margins, rule)
    summary = asdict(heldout.summarise(cuts, decisions))
    summary["by_family"] = {
        family: {"eer": s.eer, "fake_caught": s.fake_caught}
        for family, s in _by_family(cuts, decisions).items()
    }
    return summary


def _by_family(cuts: list[heldout.Cut], decisions: list[Decision]) -> dict[str, heldout.Summary]:
    """Each synthetic family against all the real files: its EER and how many of it were caught."""
    out = {}
    for family in sorted({c.file.family for c in cuts if c.file.label != BONAFIDE}):
        pick = [i for i, c in enumerate(cuts) if c.file.label == BONAFIDE or c.file.family == family]
        out[family] = heldout.summarise([cuts[i] for i in pick], [decisions[i] for i in pick])
    return out


THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def operating_points(
    splits: dict[str, tuple[list[heldout.Cut], list[np.ndarray]]], local_margin: float | None = None
) -> list[dict]:
    """A model's verdicts at each ``VOXGUARD_THRESHOLD`` on dev (where one is picked) and on test, from
    its calibrated window margins on each split's files, by its file rule (``local_margin``)."""
    points = []
    for split, (cuts, margins) in splits.items():
        for threshold in THRESHOLDS:
            decisions = heldout.judge(
                cuts, margins, _rule(0.0, threshold=threshold, local_margin=local_margin)
            )
            summary = asdict(heldout.summarise(cuts, decisions))
            caught = {f: s.fake_caught for f, s in _by_family(cuts, decisions).items()}
            points.append({"split": split, "threshold": threshold, **summary, "caught_by_family": caught})
    return points


def render_points(points: list[dict]) -> str:
    lines = [
        "| split | threshold | fakes called FAKE | real called FAKE | "
        "real FAKE: original / gsm / vorbis / babble | espeak-ng / flite caught |",
        "|---|---:|---:|---:|---|---|",
    ]
    for p in points:
        channels = _channels(p["real_flagged_by_channel"])
        classic = " / ".join(_pct(p["caught_by_family"].get(f, float("nan"))) for f in ("espeak", "flite"))
        lines.append(
            f"| {p['split']} | {p['threshold']} | {_pct(p['fake_caught'])} | {_pct(p['real_flagged'])} | "
            f"{channels} | {classic} |"
        )
    return "\n".join(lines) + "\n"


def _pct(x: float) -> str:
    return "-" if x != x else f"{100 * x:.1f} %"


def _channels(by_channel: dict[str, float]) -> str:
    return " / ".join(
        _pct(by_channel.get(ch, float("nan"))) for ch in ("original", "gsm", "vorbis", "babble")
    )


def render(results: list[dict], models: tuple[str, str] = ("specnet", "aasist")) -> str:
    """The tables docs/evaluation.md quotes: per fold, SpecNet and the official AASIST (or any two
    models ``results`` holds) on the same files."""
    names = [{"specnet": "SpecNet", "aasist": "AASIST"}.get(m, m) for m in models]
    lines = [
        "| fold (held out) | model | files | EER | fakes called FAKE | real called FAKE | "
        "real FAKE: original / gsm / vorbis / babble | confidently wrong (answers >= 0.9) | inconclusive |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in results:
        for model in models:
            s = r[model]
            channels = _channels(s["real_flagged_by_channel"])
            wrong = f"{_pct(s['confident_wrong'])} of {s['confident_answers']}"
            held = ", ".join(r["held_out"]) or "none: every family's test split"
            lines.append(
                f"| {r['fold']} ({held}) | {model} | "
                f"{s['files']} | {_pct(s['eer'])} | {_pct(s['fake_caught'])} | {_pct(s['real_flagged'])} | "
                f"{channels} | {wrong} | {s['inconclusive']} |"
            )
    lines += [
        "",
        f"Per family (EER / fakes called FAKE), {names[0]} vs {names[1]}:",
        "",
        f"| fold | family | {names[0]} EER | {names[0]} caught | {names[1]} EER | {names[1]} caught |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        for family, ours in r[models[0]]["by_family"].items():
            theirs = r[models[1]]["by_family"][family]
            lines.append(
                f"| {r['fold']} | {family} | {_pct(ours['eer'])} | {_pct(ours['fake_caught'])} | "
                f"{_pct(theirs['eer'])} | {_pct(theirs['fake_caught'])} |"
            )
    lines += [
        "",
        f"Reliability (answers, accuracy at each confidence band), {names[0]} vs {names[1]}:",
        "",
        "| fold | model | "
        + " | ".join(f"{b:.2f}-{e:.2f}" for b, e in itertools.pairwise(heldout.BINS))
        + " |",
        "|---|---|" + "---:|" * (len(heldout.BINS) - 1),
    ]
    for r in results:
        for model in models:
            cells = []
            for low, _ in itertools.pairwise(heldout.BINS):
                row = next((b for b in r[model]["reliability"] if b["low"] == low), None)
                cells.append("-" if row is None else f"{row['answers']}: {_pct(row['accuracy'])}")
            lines.append(f"| {r['fold']} | {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def whisper_features(corpus: Path, out: Path, split: str) -> dict[str, np.ndarray]:
    """The frozen Whisper encoder's pooled output per file of a split, cached in ``out`` (a rerun
    resumes): every window of a test file, as SpecNet scores them; the middle speech window of a
    training file, one example each for the head."""
    cache = out / f"whisper-{split}.npz"
    result: dict[str, np.ndarray] = {}
    if cache.exists():
        with np.load(cache) as data:
            result = {k: data[k] for k in data.files}
    rows = [e for e in read_manifest(corpus) if e.split == split and not e.path.endswith(".random2.flac")]
    files = [replace(f, path=str(corpus / f.path)) for f in _files(rows, lambda e: True)]
    files = [f for f in files if f.path not in result]
    if not files:
        return result
    encoder = load_encoder()
    logger.info("whisper: %d %s files to encode (%d cached)", len(files), split, len(result))
    for i in range(0, len(files), 50):
        # A file the service refuses (too short, silent) is kept with no rows, so it is not cut again.
        result.update({f.path: np.zeros((0, encoder.config.width), np.float16) for f in files[i : i + 50]})
        for c in heldout.cut(files[i : i + 50]):
            batch = c.windows.batch
            if split == "train":
                speech = np.flatnonzero(~np.asarray(c.windows.silent))
                if not len(speech):
                    continue
                batch = batch[speech[len(speech) // 2]][None]
            with torch.inference_mode():
                pooled = [
                    encoder.pooled(torch.from_numpy(np.asarray(batch[s : s + 8], dtype=np.float32)))
                    for s in range(0, len(batch), 8)
                ]
            result[c.file.path] = torch.cat(pooled).numpy().astype(np.float16)
        np.savez(cache, **result)
        logger.info("whisper: %d %s files encoded", len(result), split)
    return result


def fold_margins(folder: Path, cuts: list[heldout.Cut], split: str = "test") -> list[np.ndarray]:
    """A fold model's window margins on a split's files, cached beside its checkpoint."""
    cache = folder / f"{split}-margins.npz"
    if cache.exists():
        with np.load(cache) as data:
            if all(c.file.path in data.files for c in cuts):
                return [data[c.file.path] for c in cuts]
    detector = Detector(
        load_checkpoint("specnet", path=folder / "calibrated.pt"), engine="eager", device="cpu"
    )
    margins = heldout.score(cuts, detector)
    np.savez(cache, **{c.file.path: m for c, m in zip(cuts, margins, strict=True)})
    return margins


def _family_eers(
    cuts: list[heldout.Cut],
    margins: list[np.ndarray],
    held_out: tuple[str, ...],
    local_margin: float | None = None,
) -> dict:
    decisions = heldout.judge(cuts, margins, _rule(0.0, local_margin=local_margin))
    return {f: s.eer for f, s in _by_family(cuts, decisions).items() if f in held_out}


def fold_head(
    corpus: Path, manifest: list, held_out: tuple[str, ...], train: dict[str, np.ndarray]
) -> tuple[LinearHead, int]:
    """The head on the Whisper features of a fold's training files, and how many windows it saw:
    never the fold's family, nor spliced files (whose window may hold only real speech)."""
    rows = [
        e
        for e in fold_lists(manifest, held_out)["train"]
        if e.family != "spliced" and len(train.get(str(corpus / e.path), ()))
    ]
    head = fit_linear_head(
        np.stack([train[str(corpus / e.path)][0] for e in rows]).astype(np.float64),
        np.array([e.label == BONAFIDE for e in rows]),
        HEAD_STRENGTH,
    )
    return head, len(rows)


def whisper_study(
    corpus: Path, out: Path, train: dict[str, np.ndarray], folds: list[str], seeds: list[int], main_seed: int
) -> list[dict]:
    """Per fold: the head trained without the fold's family, scored on the fold's test files alone and
    added to each seed's SpecNet margins, and to their mean over seeds (what ``specnet-whisper``
    ships, judged by its file rule too: ``LOCAL_MARGIN``). Both are log-odds, so the sum needs no
    weight."""
    test = whisper_features(corpus, out, "test")
    manifest = read_manifest(corpus)
    results = []
    for name in folds:
        held = FOLDS[name]
        head, _ = fold_head(corpus, manifest, held, train)
        cuts = fold_test_cuts(held, corpus)
        heads = [head.margin(test[c.file.path]) for c in cuts]
        result: dict = {"fold": name, "held_out": list(held), "head": _family_eers(cuts, heads, held)}
        result["seeds"] = {}
        every = []
        for seed in seeds:
            folder = fold_folder(out, name, seed, main_seed)
            if not (folder / "calibrated.pt").exists():
                continue
            every.append(fold_margins(folder, cuts))
            result["seeds"][str(seed)] = _with_head(cuts, every[-1], heads, held)
        if every:
            result["ensemble"] = _with_head(cuts, _averaged(every), heads, held, LOCAL_MARGIN)
        logger.info("whisper: fold %s %s", name, json.dumps(result))
        results.append(result)
    return results


def _averaged(models: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Several models' window margins on the same files -> their mean, file by file (what
    ``SpecWhisper`` computes from its members)."""
    return [np.mean(margins, axis=0) for margins in zip(*models, strict=True)]


def _with_head(
    cuts: list[heldout.Cut],
    ours: list[np.ndarray],
    heads: list[np.ndarray],
    held_out: tuple[str, ...],
    local_margin: float | None = None,
) -> dict:
    """Held-out EERs of SpecNet alone and with the head; with ``local_margin``, also of the sum judged by
    the file rule with that margin (``fused_local``)."""
    fused = [m + h for m, h in zip(ours, heads, strict=True)]
    result = {"specnet": _family_eers(cuts, ours, held_out), "fused": _family_eers(cuts, fused, held_out)}
    if local_margin is not None:
        result["fused_local"] = _family_eers(cuts, fused, held_out, local_margin)
    return result


def whisper_all(corpus: Path, out: Path, train: dict[str, np.ndarray], members: list[Path]) -> dict:
    """The shipped model's fold (every family in training) with the head: the mean margin of the fold's
    SpecNets (``members``: one folder per seed) plus the head is recalibrated on the dev split (a Platt
    fit on the file scores of its file rule, ``LOCAL_MARGIN``), then judged at the service's decision on
    the test files beside the shipped SpecNet alone (the first member), so what the head costs in false
    alarms shows as well as what it catches. The rule's margin is recorded in calibrated units, as the
    service applies it."""
    head, windows = fold_head(corpus, read_manifest(corpus), (), train)
    splits = {}
    for split in ("dev", "test"):
        cuts = fold_test_cuts((), corpus, split)
        features = whisper_features(corpus, out, split)
        each = [fold_margins(folder, cuts, split) for folder in members]
        fused = [m + head.margin(features[c.file.path]) for m, c in zip(_averaged(each), cuts, strict=True)]
        splits[split] = (cuts, each[0], fused)
    cuts, _, fused = splits["dev"]
    calibration = fit_platt(
        heldout.file_margins(cuts, fused, Rule(local_margin=LOCAL_MARGIN)),
        np.array([c.file.label == BONAFIDE for c in cuts]),
    )
    local_margin = calibration.scale * LOCAL_MARGIN
    cuts, shipped, fused = splits["test"]
    result: dict = {
        "fold": "all",
        "held_out": [],
        "members": len(members),
        "calibration": asdict(calibration),
        "local_margin": local_margin,
        "files": len(cuts),
    }
    result["specnet"] = _summary(cuts, shipped, _rule(0.0))
    result["specnet + whisper"] = _summary(
        cuts, [calibration.apply(m) for m in fused], _rule(0.0, local_margin=local_margin)
    )
    result["operating_points"] = operating_points(
        {split: (cuts, [calibration.apply(m) for m in fused]) for split, (cuts, _, fused) in splits.items()},
        local_margin,
    )
    model = assemble([folder / "calibrated.pt" for folder in members], head, calibration)
    save_checkpoint(
        out / "specnet-whisper.pt",
        model,
        name="specnet-whisper",
        extra={
            "score_offset": 0.0,
            "local_margin": local_margin,
            "calibration": asdict(calibration),
            "head_strength": HEAD_STRENGTH,
            "head_windows": windows,
            "trained_from": [str(folder / "calibrated.pt") for folder in members],
        },
    )
    return result


def assemble(specnets: list[Path], head: LinearHead, calibration: Calibration) -> SpecWhisper:
    """One network from the fold's calibrated SpecNets (one per seed), the head (its standardisation
    folded into the linear layer) and the sum's dev calibration; the encoder's weights are the
    published ones."""
    loaded = [load_checkpoint("specnet", path=path) for path in specnets]
    model = SpecWhisper(SpecWhisperConfig(specnet=loaded[0].config, members=len(loaded)))
    model.load_external()
    for member, source in zip(model.specnets, loaded, strict=True):
        member.load_state_dict(source.model.state_dict())
    weight = head.weight / head.scale
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(weight[None]))
        model.head.bias.fill_(head.bias - float(weight @ head.mean))
        model.calibration.weight.fill_(calibration.scale)
        model.calibration.bias.fill_(calibration.bias)
    return model.eval()


def render_whisper(results: list[dict], bar_folds: tuple[str, ...] = BAR_FOLDS) -> str:
    """Held-out family EER: the head alone, SpecNet alone and SpecNet + head, per seed and over seeds,
    and the mean of the seeds' SpecNets with the head, by the best-window rule and by the file rule
    with ``LOCAL_MARGIN`` (what ``specnet-whisper`` ships)."""
    lines = [
        "| fold | held-out family | head alone | SpecNet, by seed | SpecNet + head, by seed "
        "| SpecNet, mean | SpecNet + head, mean | seeds' SpecNets averaged + head "
        "| the same, file rule with its local margin (shipped) |",
        "|---|---|---:|---|---|---:|---:|---:|---:|",
    ]
    means: dict[str, list[float]] = {"specnet": [], "fused": [], "ensemble": [], "shipped": []}
    for r in results:
        for family, head in r["head"].items():
            per = {m: [s[m][family] for s in r["seeds"].values()] for m in ("specnet", "fused")}
            mean = {m: float(np.mean(v)) if v else float("nan") for m, v in per.items()}
            mean["ensemble"] = r["ensemble"]["fused"][family] if "ensemble" in r else float("nan")
            mean["shipped"] = r["ensemble"]["fused_local"][family] if "ensemble" in r else float("nan")
            if r["fold"] in bar_folds and r["held_out"] == [family]:
                for m in means:
                    means[m].append(mean[m])
            lines.append(
                f"| {r['fold']} | {family} | {100 * head:.1f} % | "
                + " | ".join(" / ".join(f"{100 * e:.1f}" for e in per[m]) + " %" for m in per)
                + " | "
                + " | ".join(_pct(mean[m]) for m in means)
                + " |"
            )
    text = "\n".join(lines) + "\n"
    if len(means["specnet"]) == len(bar_folds):
        text += (
            f"\nMean over {', '.join(bar_folds)}: SpecNet {_pct(float(np.mean(means['specnet'])))}, "
            f"SpecNet + head {_pct(float(np.mean(means['fused'])))}, "
            f"seeds' SpecNets averaged + head {_pct(float(np.mean(means['ensemble'])))}, "
            f"the same by the file rule with its local margin {_pct(float(np.mean(means['shipped'])))}.\n"
        )
    return text


def held_out_eers(result: dict) -> dict[str, float]:
    """SpecNet's EER on each family its fold held out."""
    return {f: result["specnet"]["by_family"][f]["eer"] for f in result["held_out"]}


def render_seeds(results: list[dict], bar_folds: tuple[str, ...] = BAR_FOLDS) -> str:
    """Held-out family EER for every seed a fold was trained with, and their mean."""
    seeds = sorted({int(seed) for r in results for seed in r.get("seeds", {})})
    lines = [
        "| fold | held-out family | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
        "|---|---|" + "---:|" * (len(seeds) + 1),
    ]
    # report.json keys seeds as strings; read them as numbers once.
    by_seed = {r["fold"]: {int(k): v for k, v in r.get("seeds", {}).items()} for r in results}
    for r in results:
        per_seed = by_seed[r["fold"]]
        for family in r["held_out"] if per_seed else ():
            values = [per_seed[s][family] if s in per_seed else None for s in seeds]
            known = [v for v in values if v is not None]
            cells = ["-" if v is None else _pct(v) for v in values]
            lines.append(f"| {r['fold']} | {family} | " + " | ".join(cells) + f" | {_pct(np.mean(known))} |")
    bar = [fold for fold in bar_folds if by_seed.get(fold)]
    if len(bar) == len(bar_folds):
        means = []
        for s in seeds:
            eers = [v for fold in bar for v in by_seed[fold].get(s, {}).values()]
            if len(eers) == len(bar_folds):
                means.append((s, float(np.mean(eers))))
        lines += [
            "",
            f"Mean held-out EER over {', '.join(bar_folds)}: "
            + ", ".join(f"seed {s} {_pct(m)}" for s, m in means)
            + f"; over seeds {_pct(float(np.mean([m for _, m in means])))}.",
        ]
    return "\n".join(lines) + "\n"


SAMPLE_FILES = ("p225_001_mic1.flac", "p225_002_mic2.flac", "voicememo.mp3")


def ship(out: Path, samples: Path, golden: Path) -> None:
    """Copy the ``all`` fold's calibrated model (and, once ``--step whisper`` has built it, the same
    with the Whisper head) into the package and record what each scores, so a test can check both its
    sha256 and that it still computes these numbers."""
    for name, source in (
        ("specnet", out / "all" / "calibrated.pt"),
        ("specnet-whisper", out / "specnet-whisper.pt"),
    ):
        if source.exists():
            _ship_one(name, source, samples, golden)


def _ship_one(name: str, source: Path, samples: Path, golden: Path) -> None:
    target = BUNDLED_DIR / f"{name}.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    detector = Detector(load_checkpoint(name, path=target), engine="eager", device="cpu")
    with np.load(golden) as g:
        rows = {str(n): r for n, r in zip(g["row_names"], g["inputs"], strict=True)}
    recorded = {
        "sha256": sha256_file(target),
        "size": target.stat().st_size,
        "golden_margins": {
            n: float(m) for n, m in zip(rows, detector.scores(np.stack(list(rows.values()))), strict=True)
        },
        "sample_fake_probability": {
            name: Pipeline(
                Settings().audio,
                Settings().rule.for_loaded(detector.info),
            )
            .run((samples / name).read_bytes(), detector, 4)
            .decision.fake_probability
            for name in SAMPLE_FILES
        },
    }
    (target.parent / f"{name}.scores.json").write_text(json.dumps(recorded, indent=1) + "\n")
    logger.info("shipped %s: %s", target, json.dumps(recorded))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--seeds",
        default="",
        help="comma-separated extra seeds: every fold is trained again with each; the report gives each "
        "held-out family's EER per seed and the mean, and --step whisper averages the 'all' fold's "
        "SpecNets of every seed into specnet-whisper",
    )
    parser.add_argument(
        "--folds", default=",".join(FOLDS), help="comma-separated subset of " + ",".join(FOLDS)
    )
    parser.add_argument(
        "--checkpoint-dir", type=Path, default=Path("checkpoints"), help="the official weights"
    )
    parser.add_argument(
        "--step", choices=("all", "aasist", "scales", "folds", "ship", "whisper"), default="all"
    )
    parser.add_argument(
        "--samples", type=Path, default=Path("../shared/samples"), help="for the recorded scores"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.step == "ship":
        ship(args.out, args.samples, args.checkpoint_dir / "golden.npz")
        return
    if args.step == "scales":
        official_scales(args.corpus, args.out, args.checkpoint_dir)
        return
    extra_seeds = [int(s) for s in args.seeds.split(",") if s and int(s) != args.seed]
    if args.step == "whisper":
        folds = [name for name in args.folds.split(",") if FOLDS[name]]
        train = whisper_features(args.corpus, args.out, "train")
        study = whisper_study(args.corpus, args.out, train, folds, [args.seed, *extra_seeds], args.seed)
        report = render_whisper(study)
        if "all" in args.folds.split(","):
            folders = [fold_folder(args.out, "all", seed, args.seed) for seed in [args.seed, *extra_seeds]]
            members = [folder for folder in folders if (folder / "calibrated.pt").exists()]
            everything = whisper_all(args.corpus, args.out, train, members)
            study.append(everything)
            report += "\nEvery family in training, the sum recalibrated on dev:\n\n"
            report += render([everything], ("specnet", "specnet + whisper"))
            report += "\n`specnet-whisper` at each VOXGUARD_THRESHOLD:\n\n"
            report += render_points(everything["operating_points"])
        (args.out / "whisper.json").write_text(json.dumps(study, indent=1) + "\n")
        (args.out / "whisper.md").write_text(report)
        return
    aasist = official_margins(args.corpus, args.out, args.checkpoint_dir) if args.step != "folds" else None
    if args.step == "aasist":
        return
    results = []
    for name in args.folds.split(","):
        seeds = [args.seed, *extra_seeds]
        checkpoints = {
            seed: run_fold(
                name,
                FOLDS[name],
                args.corpus,
                fold_folder(args.out, name, seed, args.seed),
                args.epochs,
                seed,
                args.threads,
            )
            for seed in seeds
        }
        if aasist is None:
            continue
        cuts = fold_test_cuts(FOLDS[name], args.corpus)
        result = evaluate_fold(name, FOLDS[name], cuts, checkpoints[args.seed], aasist)
        if extra_seeds and FOLDS[name]:
            result["seeds"] = {str(args.seed): held_out_eers(result)} | {
                str(seed): held_out_eers(evaluate_fold(name, FOLDS[name], cuts, path, aasist))
                for seed, path in checkpoints.items()
                if seed != args.seed
            }
        results.append(result)
        (args.out / "report.json").write_text(json.dumps(results, indent=1))
        report = render(results)
        if any("seeds" in r for r in results):
            report += "\nHeld-out family EER by training seed:\n\n" + render_seeds(results)
        if name == "all":
            folder = checkpoints[args.seed].parent
            splits = {"dev": fold_test_cuts((), args.corpus, "dev"), "test": cuts}
            points = operating_points({s: (c, fold_margins(folder, c, s)) for s, c in splits.items()})
            (args.out / "operating-points.json").write_text(json.dumps(points, indent=1))
            report += "\nThe all-families model at each VOXGUARD_THRESHOLD:\n\n" + render_points(points)
        (args.out / "report.md").write_text(report)
        logger.info(
            "fold %s: %s",
            name,
            json.dumps(
                {
                    m: {
                        k: results[-1][m][k]
                        for k in ("eer", "fake_caught", "real_flagged", "confident_wrong")
                    }
                    for m in ("specnet", "aasist")
                }
            ),
        )


if __name__ == "__main__":
    main()
