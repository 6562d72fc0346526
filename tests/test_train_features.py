"""Feature distillation in the training loop (nas/train/features.py): the loss, its hooks and resuming."""

from __future__ import annotations

import copy
import csv

import numpy as np
import pytest
import torch
from torch import nn

from nas import data as D
from nas.errors import CheckpointError, SrnasError
from nas.measure.images import write_image
from nas.train import LOG_FILE, FeatureDistillation, FeatureLayer, TrainConfig, train
from nas.train.features import FeatureHooks

SCALE = 2


class TwoConvSR(nn.Module):
    """conv -> ReLU -> conv -> PixelShuffle: ``body`` is the intermediate feature the tests match."""

    def __init__(self, width: int = 6) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU())
        self.tail = nn.Conv2d(width, 3 * SCALE * SCALE, 3, padding=1)
        self.shuffle = nn.PixelShuffle(SCALE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.tail(self.body(x))) + nn.functional.interpolate(x, scale_factor=SCALE)


class Wrapper(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> D.PairedImages:
    folder = tmp_path_factory.mktemp("hr")
    yy, xx = np.mgrid[0:32, 0:32] / 32.0
    for i in range(2):
        img = np.stack([np.sin(2 * np.pi * (xx * (i + 1) + c / 3 + yy)) for c in range(3)], axis=2)
        write_image(folder / f"{i}.png", np.round((img + 1) * 127.5).astype(np.uint8))
    return D.open_pairs(folder, SCALE)


def _model(seed: int = 0, width: int = 6) -> nn.Module:
    torch.manual_seed(seed)
    return TwoConvSR(width)


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=2, batch_size=2, patch_size=8, lr=2e-3, ckpt_every=2, log_every=1, progress=False)
    return TrainConfig(**{**base, **kw})


def _hooks(*models: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for model in models for m in model.modules())


def _log_losses(folder) -> list[float]:
    with open(folder / LOG_FILE, newline="") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def test_feature_loss_is_zero_for_the_teacher_itself_and_hooks_go():
    student = _model()
    teacher = copy.deepcopy(student)
    hooks = FeatureHooks(student, teacher, FeatureDistillation(("body", "body.0"), 1.0))
    x = torch.rand(2, 3, 8, 8)
    with hooks.capturing():
        teacher(x)
        student(x)
        assert hooks.loss().item() == 0.0
    hooks.remove()
    assert _hooks(student, teacher) == 0
    other = _model(seed=1)
    hooks = FeatureHooks(other, teacher, FeatureDistillation(("body",), 1.0, "l2"))
    with hooks.capturing():
        want = (other.body(x) - teacher.body(x)).pow(2).mean()  # outputs of the matched modules themselves
        assert hooks.loss().item() == pytest.approx(want.item())
    with hooks.capturing(), pytest.raises(SrnasError, match="not every matched module ran"):
        hooks.loss()  # nothing captured outside the passes of one step
    hooks.remove()
    assert _hooks(other, teacher) == 0


def test_feature_weight_changes_the_training_and_leaves_no_hooks(dataset, tmp_path):
    teacher = _model(seed=1)
    plain, feat = _model(), _model()
    train(plain, dataset, _cfg(), tmp_path / "a", teacher=teacher, teacher_weight=1.0)
    fd = FeatureDistillation(("body",), 1.0)
    train(feat, dataset, _cfg(), tmp_path / "b", teacher=teacher, teacher_weight=1.0, features=fd)
    a, b = _log_losses(tmp_path / "a"), _log_losses(tmp_path / "b")
    assert b[0] > a[0]  # the first step's loss (same weights, same batch) gains the feature term
    assert not torch.equal(plain.tail.weight, feat.tail.weight)
    assert _hooks(feat, teacher) == 0
    # weight 0 is the plain run, bit for bit
    zero = _model()
    train(
        zero,
        dataset,
        _cfg(),
        tmp_path / "c",
        teacher=teacher,
        teacher_weight=1.0,
        features=FeatureDistillation(("body",), 0),
    )
    assert all(torch.equal(p, q) for p, q in zip(zero.parameters(), plain.parameters(), strict=True))
    # the teacher runs for the features alone (teacher_weight 0: the image target is the ground truth)
    gt_only = _model()
    train(gt_only, dataset, _cfg(), tmp_path / "d", teacher=teacher, features=fd)
    assert _hooks(gt_only, teacher) == 0


def test_hooks_are_removed_when_training_fails(dataset, tmp_path):
    teacher, student = _model(seed=1), _model()

    def boom(step, stats):
        raise RuntimeError("stop")

    fd = FeatureDistillation(("body",), 1.0)
    with pytest.raises(RuntimeError, match="stop"):
        train(student, dataset, _cfg(), tmp_path, teacher=teacher, features=fd, on_step=boom)
    assert _hooks(student, teacher) == 0


def test_layer_names_channels_and_shapes(dataset, tmp_path):
    teacher = _model(seed=1)
    with pytest.raises(SrnasError, match=r"model has no module named 'trunk'"):
        train(_model(), dataset, _cfg(), tmp_path / "a", teacher=teacher, features=FeatureDistillation(("trunk",), 1))
    wrapped = FeatureLayer("net.body", "body")
    with pytest.raises(SrnasError, match=r"teacher has no module named 'net.body'"):
        train(
            Wrapper(_model()),
            dataset,
            _cfg(),
            tmp_path / "b",
            teacher=teacher,
            features=FeatureDistillation(("net.body",), 1),
        )
    student = Wrapper(_model())
    train(student, dataset, _cfg(), tmp_path / "c", teacher=teacher, features=FeatureDistillation((wrapped,), 1))
    assert _hooks(student, teacher) == 0
    # a narrower model: no layer of the teacher's shape is an error, unless the teacher's channels are chosen
    narrow = _model(width=4)
    with pytest.raises(SrnasError, match="no matched layer has the teacher's output shape"):
        train(narrow, dataset, _cfg(), tmp_path / "d", teacher=teacher, features=FeatureDistillation(("body",), 1))
    kept = FeatureLayer("body", "body", None, (0, 2, 3, 5))
    train(narrow, dataset, _cfg(), tmp_path / "e", teacher=teacher, features=FeatureDistillation((kept,), 1))
    with pytest.raises(SrnasError, match="needs a teacher"):
        train(_model(), dataset, _cfg(), tmp_path / "f", features=FeatureDistillation(("body",), 1))
    with pytest.raises(SrnasError, match="feature weight must be"):
        FeatureDistillation(("body",), -1.0)
    with pytest.raises(SrnasError, match="at least one layer"):
        FeatureDistillation((), 1.0)


def test_a_changed_feature_weight_is_another_run(dataset, tmp_path):
    teacher = _model(seed=1)
    fd = FeatureDistillation(("body",), 1.0)
    train(_model(), dataset, _cfg(steps=4), tmp_path, teacher=teacher, features=fd, on_step=lambda s, _: s == 2)
    with pytest.raises(CheckpointError, match="features"):
        train(_model(), dataset, _cfg(steps=4), tmp_path, teacher=teacher, features=FeatureDistillation(("body",), 2))
    with pytest.raises(CheckpointError, match="features"):
        train(_model(), dataset, _cfg(steps=4), tmp_path, teacher=teacher)
    resumed = _model()
    train(resumed, dataset, _cfg(steps=4), tmp_path, teacher=teacher, features=fd)
    ref = _model()
    train(ref, dataset, _cfg(steps=4), tmp_path / "ref", teacher=teacher, features=fd)
    assert all(torch.equal(p, q) for p, q in zip(resumed.parameters(), ref.parameters(), strict=True))
