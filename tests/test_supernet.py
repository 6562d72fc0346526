"""Supernet: every path equals its extracted stand-alone model; sampling; weight sharing; BN recalibration."""

import pytest
import torch

from nas.models.registry import BLOCKS, UPSAMPLERS
from nas.search.space import parse_space
from nas.search.supernet import Supernet, has_batchnorm, recalibrate_bn, sample_choice

# Every registered block family at tiny widths (options that need more context are given here).
FAMILY_OPTIONS = {
    "inverted_residual": [{"expand_ratio": 3, "norm": "none"}, {"expand_ratio": 6}],
    "residual": [{}, {"norm": "bn"}],
}
SEARCHABLE_UPSAMPLERS = ["pixelshuffle", "pixelshuffle_steps", "upa"]


def all_families_space(**overrides):
    candidates = {}
    for family in BLOCKS.names():
        for i, opts in enumerate(FAMILY_OPTIONS.get(family, [{}])):
            candidates[f"{family}{i}"] = {"type": family, **opts}
    data = {
        "name": "all",
        "widths": [8, 12],
        "depths": [1, 2],
        "candidates": candidates,
        "fusions": {"none": None, "concat": {"type": "concat"}},
        "upsamplers": {n: {"type": n} for n in SEARCHABLE_UPSAMPLERS if n in UPSAMPLERS},
        "global_skips": ["none", "bilinear", "repeat"],
        **overrides,
    }
    return parse_space(data)


@pytest.fixture(scope="module")
def space():
    return all_families_space()


@pytest.fixture(scope="module")
def supernet(space):
    torch.manual_seed(0)
    net = Supernet(space)
    # give BN layers non-trivial statistics so that eval-mode equality is a real check
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def test_every_family_in_the_space(space):
    families = {c["type"] for c in space.candidates.values()}
    assert families == set(BLOCKS.names())


def test_every_path_equals_its_extracted_model(space, supernet):
    x = torch.rand(1, 3, 24, 24)
    seen = set()
    for step in range(3 * len(space.candidates)):
        choice = sample_choice(space, seed=1, step=step, mode="fair")
        seen.update(choice["layers"])
        with torch.no_grad():
            a = supernet(x, choice)
            b = supernet.extract(choice).eval()(x)
        assert a.shape == (1, 3, 96, 96)
        assert torch.equal(a, b), choice
    assert seen == set(space.candidates)


def test_fair_sampling_visits_every_candidate_once_per_cycle(space):
    n = len(space.candidates)
    for cycle in range(2):
        firsts = [sample_choice(space, 0, cycle * n + k, "fair")["layers"][0] for k in range(n)]
        assert sorted(firsts) == sorted(space.candidates)
    assert sample_choice(space, 0, 5, "uniform") == sample_choice(space, 0, 5, "uniform")


def test_weights_are_shared_by_slicing_and_extracted_weights_are_copies(space):
    net = Supernet(space)
    choice = {
        "width": 8,
        "depth": 1,
        "layers": ["residual0"],
        "fusion": "none",
        "upsampler": "pixelshuffle",
        "global_skip": "none",
    }
    small = net.extract(choice)
    big = net.layers[0]["residual0"].conv1.weight
    assert torch.equal(small.body[0].conv1.weight, big[:8, :8])
    small.body[0].conv1.weight.data.zero_()
    assert big.abs().sum() > 0
    net.train()
    net(torch.rand(2, 3, 24, 24), choice).mean().backward()
    assert big.grad is not None and big.grad[8:].abs().sum() == 0 and big.grad[:8, :8].abs().sum() > 0
    assert net.layers[0]["rfdb0"].c5.weight.grad is None


def test_bn_recalibration(space, supernet):
    choice = {
        "width": 8,
        "depth": 1,
        "layers": ["residual1"],
        "fusion": "none",
        "upsampler": "pixelshuffle",
        "global_skip": "none",
    }
    model = supernet.extract(choice).eval()
    assert has_batchnorm(model)
    batches = [torch.rand(2, 3, 24, 24) for _ in range(3)]
    assert recalibrate_bn(model, batches) == 3
    bn = model.body[0].bn1
    with torch.no_grad():
        feats = model.body[0].conv1(torch.cat([model.head(b) for b in batches]))
    assert torch.allclose(bn.running_mean, feats.mean(dim=(0, 2, 3)), atol=1e-5)
    assert not model.training and bn.momentum == 0.1
