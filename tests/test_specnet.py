"""SpecNet (voxguard's own detector): the AASIST contract, level invariance, checkpoints, calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voxguard.inference import ENGINES, Detector, build_engine
from voxguard.model.checkpoints import load_checkpoint, save_checkpoint
from voxguard.model.config import ARCHITECTURES, SpecNetConfig, config_from_dict
from voxguard.model.factory import build_model
from voxguard.model.specnet import SpecNet
from voxguard.training.calibration import Calibration, fit_platt, fit_scale, fold_into


def _model(seed: int = 0) -> SpecNet:
    torch.manual_seed(seed)
    return build_model(ARCHITECTURES["specnet"]).eval()


def test_same_contract_as_aasist():
    hidden, logits = _model()(torch.randn(3, 64600) * 0.05)
    assert logits.shape == (3, 2) and hidden.shape == (3, 256)


def test_margin_does_not_depend_on_the_level():
    """The front end removes each band's mean log energy, so a gain is invisible (the level attack)."""
    x = torch.randn(2, 64600) * 0.05
    model = _model()
    with torch.inference_mode():
        _, quiet = model(x * 0.01)
        _, loud = model(x * 3.0)
    assert torch.allclose(quiet, loud, atol=1e-3)


def test_config_round_trips_and_old_files_read_as_aasist():
    config = SpecNetConfig(bands=64, dilations=(1, 2))
    assert config_from_dict(config.to_dict()) == config
    assert (
        config_from_dict({**ARCHITECTURES["aasist"].to_dict(), "architecture": "AASIST"})
        == ARCHITECTURES["aasist"]
    )


def test_checkpoint_round_trip_records_the_score_offset_and_scale(tmp_path):
    model = _model()
    path = tmp_path / "spec.pt"
    save_checkpoint(
        path, model, name="mine", extra={"score_offset": 0.25, "score_scale": 0.5, "local_margin": 1.5}
    )
    loaded = load_checkpoint("specnet", path=path)
    assert loaded.name == "mine" and (loaded.score_offset, loaded.score_scale) == (0.25, 0.5)
    assert loaded.local_margin == 1.5
    assert isinstance(loaded.model, SpecNet)
    x = torch.randn(2, 64600) * 0.05
    with torch.inference_mode():
        assert torch.equal(loaded.model(x)[1], model(x)[1])
    save_checkpoint(path, model, name="plain")
    plain = load_checkpoint("specnet", path=path)
    assert (plain.score_offset, plain.score_scale) == (0.0, 1.0)  # SpecNet's calibration is in its weights
    assert plain.local_margin is None  # the file rule of the best run alone


@pytest.mark.parametrize("engine", ENGINES)
def test_every_engine_name_runs_specnet_in_float32(engine):
    model = _model()
    module = build_engine(model, engine, torch.device("cpu"))
    x = torch.randn(2, 64600) * 0.05
    with torch.inference_mode():
        assert torch.allclose(module(x)[1], model(x)[1])


def test_platt_fit_recovers_a_known_logistic_and_folds_into_the_weights():
    rng = np.random.default_rng(0)
    margins = rng.normal(0.0, 3.0, 20_000)
    bonafide = rng.random(20_000) < 1 / (1 + np.exp(-(0.5 * margins - 1.0)))
    fitted = fit_platt(margins, bonafide)
    # Class balancing shifts the bias by log(n_spoof / n_bonafide); the scale is untouched.
    shift = np.log((~bonafide).sum() / bonafide.sum())
    assert fitted.scale == pytest.approx(0.5, rel=0.05)
    assert fitted.bias == pytest.approx(-1.0 + shift, abs=0.08)
    layer = torch.nn.Linear(4, 2)
    h = torch.randn(6, 4)
    before = (layer(h)[:, 1] - layer(h)[:, 0]).detach().numpy()
    fold_into(layer, Calibration(2.0, -3.0))
    after = (layer(h)[:, 1] - layer(h)[:, 0]).detach().numpy()
    np.testing.assert_allclose(after, 2.0 * before - 3.0, atol=1e-5)


def test_platt_fit_converges_where_a_full_newton_step_overshoots():
    """Wide fake margins beside narrow real ones: plain Newton from (1, 0) diverged here (scale 2e5)."""
    rng = np.random.default_rng(1)
    margins = np.concatenate([rng.normal(4.0, 3.0, 550), rng.normal(-9.0, 10.0, 600)])
    bonafide = np.arange(1150) < 550
    fitted = fit_platt(margins, bonafide)
    p = 1 / (1 + np.exp(-fitted.apply(margins)))
    w = np.where(bonafide, 0.5 / 550, 0.5 / 600) * 1150
    # At the optimum the (ridged) gradient of the weighted log loss vanishes.
    gradient = [np.dot(w * (p - bonafide), margins) + 1e-2 * fitted.scale, np.sum(w * (p - bonafide))]
    assert np.abs(gradient).max() < 1e-6
    assert 0.1 < fitted.scale < 1.0


def test_scale_fit_recovers_a_known_slope():
    rng = np.random.default_rng(2)
    margins = rng.normal(-6.0, 12.0, 20_000)
    # Equal classes around the point -6: a class-balanced fit with the offset kept is unbiased there.
    bonafide = rng.random(20_000) < 1 / (1 + np.exp(-0.08 * (margins + 6.0)))
    scale = fit_scale(margins, bonafide, offset=6.0)
    assert scale == pytest.approx(0.08, rel=0.06)


def test_scale_fit_refuses_a_model_that_ranks_the_split_backwards():
    margins = np.array([-9.0, -8.0, -7.5, -4.0, -3.0, -2.0])
    with pytest.raises(ValueError, match="ranks real speech as fake"):
        fit_scale(margins, np.array([True, True, True, False, False, False]), offset=6.0)


def test_calibration_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        fit_platt(np.zeros(4), np.ones(4))


def test_a_detector_reports_the_models_own_offset(tmp_path):
    path = tmp_path / "spec.pt"
    save_checkpoint(path, _model(), name="mine", extra={"score_offset": 0.0})
    detector = Detector(load_checkpoint("specnet", path=path), engine="fast", device="cpu")
    assert detector.info.architecture == "SpecNet" and detector.info.score_offset == 0.0
    assert detector.info.local_margin is None
    assert detector.scores(np.zeros((1, 64600), dtype=np.float32)).shape == (1,)
