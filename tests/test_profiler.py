"""Challenge counters on hand-counted tiny models, runtime, the CLI, and parity with the official numbers."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from nas.cli import main as cli
from nas.cli.commands import profile as profile_cmd
from nas.errors import SrnasError
from nas.measure import profiler
from nas.measure.profiler import count_complexity, einsum_flops, measure_runtime, profile_model


class ConvActTwice(nn.Module):
    """One conv + LeakyReLU pair called twice, then a functional relu (not counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.LeakyReLU(0.1)

    def forward(self, x):
        x = self.act(self.conv(x))
        return F.relu(self.act(self.conv(x)))


def test_module_called_twice_counts_twice_and_functional_relu_is_free():
    c = count_complexity(ConvActTwice(), (4, 5, 6))  # 30 positions
    conv = 9 * 4 * 4 * 30
    assert c.params == 4 * 4 * 9 + 4
    assert c.flops == 2 * conv + 2 * 4 * 30
    assert c.flops_by_op == {"conv": 2 * conv, "activation": 2 * 120}
    assert c.flops_fvcore == 2 * conv
    assert (c.activations, c.num_conv) == (2 * 120, 2)


@pytest.mark.parametrize(
    ("act", "counted"),
    [
        (nn.ReLU(), True),
        (nn.ReLU6(), True),
        (nn.PReLU(2), True),
        (nn.ELU(), True),
        (nn.LeakyReLU(), True),
        (nn.SiLU(), False),
        (nn.GELU(), False),
        (nn.Sigmoid(), False),
        (nn.Hardswish(), False),
    ],
)
def test_which_activation_modules_model_summary_counts(act, counted):
    model = nn.Sequential(nn.Conv2d(3, 2, 1, bias=False), act, nn.Conv2d(2, 12, 1, bias=False), nn.PixelShuffle(2))
    c = count_complexity(model, (3, 4, 4))
    conv = 3 * 2 * 16 + 2 * 12 * 16
    assert c.flops == conv + (2 * 16 if counted else 0)
    assert c.flops_fvcore == conv
    assert (c.activations, c.num_conv) == (2 * 16 + 12 * 16, 2)


@pytest.mark.parametrize(("affine", "per_element"), [(True, 2), (False, 1)])
def test_batchnorm_in_eval_and_training_flags_restored(affine, per_element):
    model = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4, affine=affine)).train()
    model[1].eval()  # a submodule with its own flag must keep it
    c = count_complexity(model, (3, 5, 6))
    conv, bn = 3 * 4 * 30, per_element * 4 * 30
    assert c.flops_by_op == {"conv": conv, "batch_norm": bn}
    assert c.flops_fvcore_by_op == {"conv": conv, "batch_norm": bn}  # counted in eval, not training (5/elem)
    assert model.training and not model[1].training
    assert all(not m._forward_hooks for m in model.modules())


