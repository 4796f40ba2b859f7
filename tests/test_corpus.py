"""The corpus builder on a tiny plan: every kind of job, real engines and vocoders, channel copies, splits."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxguard.corpus import build, channels, copysynth, tts
from voxguard.corpus.build import BONAFIDE, SPOOF, Sizes
from voxguard.corpus.folds import fold_lists

TINY = Sizes(
    per_tts_family=1,
    per_vocoder=1,
    fsdd_per_speaker=1,
    asterisk_per_voice=1,
    librispeech=40,
    spliced=2,
    train_copies=1,
    dev_copies=1,
)


@pytest.fixture(scope="module")
def corpus(samples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[build.Entry]]:
    out = tmp_path_factory.mktemp("corpus")
    return out, build.build(samples_dir.parent, out, TINY, seed=7, workers=2)


@pytest.mark.slow
def test_every_source_kind_is_made_labelled_and_at_16k(corpus):
    out, entries = corpus
    families = Counter(e.family for e in entries if not e.parent)
    for family in (
        "librispeech",
        "fsdd",
        "asterisk",
        "asterisk-g722",
        "samples",
        "piper",
        "kokoro",
        "espeak",
        "flite",
        "festival",
        "freetts",
        "copysynth",
        "hifigan",
        "spliced",
    ):
        assert families[family] > 0, family
    vocoded = [e for e in entries if e.path.startswith("spoof/copysynth/")]
    assert {e.engine for e in vocoded} == set(copysynth.VOCODERS)
    assert all(e.family == copysynth.FAMILY[e.engine] for e in vocoded)
    assert {e.engine for e in entries if e.family == "hifigan"} == {"hifigan"}
    assert {
        e.engine for e in entries if e.family in ("piper", "kokoro", "espeak", "flite", "festival", "freetts")
    } == set(tts.ENGINES)
    for e in entries:
        info = sf.info(out / e.path)
        assert info.samplerate == 16000 and info.channels == 1, e.path
        assert e.label == (
            BONAFIDE if e.family in ("librispeech", "fsdd", "asterisk", "asterisk-g722", "samples") else SPOOF
        )
        assert e.licence and e.source and e.split in build.SPLITS
        assert abs(info.duration - e.duration_s) < 0.01


@pytest.mark.slow
def test_splits_never_share_a_speaker_or_a_sentence(corpus):
    _, entries = corpus
    by_speaker: dict[str, set[str]] = {}
    for e in entries:
        if e.label == BONAFIDE or e.family in copysynth.FAMILY.values():
            by_speaker.setdefault(e.speaker, set()).add(e.split)
    assert all(len(splits) == 1 for splits in by_speaker.values()), by_speaker
    texts: dict[str, set[str]] = {}
    for e in entries:
        for sentence in filter(None, e.text.split(". ")):
            texts.setdefault(sentence.rstrip("."), set()).add(e.split)
    assert all(len(splits) == 1 for splits in texts.values())


@pytest.mark.slow
def test_channel_copies_are_made_for_both_classes_and_test_gets_the_held_out_channels(corpus):
    out, entries = corpus
    copies = [e for e in entries if e.parent]
    assert {e.label for e in copies if e.split == "train"} == {BONAFIDE, SPOOF}
    assert {e.channel for e in copies if e.split == "test"} == {"gsm", "vorbis", "babble"}
    train_chains = {part for e in copies if e.split != "test" for part in e.channel.split("+")}
    assert train_chains <= set(channels.TRAINING) and not train_chains & {"gsm", "vorbis", "babble"}
    parent = {e.path: e for e in entries}[copies[0].parent]
    assert (copies[0].label, copies[0].split, copies[0].family) == (parent.label, parent.split, parent.family)
    a, _ = sf.read(out / copies[0].path)
    b, _ = sf.read(out / parent.path)
    assert len(a) == len(b) and not np.allclose(a, b)


@pytest.mark.slow
def test_spliced_files_record_where_the_synthetic_stretch_is(corpus):
    _, entries = corpus
    for e in (e for e in entries if e.family == "spliced" and not e.parent):
        start, end = (float(v) for v in e.segment.split("-"))
        assert 0 < start < end <= e.duration_s + 0.01
        assert e.split != "train"


@pytest.mark.slow
def test_a_rerun_resumes_and_the_manifest_reads_as_a_training_csv(corpus, samples_dir):
    out, entries = corpus
    again = build.build(samples_dir.parent, out, TINY, seed=7, workers=1)
    assert sorted(e.path for e in again) == sorted(e.path for e in entries)
    with (out / "manifest.csv").open() as f:
        header = next(csv.reader(f))
    assert header[:3] == ["path", "label", "family"]


@pytest.mark.slow
def test_a_rerun_relabels_hifigan_copies_an_older_build_called_copysynth(corpus, samples_dir):
    out, entries = corpus
    older = [replace(e, family="copysynth") if e.family == "hifigan" else e for e in entries]
    build.write_manifest(out, older)
    again = build.build(samples_dir.parent, out, TINY, seed=7, workers=1)
    hifigan = {e.path for e in entries if e.family == "hifigan"}
    assert hifigan and {e.path for e in again if e.family == "hifigan"} == hifigan
    assert {e.path for e in build.read_manifest(out) if e.family == "hifigan"} == hifigan


@pytest.mark.slow
def test_a_fold_holds_its_family_out_of_train_and_dev_and_tests_on_it(corpus):
    _, entries = corpus
    lists = fold_lists(entries, ("kokoro",))
    assert not any(e.family in ("kokoro", "spliced") for split in ("train", "dev") for e in lists[split])
    assert {e.family for e in lists["test"] if e.label == SPOOF} == {"kokoro"}
    assert any(e.label == BONAFIDE for e in lists["test"])


def test_the_full_plan_gives_every_source_its_own_path(samples_dir):
    """Asterisk prompt names repeat across voices (digits/1.wav in every language): each voice's file
    keeps its own path, or a test voice's prompt would overwrite a training voice's."""
    if not build.ASTERISK_DIR.is_dir():
        pytest.fail(f"{build.ASTERISK_DIR} missing: apt-get install $(cat scripts/corpus-packages.txt)")
    jobs = build.plan(samples_dir.parent, Sizes.named("full"), 1234)
    paths = [j.entry.path for j in jobs]
    assert len(paths) == len(set(paths))
    asterisk = [j.entry for j in jobs if j.entry.family == "asterisk"]
    assert {e.path.split("/")[2] for e in asterisk} == set(build.ASTERISK_SPLITS)


def test_a_plan_with_two_sources_at_one_path_is_refused(monkeypatch, samples_dir):
    real = build.real_jobs(samples_dir.parent, TINY, 7)
    monkeypatch.setattr(build, "real_jobs", lambda *args: [*real, real[0]])
    with pytest.raises(ValueError, match="planned twice"):
        build.plan(samples_dir.parent, TINY, 7)


def test_a_missing_engine_is_named_with_its_install_command(monkeypatch):
    monkeypatch.setattr(tts.shutil, "which", lambda name: None)
    with pytest.raises(tts.EngineMissing, match="apt-get install flite"):
        tts.flite("Hello.", "slt", np.random.default_rng(0))


def test_vocoders_keep_length_and_level(samples_dir):
    x, rate = sf.read(samples_dir / "p225_002_mic1.flac", dtype="float32")
    assert rate == 16000
    rms = np.sqrt(np.mean(x**2))
    for name in ("world", "griffinlim", "lpc"):
        y = copysynth.VOCODERS[name](x, np.random.default_rng(0))
        assert len(y) == len(x), name
        assert np.sqrt(np.mean(y**2)) == pytest.approx(rms, rel=0.05), name
        assert not np.allclose(y, x, atol=1e-3), name


def test_every_channel_keeps_the_length_and_stays_finite(samples_dir):
    x, _ = sf.read(samples_dir / "p225_002_mic1.flac", dtype="float32")
    rng = np.random.default_rng(1)
    for name, channel in {**channels.TRAINING, **channels.TEST}.items():
        y = channel(x, rng)
        assert len(y) == len(x) and np.isfinite(y).all(), name
    y, chain = channels.random_chain(x, rng)
    assert chain and set(chain.split("+")) <= set(channels.TRAINING)
    assert len(channels.babble(x, rng, [x[::-1].copy(), x * 0.5])) == len(x)


@pytest.mark.slow
def test_specnet_trains_on_the_corpus_and_its_calibration_folds_into_the_weights(corpus, tmp_path):
    """The shipped model's recipe in miniature: train on the manifest, calibrate on dev, serve the result."""
    from voxguard.cli import main
    from voxguard.evaluation import heldout
    from voxguard.inference import Detector
    from voxguard.model.checkpoints import load_checkpoint, save_checkpoint
    from voxguard.training.calibration import fit_platt, fold_into

    out, entries = corpus
    dev = [e for e in entries if e.split == "dev" and e.family != "spliced"]
    (tmp_path / "dev.csv").write_text("path,label\n" + "".join(f"{out / e.path},{e.label}\n" for e in dev))
    code = main(
        [
            "train",
            "--model",
            "specnet",
            "--train",
            str(out / "manifest.csv"),
            "--dev",
            str(tmp_path / "dev.csv"),
            "--out",
            str(tmp_path / "run"),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--lr",
            "1e-3",
            "--class-weights",
            "0.5,0.5",
            "--no-swa",
            "--no-progress",
            "--threads",
            "2",
        ]
    )
    assert code == 0
    loaded = load_checkpoint("specnet", path=tmp_path / "run" / "best.pt")
    cuts = heldout.cut([heldout.HeldOutFile(str(out / e.path), e.label, e.family, e.channel) for e in dev])
    margins = heldout.score(cuts, Detector(loaded, engine="eager", device="cpu"))
    file_margins = heldout.file_margins(cuts, margins)
    calibration = fit_platt(file_margins, np.array([c.file.label == BONAFIDE for c in cuts]))
    fold_into(loaded.model.out_layer, calibration)
    save_checkpoint(tmp_path / "calibrated.pt", loaded.model, name="tiny", extra={"score_offset": 0.0})
    served = Detector(
        load_checkpoint("specnet", path=tmp_path / "calibrated.pt"), engine="fast", device="cpu"
    )
    calibrated = heldout.file_margins(cuts, heldout.score(cuts, served))
    np.testing.assert_allclose(calibrated, calibration.apply(file_margins), atol=1e-3)
