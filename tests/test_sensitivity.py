"""``sensitivity_scores``: squared gate gradients of a random output projection, checked against finite
differences of the gated model's output, and ranking what actually changes the output when removed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.data import PatchBatches
from nas.models.network import build
from pruning import GatedModel
from pruning.config import PruneConfig
from pruning.importance import sensitivity_scores

TINY = {"name": "tiny-rfdn", "scale": 2, "width": 8, "blocks": [{"type": "rfdb"}], "fusion": {"type": "concat"}}


def _gated(mode: str = "coupled") -> GatedModel:
    torch.manual_seed(0)
    model = build(TINY)
    for p in model.parameters():  # away from the near-identity init, so every unit matters differently
        p.data.add_(0.1 * torch.randn_like(p))
    return GatedModel(model, mode).double()


def _batch(data, seed: int) -> torch.Tensor:
    (_, lr, _), *_ = PatchBatches(data, 2, 16, seed).iterate(0, 1)
    return lr.double()


@pytest.mark.parametrize("mode", ["coupled", "fine"])
def test_one_batch_equals_the_squared_finite_difference(smooth_pairs, mode):
    gated = _gated(mode)
    scores = sensitivity_scores(gated, smooth_pairs, 1, 2, 16, seed=3)
    lr = _batch(smooth_pairs, 3)
    with torch.no_grad():
        base = gated(lr)
        v = torch.randn(base.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        eps = 1e-6
        expected = np.zeros(gated.num_entries)
        for i in range(gated.num_entries):
            gated.gate_values[i] += eps
            plus = gated(lr)
            gated.gate_values[i] -= 2 * eps
            expected[i] = (((plus - gated(lr)) * v).sum().item() / (2 * eps)) ** 2
            gated.gate_values[i] += eps
    assert gated.gate_values.grad is None and not gated.gate_values.requires_grad
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-12 * expected.max())
    assert expected.max() > 0 and np.count_nonzero(scores) > gated.num_entries // 2


def test_pruned_entries_score_zero_and_ranking_predicts_the_output_change(smooth_pairs):
    gated = _gated()
    with torch.no_grad():
        gated.gate_mask[0] = False
    scores = sensitivity_scores(gated, smooth_pairs, 8, 2, 16, seed=0)
    assert scores[0] == 0
    lr = _batch(smooth_pairs, 99).float()
    gated.float()
    live = np.flatnonzero(scores > 0)
    low, high = live[np.argmin(scores[live])], live[np.argmax(scores[live])]
    with torch.no_grad():
        base = gated(lr)
        change = {}
        for i in (low, high):
            gated.gate_mask[i] = False
            change[i] = (gated(lr) - base).pow(2).sum().item()
            gated.gate_mask[i] = True
    assert change[low] < change[high]


def test_the_option_is_accepted_by_the_config():
    assert PruneConfig(target=0.5, importance="sensitivity").importance == "sensitivity"
