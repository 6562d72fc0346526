"""Bad input on every command: exit 2 for a usage error, 1 for bad data; one line on stderr naming the problem,
no traceback, nothing created or overwritten. ``--debug`` / ``SRNAS_DEBUG=1`` show the traceback."""

from __future__ import annotations

import hashlib
import pickle
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nas.cli.main import main
from nas.measure.images import read_image, write_image
from nas.models.checkpoint import save_weights
from nas.models.network import build
from nas.paths import RESULTS_ENV
from nas.zoo.resolve import save_model

SPEC = {"width": 8, "blocks": [{"type": "residual"}], "scale": 2, "global_skip": "bilinear"}
USAGE, DATA = 2, 1


# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _no_progress_lines(monkeypatch):
    """Progress milestones also go to stderr (plain lines off a terminal): off, so stderr is the error alone."""
    monkeypatch.setenv("SRNAS_PROGRESS", "off")


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of ``srnas ARGV`` run in-process."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with a hash of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


def check_fails(argv, capsys, root: Path, code: int, *needles: str) -> str:
    """``srnas ARGV`` exits ``code`` with one stderr line containing ``needles``, leaving ``root`` untouched."""
    before = snapshot(root)
    got, _, err = cli(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert got == code, err
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]
    assert snapshot(root) == before, "the failed command created or changed files"
    return lines[0]


