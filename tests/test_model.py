"""Golden-vector tests: our AASIST against numbers computed by the official implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voxguard.model.aasist import AASIST, sinc_filter_bank
from voxguard.model.checkpoints import load_checkpoint
from voxguard.model.config import VARIANTS
from voxguard.model.fast import FastAASIST, fold_batch_norm

GOLDEN_KEY = {"aasist": "aasist", "aasist-l": "aasist_l"}


@pytest.fixture(scope="module", params=["aasist", "aasist-l"])
def variant(request, checkpoint_dir, device):
    return request.param, load_checkpoint(request.param, checkpoint_dir=checkpoint_dir).model.to(device)


@pytest.fixture(scope="module")
def inputs(golden, device):
    return torch.from_numpy(golden["inputs"]).to(device)


def test_sinc_bank_is_bit_exact(golden):
    np.testing.assert_array_equal(sinc_filter_bank(70, 128).numpy(), golden["sinc_filters"])


def test_parameter_counts(checkpoint_dir):
    counts = {
        name: sum(p.numel() for p in load_checkpoint(name, checkpoint_dir=checkpoint_dir).model.parameters())
        for name in VARIANTS
    }
    assert counts == {"aasist": 297_866, "aasist-l": 85_306}


def test_golden_logits_batched(variant, golden, inputs):
    name, model = variant
    with torch.inference_mode():
        hidden, logits = (t.cpu() for t in model(inputs))
    key = GOLDEN_KEY[name]
    np.testing.assert_allclose(logits.numpy(), golden[f"{key}_logits"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(hidden.numpy(), golden[f"{key}_hidden"], atol=1e-4, rtol=0)
    probs = torch.softmax(logits, dim=1).numpy()
    np.testing.assert_allclose(probs, golden[f"{key}_probs"], atol=1e-4, rtol=0)


def test_golden_logits_one_row_at_a_time(variant, golden, inputs):
    name, model = variant
    with torch.inference_mode():
        rows = [model(inputs[i : i + 1])[1].cpu() for i in range(len(inputs))]
    np.testing.assert_allclose(
        torch.cat(rows).numpy(), golden[f"{GOLDEN_KEY[name]}_logits"], atol=1e-4, rtol=0
    )


def test_fast_engine_matches_eager(variant, inputs):
    _, model = variant
    x = inputs
    fast = FastAASIST(model).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        want_hidden, want = model(x)
        got_hidden, got = fast(x)
    assert (got - want).abs().max().item() < 1e-3
    assert (got_hidden - want_hidden).abs().max().item() < 1e-3


def test_fast_engine_leaves_source_model_untouched(variant, golden):
    _, model = variant
    before = {k: v.clone() for k, v in model.state_dict().items()}
    FastAASIST(model, torch.bfloat16)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bf16_engine_agrees_on_golden_decisions(variant, golden, inputs):
    name, model = variant
    fast = FastAASIST(model, torch.bfloat16).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        logits = fast(inputs)[1].cpu().numpy()
    want = golden[f"{GOLDEN_KEY[name]}_logits"]
    margins, want_margins = logits[:, 1] - logits[:, 0], want[:, 1] - want[:, 0]
    assert np.abs(margins - want_margins).max() < 0.5
    decided = np.abs(want_margins) > 0.5  # AASIST-L's silence row sits on the boundary (margin 0.016)
    assert np.array_equal(np.sign(margins[decided]), np.sign(want_margins[decided]))


def test_fold_batch_norm_is_exact():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 8, (2, 3), padding=(1, 1))
    bn = torch.nn.BatchNorm2d(8)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(-2, 2)
    bn.bias.data.uniform_(-1, 1)
    bn.eval()
    x = torch.randn(2, 4, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(fold_batch_norm(conv, bn)(x), bn(conv(x)), atol=1e-5, rtol=1e-5)


def test_random_init_model_runs_on_short_batch():
    model = AASIST(VARIANTS["aasist-l"]).eval()
    with torch.inference_mode():
        hidden, logits = model(torch.randn(2, 64600) * 0.05)
    assert hidden.shape == (2, 160) and logits.shape == (2, 2)