class Tokens(nn.Module):
    """nn.Linear on a 3-D token tensor (model_summary quirk) and on a 2-D tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Linear(3, 7)
        self.vec = nn.Linear(3, 7, bias=False)

    def forward(self, x):
        t = self.tok(x.flatten(2).transpose(1, 2))  # [1, HW, 3] -> [1, HW, 7]
        return t.sum() + self.vec(x.mean((2, 3))).sum()


def test_linear_model_summary_quirk_and_fvcore_macs():
    c = count_complexity(Tokens(), (3, 4, 5))  # 20 tokens
    assert c.flops_by_op == {"linear": 1 * 20 * 20 + 1 * 3 * 7}  # batch * in.shape[1] * out.shape[1]
    assert c.flops_fvcore_by_op == {"linear": 20 * 3 * 7 + 3 * 7}
    assert (c.activations, c.num_conv) == (0, 0)


class Resample(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x):
        y = self.conv(x)  # [1, 2, 4, 4]
        outs = [
            F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False),  # 4 x 128
            F.interpolate(y, size=(8, 8), mode="nearest"),  # 128
            self.up(y),  # 128
            F.interpolate(y, scale_factor=2, mode="bicubic", align_corners=False),  # no fvcore rule: 0
            F.interpolate(y, size=(2, 2), mode="area"),  # adaptive_avg_pool2d: 32 input elements
            F.adaptive_avg_pool2d(y, 1),  # 32
            self.pool(y),  # 32
            F.avg_pool2d(y, 2),  # not counted
        ]
        return sum(o.sum() for o in outs)


def test_fvcore_resampling_rules():
    c = count_complexity(Resample(), (3, 4, 4))
    assert c.flops == 3 * 2 * 16  # model_summary: only the conv
    assert c.flops_fvcore_by_op == {
        "conv": 96,
        "upsample_bilinear2d": 4 * 128,
        "upsample_nearest2d": 2 * 128,
        "adaptive_avg_pool2d": 3 * 32,
    }


def test_grouped_depthwise_strided_and_transposed_convs():
    model = nn.Sequential(
        nn.Conv2d(6, 6, 3, padding=1, groups=6),  # depthwise: 9*6*1 per position, 20 positions
        nn.Conv2d(6, 4, 3, padding=1, groups=2),  # 9*6*2 per position
        nn.Conv2d(4, 4, 3, stride=2, padding=1),  # 4x5 -> 2x3
        nn.ConvTranspose2d(4, 2, 2, stride=2),  # 2x3 -> 4x6
    )
    c = count_complexity(model, (6, 4, 5))
    dw, grouped, strided = 9 * 6 * 20, 9 * 6 * 2 * 20, 9 * 4 * 4 * 6
    # model_summary counts a transposed conv per *output* position, fvcore per *input* position
    assert c.flops == dw + grouped + strided + 4 * 4 * 2 * 24
    assert c.flops_fvcore == dw + grouped + strided + (4 * 2 * 2 * 2) * 6
    assert c.activations == 6 * 20 + 4 * 20 + 4 * 6 + 2 * 24
    assert c.num_conv == 4


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1, bias=False)
        self.norm = nn.LayerNorm(8)

    def forward(self, x):
        t = self.norm(self.conv(x).flatten(2).transpose(1, 2))  # [1, 16, 8]
        a = (t @ t.transpose(1, 2)).softmax(-1)  # 16*8*16
        b = torch.einsum("bid,bjd->bij", t, t)  # numpy path: 2*16*16*8 printed, halved
        return torch.bmm(a + b, t) + F.conv2d(x, self.conv.weight).flatten(2).transpose(1, 2)


def test_fvcore_matmul_einsum_layernorm_and_functional_conv():
    c = count_complexity(Attention(), (3, 4, 4))
    assert c.flops_fvcore_by_op == {"conv": 2 * 24 * 16, "norm": 5 * 128, "matmul": 2 * 2048, "einsum": 2048}
    assert c.flops == 24 * 16 and c.num_conv == 1  # the functional conv is not a module call


def test_einsum_follows_fvcore_rounding():
    assert einsum_flops("abc,abd->acd", [(2, 3, 4), (2, 3, 5)]) == 2 * 3 * 4 * 5
    assert einsum_flops("ntg,ncg->nct", [(2, 3, 4), (2, 5, 4)]) == 2 * 3 * 4 * 5
    # MobileSR window attention: exact MACs 167,772,160; fvcore parses numpy's '3.355e+08'
    assert einsum_flops("b h i d, b h j d -> b h i j", [(1024, 8, 64, 5)] * 2) == 167_750_000


class NeedsRealTensors(nn.Module):
    """Builds a CPU tensor and branches on a value: cannot run on meta, so counting falls back."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x):
        x = x + torch.arange(3, dtype=x.dtype).view(1, 3, 1, 1)
        if x.mean() > -1e9:
            x = self.act(self.conv(x))
        return x


def test_counting_falls_back_to_a_real_forward():
    c = count_complexity(NeedsRealTensors(), (3, 4, 4))
    assert c.flops == 9 * 3 * 3 * 16 + 48 and c.num_conv == 1


@pytest.mark.parametrize("model", [Resample(), Attention(), Tokens(), ConvActTwice()], ids=lambda m: type(m).__name__)
def test_meta_and_real_forward_count_the_same(model, monkeypatch):
    size = (4, 5, 6) if isinstance(model, ConvActTwice) else (3, 4, 4)
    on_meta = count_complexity(model, size)

    def no_meta(*args):
        raise RuntimeError("meta disabled")

    monkeypatch.setattr(profiler, "_count_on_meta", no_meta)
    assert count_complexity(model, size) == on_meta


def test_bad_input_size_is_an_error():
    with pytest.raises(SrnasError, match="input_size"):
        count_complexity(ConvActTwice(), (4, 5))


