"""Progress reporting: a tqdm bar on a terminal, milestone lines in logs (nohup, CI, ``| tee``)."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn
from tqdm import tqdm

from nas import data as D
from nas.errors import SrnasError
from nas.measure.images import write_image
from nas.progress import PlainProgress, progress, progress_mode, track
from nas.train import TrainConfig, train


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_every_tenth_and_thirty_seconds_whichever_is_rarer():
    out, clock = io.StringIO(), _Clock()
    bar = PlainProgress(100, desc="train", unit="step", stream=out, clock=clock)
    for step in range(1, 101):
        clock.t += 1.0  # 1 s a step: 30 s (30 steps) is rarer than 10 % (10 steps)
        bar.set_postfix({"loss": f"{1 / step:.4g}"})
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [line.split()[2] for line in lines] == ["0/100", "30/100", "60/100", "90/100", "100/100"]
    assert lines[1] == "train: step 30/100 (30%) loss=0.03333 | 1 step/s, elapsed 0:00:30, ETA 0:01:10"
    assert lines[-1].startswith("train: step 100/100 (100%) loss=0.01 done | 1 step/s, elapsed 0:01:40")


def test_a_bar_closed_early_says_stopped_not_done():
    out, clock = io.StringIO(), _Clock()
    bar = PlainProgress(10, desc="eval", unit="img", stream=out, clock=clock)
    clock.t += 1.0
    bar.update(3)
    bar.close()  # e.g. an exception left the loop
    assert out.getvalue().splitlines()[-1].startswith("eval: img 3/10 (30%) stopped | ")


def test_plain_lines_fast_steps_follow_the_fraction():
    out, clock = io.StringIO(), _Clock()
    bar = PlainProgress(1000, desc="x", unit="it", initial=200, stream=out, clock=clock)
    for _ in range(800):
        clock.t += 10.0  # 10 s a step: 10 % of the total (100 steps) is rarer than 30 s
        bar.update(1)
    bar.close()
    counts = [line.split()[2] for line in out.getvalue().splitlines()]
    assert counts == ["200/1000", *(f"{n}/1000" for n in range(300, 1000, 100)), "1000/1000"]
    # speed and ETA count only the steps done in this call (a resumed run starts at 200): 700 left at 10 s a step
    assert out.getvalue().splitlines()[1].endswith("| 10 s/it, elapsed 0:16:40, ETA 1:56:40")


def test_terminal_gets_a_tqdm_bar_and_a_log_gets_lines(monkeypatch):
    monkeypatch.delenv("SRNAS_PROGRESS", raising=False)
    tty, log = _Tty(), io.StringIO()
    bar = progress(5, desc="eval", unit="img", stream=tty)
    assert isinstance(bar, tqdm)
    bar.update(5)
    bar.close()
    assert "\r" in tty.getvalue() and "5/5" in tty.getvalue()
    assert list(track(range(3), desc="eval", unit="img", stream=log)) == [0, 1, 2]
    assert log.getvalue().splitlines()[-1].startswith("eval: img 3/3 (100%) done")
    silent = io.StringIO()
    list(track(range(3), desc="eval", stream=silent, enabled=False))
    assert silent.getvalue() == ""


def test_mode_override(monkeypatch):
    monkeypatch.setenv("SRNAS_PROGRESS", "plain")
    assert progress_mode(_Tty()) == "plain"
    monkeypatch.setenv("SRNAS_PROGRESS", "bar")
    assert progress_mode(io.StringIO()) == "bar"
    monkeypatch.setenv("SRNAS_PROGRESS", "loud")
    with pytest.raises(SrnasError, match="SRNAS_PROGRESS='loud'"):
        progress_mode()


def test_training_off_a_terminal_logs_plain_lines(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SRNAS_PROGRESS", raising=False)
    monkeypatch.setenv("SRNAS_HOME", str(tmp_path / "cache"))
    for i in range(2):
        write_image(tmp_path / "hr" / f"{i}.png", torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8).numpy())
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2))
    cfg = TrainConfig(steps=4, batch_size=2, patch_size=8, ckpt_every=4, log_every=2)
    train(model, D.open_pairs(tmp_path / "hr", 2), cfg, tmp_path / "run")
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert lines[0].startswith("train: step 0/4 (0%)")
    assert lines[-1].startswith("train: step 4/4 (100%) loss=") and " done | " in lines[-1]