def png_with_declared_size(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims ``width`` x ``height`` (a decompression bomb as Pillow sees it)."""
    write_image(path, np.zeros((2, 2, 3), np.uint8))
    data = bytearray(path.read_bytes())
    ihdr = 8 + 8  # signature, chunk length + type
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))


class Payload:
    """Unpickling this would create ``marker``: a checkpoint that runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture()
def kit(tmp_path, monkeypatch):
    """A tiny model folder, HR/LR/input folders, a results folder; the cache and results stay in tmp_path."""
    monkeypatch.setenv("SRNAS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(RESULTS_ENV, str(tmp_path / "results"))
    monkeypatch.delenv("SRNAS_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = build(SPEC)
    save_model(tmp_path / "model", model, model.spec)
    rng = np.random.default_rng(0)
    for name, (h, w) in (("a", (20, 18)), ("b", (16, 22))):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        write_image(tmp_path / "hr" / f"{name}.png", img)
        write_image(tmp_path / "lr" / f"{name}x2.png", img[::2, ::2])
        write_image(tmp_path / "in" / f"{name}.png", img[::2, ::2])
    (tmp_path / "afile.txt").write_text("not a folder\n")
    (tmp_path / "results").mkdir()
    return tmp_path


def model_args(kit: Path) -> list[str]:
    return [str(kit / "model")]


# --------------------------------------------------------------------------- usage errors (exit 2)

USAGE_CASES = {
    "no-command-known": (["bogus"], "bogus"),
    "sr-missing-input": (["sr", "{model}", "--output", "{out}"], "--input"),
    "sr-device-tpu": (["sr", "{model}", "--input", "{in}", "--output", "{out}", "--device", "tpu"], "tpu"),
    "eval-device-tpu": (["eval", "{model}", "--hr", "{hr}", "--device", "tpu"], "tpu"),
    "eval-device-garbage": (["eval", "{model}", "--hr", "{hr}", "--device", "cuda:x"], "cuda:x"),
    "downscale-scale-5": (["downscale", "--input", "{hr}", "--output", "{out}", "--scale", "5"], "--scale"),
    "profile-size-0": (["profile", "{model}", "--size", "0"], "--size"),
    "profile-size-nan": (["profile", "{model}", "--size", "nan"], "--size"),
    "profile-repeats-0": (["profile", "{model}", "--runtime", "--repeats", "0"], "--repeats"),
    "profile-warmup-neg": (["profile", "{model}", "--warmup", "-1"], "--warmup"),
    "profile-no-model": (["profile"], "--zoo"),
    "profile-device-tpu": (["profile", "{model}", "--device", "tpu"], "tpu"),
    "train-steps-0": (["train", "{model}", "--steps", "0", "--output", "{out}"], "--steps"),
    "train-steps-neg": (["train", "{model}", "--steps", "-5", "--output", "{out}"], "--steps"),
    "train-steps-nan": (["train", "{model}", "--steps", "nan", "--output", "{out}"], "--steps"),
    "train-lr-nan": (["train", "{model}", "--lr", "nan", "--output", "{out}"], "--lr"),
    "train-lr-neg": (["train", "{model}", "--lr", "-1e-3", "--output", "{out}"], "--lr"),
    "train-lr-inf": (["train", "{model}", "--lr", "inf", "--output", "{out}"], "--lr"),
    "train-batch-0": (["train", "{model}", "--batch-size", "0", "--output", "{out}"], "--batch-size"),
    "train-patch-0": (["train", "{model}", "--patch-size", "0", "--output", "{out}"], "--patch-size"),
    "train-workers-neg": (["train", "{model}", "--workers", "-1", "--output", "{out}"], "--workers"),
    "train-gt-weight-nan": (["train", "{model}", "--gt-weight", "nan", "--output", "{out}"], "--gt-weight"),
    "train-scale-5": (["train", "{model}", "--scale", "5", "--output", "{out}"], "--scale"),
    "train-device-tpu": (["train", "{model}", "--steps", "1", "--device", "tpu", "--output", "{out}"], "tpu"),
    "prune-no-target": (["prune", "{model}", "--output", "{out}"], "target"),
    "prune-target-1.5": (["prune", "{model}", "--target-params", "1.5", "--output", "{out}"], "--target-params"),
    "prune-target-nan": (["prune", "{model}", "--target-flops", "nan", "--output", "{out}"], "--target-flops"),
    "prune-rounds-0": (
        ["prune", "{model}", "--target-params", "0.5", "--rounds", "0", "--output", "{out}"],
        "--rounds",
    ),
    "prune-steps-neg": (
        ["prune", "{model}", "--target-params", "0.5", "--steps", "-1", "--output", "{out}"],
        "--steps",
    ),
    "prune-lr-nan": (["prune", "{model}", "--target-params", "0.5", "--lr", "nan", "--output", "{out}"], "--lr"),
    "search-trials-0": (["search", "--trials", "0"], "trials"),
    "search-trials-neg": (["search", "--trials", "-3"], "trials"),
    "search-min-psnr-nan": (["search", "--min-psnr", "nan"], "min-psnr"),
    "search-workers-0": (["search", "--workers", "0"], "workers"),
    "search-steps-0": (["search", "--steps", "0"], "steps"),
    "search-sampler": (["search", "--sampler", "bogus"], "bogus"),
    "search-objective": (["search", "--objectives", "psnr,bogus"], "bogus"),
    "search-storage-bogus": (["search", "--storage", "bogus://x"], "bogus://x"),
    "search-device-tpu": (["search", "--device", "tpu"], "tpu"),
    "pipeline-trials-0": (["pipeline", "--trials", "0"], "trials"),
    "pipeline-storage-bogus": (["pipeline", "--storage", "bogus://x"], "bogus://x"),
    "front-x-bogus": (["front", "--x", "bogus"], "--x"),
    "zoo-action-bogus": (["zoo", "bogus"], "bogus"),
    "zoo-names-without-download": (["zoo", "rfdn"], "download"),
    "zoo-download-nothing": (["zoo", "download"], "name"),
    "zoo-download-names-and-all": (["zoo", "download", "rfdn", "--all"], "--all"),
}


@pytest.mark.parametrize("case", list(USAGE_CASES))
def test_usage_errors_exit_2(case, kit, capsys):
    argv, needle = USAGE_CASES[case]
    paths = {"model": kit / "model", "out": kit / "out", "in": kit / "in", "hr": kit / "hr"}
    argv = [a.format(**paths) for a in argv]
    check_fails(argv, capsys, kit, USAGE, needle)


# --------------------------------------------------------------------------- bad data (exit 1)


def test_unknown_model_every_model_command(kit, capsys):
    for argv in (
        ["sr", "no_such_model", "--input", kit / "in", "--output", kit / "out"],
        ["eval", "no_such_model", "--hr", kit / "hr"],
        ["profile", "no_such_model"],
        ["train", "no_such_model", "--steps", "1", "--output", kit / "out"],
        ["prune", "no_such_model", "--target-params", "0.5", "--output", kit / "out"],
    ):
        check_fails(argv, capsys, kit, DATA, "no_such_model")


def test_unknown_device_index(kit, capsys):
    ordinal = f"cuda:{max(torch.cuda.device_count(), 7)}"
    check_fails(["eval", kit / "model", "--hr", kit / "hr", "--device", ordinal], capsys, kit, DATA, ordinal)
    argv = ["train", kit / "model", "--steps", "1", "--device", ordinal, "--output", kit / "out"]
    check_fails(argv, capsys, kit, DATA, ordinal)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("width: [8\nblocks: {", "cannot parse"),
        ("width: 1000000\nblocks: [{type: residual}]\nscale: 2\n", "too large"),
        ("width: 8\nblocks: " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
        ("width: !!python/object/apply:os.system ['touch pwned']\nblocks: [{type: residual}]\n", "python"),
        ("width: 8\nblocks: [{type: no_such_block}]\n", "no_such_block"),
        ("width: 8\nblocks: [{type: residual}]\nscale: 1000\n", "scale"),
        ("- just\n- a list\n", "mapping"),
        ("width: 8\nblocks: [" + ", ".join(["{type: residual}"] * 300) + "]\n", "too large"),
        ("width: 512\nblocks: [" + ", ".join(["{type: residual}"] * 200) + "]\n", "too large"),
        ("width: 8\nblocks: [{type: inverted_residual, expand_ratio: 100000}]\n", "expand_ratio"),
    ],
    ids=[
        "malformed",
        "huge-width",
        "deeply-nested",
        "python-tag",
        "unknown-block",
        "huge-scale",
        "not-a-mapping",
        "too-many-blocks",
        "too-many-weights",
        "huge-block-option",
    ],
)
def test_bad_spec_files(text, needle, kit, capsys):
    spec = kit / "spec.yaml"
    spec.write_text(text)
    check_fails(["profile", spec], capsys, kit, DATA, "spec.yaml", needle)
    assert not (kit / "pwned").exists()


def test_huge_and_deep_json_spec(kit, capsys):
    deep = kit / "deep.json"
    deep.write_text('{"width": 8, "blocks": ' + "[" * 100000 + "]" * 100000 + "}")
    check_fails(["profile", deep], capsys, kit, DATA, "deep.json")
    big = kit / "big.yaml"
    big.write_text("width: 8\nblocks: [{type: residual}]\ndescription: '" + "x" * (2 << 20) + "'\n")
    check_fails(["profile", big], capsys, kit, DATA, "big.yaml", "too large")


def _state(kit: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(kit / "model" / "weights.safetensors"))


def _bad_checkpoint(kind: str, kit: Path) -> Path:
    state = _state(kit)
    if kind == "nan":
        path = kit / "nan.safetensors"
        from safetensors.torch import save_file

        save_file({k: torch.full_like(v, float("nan")) for k, v in state.items()}, str(path))
    elif kind == "truncated":
        path = kit / "trunc.pth"
        torch.save(state, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "truncated-safetensors":
        path = kit / "trunc.safetensors"
        data = (kit / "model" / "weights.safetensors").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random":
        path = kit / "random.pth"
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "wrong-model":
        path = kit / "other.safetensors"
        save_weights(build({**SPEC, "width": 16, "blocks": [{"type": "residual"}] * 2}), path)
    elif kind == "wrong-shape":
        path = kit / "shape.pth"
        key = next(iter(state))
        torch.save({**state, key: torch.zeros(3, 3)}, path)
    elif kind == "pickle":
        path = kit / "payload.pth"
        torch.save({"net": state, "extra": Payload(kit / "pwned")}, path)
    else:
        raise AssertionError(kind)
    return path


@pytest.mark.parametrize(
    "kind", ["nan", "truncated", "truncated-safetensors", "random", "wrong-model", "wrong-shape", "pickle"]
)
def test_bad_checkpoints_on_eval(kind, kit, capsys):
    path = _bad_checkpoint(kind, kit)
    line = check_fails(["eval", kit / "model", "--weights", path, "--hr", kit / "hr"], capsys, kit, DATA, path.name)
    assert "weights_only" not in line
    assert not (kit / "pwned").exists()


def test_overflowing_weights_give_no_meaningless_psnr(kit, capsys):
    path = kit / "huge.safetensors"
    from safetensors.torch import save_file

    save_file({k: torch.full_like(v, 1e30) for k, v in _state(kit).items()}, str(path))  # finite, output inf
    check_fails(["eval", kit / "model", "--weights", path, "--hr", kit / "hr"], capsys, kit, DATA, "not finite")


def test_bad_checkpoint_on_sr_writes_nothing(kit, capsys):
    path = _bad_checkpoint("nan", kit)
    argv = ["sr", kit / "model", "--weights", path, "--input", kit / "in", "--output", kit / "out"]
    check_fails(argv, capsys, kit, DATA, path.name)


def _bad_image(kind: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bad.png"
    if kind == "not-an-image":
        path.write_text("hello")
    elif kind == "empty-file":
        path.write_bytes(b"")
    elif kind == "truncated":
        write_image(path, np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "bomb":
        png_with_declared_size(path, 30000, 30000)
    elif kind == "tiny":
        write_image(path, np.zeros((1, 1, 3), np.uint8))
    else:
        raise AssertionError(kind)
    return path


@pytest.mark.parametrize("kind", ["not-an-image", "empty-file", "truncated", "bomb"])
def test_bad_images_on_sr(kind, kit, capsys):
    path = _bad_image(kind, kit / "in")
    argv = ["sr", kit / "model", "--input", kit / "in", "--output", kit / "out"]
    check_fails(argv, capsys, kit, DATA, path.name)


@pytest.mark.parametrize("kind", ["truncated", "bomb", "tiny"])
def test_bad_hr_images_on_eval(kind, kit, capsys):
    path = _bad_image(kind, kit / "hr")
    check_fails(["eval", kit / "model", "--hr", kit / "hr"], capsys, kit, DATA, path.name)


@pytest.mark.parametrize("kind", ["not-an-image", "tiny"])
def test_bad_images_on_downscale(kind, kit, capsys):
    path = _bad_image(kind, kit / "hr")
    check_fails(["downscale", "--input", kit / "hr", "--output", kit / "out"], capsys, kit, DATA, path.name)


def test_bad_image_in_training_data(kit, capsys):
    path = _bad_image("truncated", kit / "hr")
    argv = ["train", kit / "model", "--steps", "1", "--data", kit / "hr", "--val", "none", "--output", kit / "out"]
    check_fails(argv, capsys, kit, DATA, path.name)


def test_folders(kit, capsys):
    (kit / "empty").mkdir()
    sr = ["sr", kit / "model", "--output", kit / "out", "--input"]
    check_fails([*sr, kit / "missing"], capsys, kit, DATA, "missing")
    check_fails([*sr, kit / "empty"], capsys, kit, DATA, "empty")
    check_fails([*sr, kit / "afile.txt"], capsys, kit, DATA, "afile.txt")
    check_fails(["eval", kit / "model", "--hr", kit / "hr", "--lr", kit / "missing"], capsys, kit, DATA, "missing")
    train = ["train", kit / "model", "--steps", "1", "--val", "none", "--output", kit / "out", "--data"]
    check_fails([*train, kit / "missing"], capsys, kit, DATA, "missing")


def test_output_folder_that_is_a_file(kit, capsys):
    out = kit / "afile.txt"
    check_fails(["sr", kit / "model", "--input", kit / "in", "--output", out], capsys, kit, DATA, "afile.txt")
    check_fails(["downscale", "--input", kit / "hr", "--output", out], capsys, kit, DATA, "afile.txt")
    argv = ["train", kit / "model", "--steps", "1", "--val", "none", "--output", out]
    check_fails(argv, capsys, kit, DATA, "afile.txt")


def test_output_equal_to_input_is_refused(kit, capsys):
    argv = ["sr", kit / "model", "--input", kit / "in", "--output", kit / "in"]
    check_fails(argv, capsys, kit, DATA, "--output", "--input")
    check_fails(["downscale", "--input", kit / "hr", "--output", kit / "hr"], capsys, kit, DATA, "--output")


def test_two_inputs_with_one_stem(kit, capsys):
    Image.open(kit / "in" / "a.png").save(kit / "in" / "a.jpg")
    argv = ["sr", kit / "model", "--input", kit / "in", "--output", kit / "out"]
    check_fails(argv, capsys, kit, DATA, "a.png", "a.jpg")


def test_hr_lr_size_mismatch(kit, capsys):
    write_image(kit / "lr" / "ax2.png", np.zeros((4, 4, 3), np.uint8))
    check_fails(["eval", kit / "model", "--hr", kit / "hr", "--lr", kit / "lr"], capsys, kit, DATA, "ax2.png")


def test_prune_and_search_bad_data(kit, capsys):
    spec = kit / "model" / "spec.yaml"
    check_fails(["prune", spec, "--target-params", "0.5", "--output", kit / "out"], capsys, kit, DATA, "weights")
    nan = _bad_checkpoint("nan", kit)
    argv = ["prune", kit / "model", "--weights", nan, "--target-params", "0.5", "--output", kit / "out"]
    check_fails(argv, capsys, kit, DATA, nan.name)
    check_fails(["search", "no_such_space"], capsys, kit, DATA, "no_such_space")
    bad = kit / "space.yaml"
    bad.write_text("name: x\nwidths: " + "[" * 5000 + "]" * 5000 + "\n")
    check_fails(["search", bad], capsys, kit, DATA, "space.yaml")
    bad.write_text("name: x\nwidths: [8\n")
    check_fails(["search", bad], capsys, kit, DATA, "space.yaml")
    check_fails(["pipeline", bad], capsys, kit, DATA, "space.yaml")


def test_front_and_show_bad_runs(kit, capsys):
    check_fails(["front", "no_such_run"], capsys, kit, DATA, "no_such_run")
    check_fails(["front", kit / "afile.txt"], capsys, kit, DATA, "afile.txt")
    (kit / "results" / "emptyrun").mkdir()
    check_fails(["front", "emptyrun"], capsys, kit, DATA, "emptyrun")
    check_fails(["show", "no_such_run/3"], capsys, kit, DATA, "no_such_run")
    check_fails(["zoo", "download", "no_such_model"], capsys, kit, DATA, "no_such_model")


# --------------------------------------------------------------------------- images read correctly


def test_sixteen_bit_grey_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32768], [65535, 1000, 40000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    got = read_image(tmp_path / "g16.png")
    assert got.shape == (2, 3, 3) and got.dtype == np.uint8
    want = np.round(values / 257.0).astype(np.uint8)
    assert np.array_equal(got[..., 0], want) and np.array_equal(got[..., 2], want)


def test_rgba_grey_and_palette_images_are_rgb(kit, capsys):
    rgb = np.random.default_rng(1).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    Image.fromarray(np.dstack([rgb, np.full((6, 7), 128, np.uint8)])).save(kit / "rgba.png")
    assert np.array_equal(read_image(kit / "rgba.png"), rgb)
    Image.fromarray(rgb[..., 0]).save(kit / "grey.png")
    assert np.array_equal(read_image(kit / "grey.png"), np.repeat(rgb[..., :1], 3, axis=2))
    Image.fromarray(rgb).convert("P").save(kit / "pal.png")
    assert read_image(kit / "pal.png").shape == (6, 7, 3)
    folder = kit / "mixed"
    folder.mkdir()
    for name in ("rgba.png", "grey.png", "pal.png"):
        (kit / name).rename(folder / name)
    Image.fromarray(np.full((5, 5), 60000, np.uint16)).save(folder / "g16.png")
    code, out, err = cli(["sr", kit / "model", "--input", folder, "--output", kit / "out"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (kit / "out").iterdir()) == ["g16.png", "grey.png", "pal.png", "rgba.png"]


# --------------------------------------------------------------------------- --debug, bugs, real processes


def test_debug_flag_and_env_show_the_traceback(kit, capsys, monkeypatch):
    argv = ["eval", "no_such_model", "--hr", kit / "hr"]
    code, _, err = cli(["--debug", *argv], capsys)
    assert code == DATA and "Traceback" in err and "no_such_model" in err
    code, _, err = cli([*argv, "--debug"], capsys)
    assert code == DATA and "Traceback" in err
    monkeypatch.setenv("SRNAS_DEBUG", "1")
    code, _, err = cli(argv, capsys)
    assert code == DATA and "Traceback" in err


def test_an_unexpected_exception_is_reported_as_a_bug(kit, capsys, monkeypatch):
    import nas.cli.commands.zoo as zoo_command

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(zoo_command, "run", broken)  # register() picks it up when main builds the parser
    line = check_fails(["zoo"], capsys, kit, DATA, "bug", "--debug", "ZeroDivisionError")
    assert "SRNAS_DEBUG" in line
    code, _, err = cli(["--debug", "zoo"], capsys)
    assert code == DATA and "Traceback" in err and "ZeroDivisionError" in err


def _srnas(*argv, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    full_env = {**os.environ, "SRNAS_PROGRESS": "off", **(env or {})}
    full_env.pop("SRNAS_DEBUG", None) if not env or "SRNAS_DEBUG" not in env else None
    cmd = [sys.executable, "-m", "nas.cli", *map(str, argv)]
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # real subprocesses
def test_real_process_exit_codes_and_stderr(kit):
    payload = _bad_checkpoint("pickle", kit)
    before = snapshot(kit)
    bad = _srnas("eval", kit / "model", "--weights", payload, "--hr", kit / "hr", cwd=kit)
    assert bad.returncode == DATA and bad.stderr.count("\n") == 1 and payload.name in bad.stderr, bad.stderr
    assert "weights_only" not in bad.stderr and not (kit / "pwned").exists()
    usage = _srnas("train", kit / "model", "--steps", "-1", "--output", kit / "out", cwd=kit)
    assert usage.returncode == USAGE and usage.stderr.count("\n") == 1 and "--steps" in usage.stderr, usage.stderr
    debug = _srnas("eval", "no_such_model", "--hr", kit / "hr", cwd=kit, env={"SRNAS_DEBUG": "1"})
    assert debug.returncode == DATA and "Traceback" in debug.stderr
    assert snapshot(kit) == before


def test_pickled_payload_is_not_executed_by_read_state_dict(tmp_path):
    from nas.errors import CheckpointError
    from nas.models.checkpoint import read_state_dict

    path = tmp_path / "p.pt"
    with path.open("wb") as f:
        pickle.dump(Payload(tmp_path / "pwned"), f)
    with pytest.raises(CheckpointError) as exc:
        read_state_dict(path)
    assert "weights_only" not in str(exc.value) and not (tmp_path / "pwned").exists()
