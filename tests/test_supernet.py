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


# ----------------------------------------------------------------------------- sandwich training


def sandwich_space(**train):
    return parse_space(
        {
            "name": "sandwich",
            "scale": 2,
            "widths": [4, 8],
            "depths": [1, 2],
            "candidates": {"res": {"type": "residual"}, "ir": {"type": "inverted_residual", "expand_ratio": 3}},
            "fusions": {"none": None, "concat": {"type": "concat"}},
            "upsamplers": {"pixelshuffle": {"type": "pixelshuffle"}},
            "global_skips": ["bilinear"],
            "train": {"steps": 4, "batch_size": 2, "patch_size": 8, "ckpt_every": 2, "progress": False, **train},
        }
    )


def _acts(space, choice):
    from nas.measure.profiler import count_complexity
    from nas.models.network import build

    return count_complexity(build(space.to_spec(choice)), (3, 16, 16)).activations


def test_sandwich_paths_are_widest_sampled_narrowest_and_pure(space):
    from nas.search.supernet_train import Sandwich, extreme_choice

    tiny = sandwich_space(sampling="sandwich", sandwich_paths=3)
    widest, narrowest = extreme_choice(tiny, True), extreme_choice(tiny, False)
    assert widest["width"] == 8 and widest["depth"] == 2 and widest["fusion"] == "concat"
    assert narrowest["width"] == 4 and narrowest["depth"] == 1 and narrowest["fusion"] == "none"
    sandwich = Sandwich(tiny, Supernet(tiny), tiny.train, seed=0)
    paths = sandwich.paths(5)
    assert len(paths) == 5 and paths[0] == widest and paths[-1] == narrowest
    assert paths == sandwich.paths(5) and paths != sandwich.paths(6)
    sizes = [_acts(tiny, c) for c in paths]
    assert sizes[0] == max(sizes) and sizes[-1] == min(sizes)
    for choice in (sample_choice(tiny, 1, s) for s in range(20)):  # no path is larger / smaller than the extremes
        assert sizes[-1] <= _acts(tiny, choice) <= sizes[0]
    # every family at once: the extremes are real choices of the space and ordered
    big, small = extreme_choice(space, True), extreme_choice(space, False)
    assert _acts(space, big) > _acts(space, small)


@pytest.mark.parametrize("distill", ["none", "inplace"])
def test_sandwich_training_resumes_bitwise(tmp_path, distill):
    from nas.data import open_pairs
    from nas.search.supernet_train import Sandwich
    from nas.train import CHECKPOINT_FILE, train

    tiny = sandwich_space(sampling="sandwich", sandwich_paths=1, distill=distill, distill_weight=0.5)
    data = open_pairs("embedded", 2, "train")
    cfg = tiny.train.loop_config("cpu")

    def run(folder, init_seed, on_step=None):
        torch.manual_seed(init_seed)
        net = Supernet(tiny)
        train(net, data, cfg, folder, step_losses=Sandwich(tiny, net, tiny.train, cfg.seed), on_step=on_step)
        return net

    ref = run(tmp_path / "ref", 0)

    def die_at_3(step, stats):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "run", 0, die_at_3)
    assert torch.load(tmp_path / "run" / CHECKPOINT_FILE, weights_only=True)["state"]["step"] == 2
    resumed = run(tmp_path / "run", 7)  # another init: the checkpoint overrides it
    a, b = ref.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "run" / "train_log.csv").read_text() == (tmp_path / "ref" / "train_log.csv").read_text()


def test_inplace_distillation_changes_the_update(tmp_path):
    """The non-widest paths learn from the widest path's output: not the same weights as plain sandwich."""
    from nas.search.supernet_train import train_supernet

    nets = {}
    for distill in ("none", "inplace"):
        tiny = sandwich_space(sampling="sandwich", sandwich_paths=0, distill=distill, steps=2)
        weights = train_supernet(tiny, tmp_path / distill, tiny.train, "cpu")
        from nas.models.checkpoint import read_state_dict

        nets[distill] = read_state_dict(weights)
    assert nets["none"].keys() == nets["inplace"].keys()
    assert any(not torch.equal(nets["none"][k], nets["inplace"][k]) for k in nets["none"])


@pytest.mark.parametrize(
    "train, match",
    [
        ({"sampling": "fair", "distill": "inplace"}, "needs sampling: sandwich"),
        ({"sampling": "sandwich", "sandwich_paths": -1}, "sandwich_paths"),
        ({"sampling": "sandwich", "distill": "teacher"}, "unknown distill"),
        ({"sampling": "sandwich", "distill": "inplace", "distill_weight": 2}, "distill_weight"),
    ],
)
def test_bad_sandwich_options(train, match):
    from nas.errors import SpecError

    with pytest.raises(SpecError, match=match):
        sandwich_space(**train)


def test_sandwich_options_in_the_fingerprint_only_when_used():
    assert "sandwich_paths" not in sandwich_space().train.to_dict()
    d = sandwich_space(sampling="sandwich", distill="inplace").train.to_dict()
    assert d["sandwich_paths"] == 2 and d["distill"] == "inplace" and d["distill_weight"] == 1.0