def test_runtime_is_measured_and_model_untouched():
    model = ConvActTwice().train()
    prof = profile_model(model, (4, 8, 8), runtime=True, repeats=3, warmup=1)
    assert prof.runtime_ms > 0 and prof.runtime_min_ms <= prof.runtime_ms
    assert prof.runtime_min_ms <= prof.runtime_mean_ms and prof.repeats == 3
    assert prof.memory_mb is None and prof.device == "cpu" and prof.torch_version == torch.__version__
    assert model.training
    d = json.loads(json.dumps(prof.to_dict()))
    assert d["input_size"] == [4, 8, 8] and d["flops"] == prof.flops
    timing = measure_runtime(model, (4, 8, 8), repeats=2, warmup=0)
    assert len(timing.times_ms) == 2 and all(t > 0 for t in timing.times_ms)


def test_device_names_as_users_type_them():
    """``auto`` is what the search and pipeline pass by default (it once failed here after a whole search)."""
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert profile_model(ConvActTwice(), (4, 8, 8), device="auto", runtime=True, repeats=1).device.startswith(expected)
    assert measure_runtime(ConvActTwice(), (4, 8, 8), device="auto", repeats=1, warmup=0).times_ms
    for bad in ("gpu0", None):
        with pytest.raises(SrnasError, match="unknown device"):
            profile_model(ConvActTwice(), (4, 8, 8), device=bad, runtime=True)


def test_cuda_without_cuda_is_a_clear_error(monkeypatch):
    """Runs everywhere: on a CUDA machine the machine is made to look CUDA-less."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:0"):
        with pytest.raises(SrnasError, match="CUDA is not available"):
            profile_model(ConvActTwice(), (4, 8, 8), device=device, runtime=True)
    assert profile_model(ConvActTwice(), (4, 8, 8), device="auto", runtime=True, repeats=1).device == "cpu"


# ---------------------------------------------------------------- CLI


@pytest.fixture
def tiny_resolver(monkeypatch):
    monkeypatch.setattr(profile_cmd, "_load_model", lambda ref: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()))


def test_cli_json_and_table(tiny_resolver, capsys):
    assert cli.main(["profile", "tiny", "--size", "8", "--json", "--runtime", "--repeats", "2", "--warmup", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "tiny" and out["input_size"] == [3, 8, 8]
    assert (out["flops"], out["flops_fvcore"], out["activations"], out["num_conv"]) == (
        9 * 12 * 64 + 256,
        9 * 12 * 64,
        256,
        1,
    )
    assert out["runtime_ms"] > 0 and out["memory_mb"] is None
    assert cli.main(["profile", "tiny", "--size", "8x6"]) == 0
    text = capsys.readouterr().out
    assert "1x3x8x6" in text and "FLOPs fvcore" in text and "runtime" not in text


def test_cli_errors(tiny_resolver, capsys):
    assert cli.main(["profile"]) == 2  # usage errors exit 2, bad data 1
    assert "give either a MODEL or --zoo" in capsys.readouterr().err
    assert cli.main(["profile", "tiny", "--zoo"]) == 2
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:  # every machine checks the CUDA-less message
        mp.setattr(torch.cuda, "is_available", lambda: False)
        assert cli.main(["profile", "tiny", "--device", "cuda", "--runtime"]) == 1
    assert "CUDA is not available" in capsys.readouterr().err
    assert cli.main(["profile", "tiny", "--size", "0"]) == 2
    assert "--size" in capsys.readouterr().err


def test_cli_zoo_table_flags_reference_mismatch(monkeypatch, capsys):
    import nas.zoo as zoo

    def build(name, weights=None, official=False):
        return nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.LeakyReLU())

    exact = {
        "params": 12,
        "flops": 12 * 65536 + 4 * 65536,
        "flops_fvcore": 12 * 65536,
        "activations": 4 * 65536,
        "num_conv": 1,
    }
    refs = {"good": exact, "bad": {**exact, "num_conv": 2}}
    monkeypatch.setattr(zoo, "list_zoo", lambda: ["bad", "good"])
    monkeypatch.setattr(zoo, "build_zoo_model", build)
    monkeypatch.setattr(zoo, "reference_profile", lambda name: dict(refs[name]))
    assert cli.main(["profile", "--zoo", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["model"]: r["matches_reference"] for r in rows} == {"bad": False, "good": True}
    assert cli.main(["profile", "--zoo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("bad") and lines[1].endswith("DIFF") and lines[2].endswith("ok")


# parity of every zoo model with the official numbers (and the kit's FLOP split): tests/test_zoo.py


def test_best_of_three_consecutive_trials_mean():
    from nas.measure.profiler import Timing

    t = Timing([5.0, 7.0, 1.0, 3.0, 9.0, 9.0])
    assert t.best3_mean_ms == 2.0  # trials (5,7), (1,3), (9,9)
    assert Timing([4.0, 2.0]).best3_mean_ms == 3.0
