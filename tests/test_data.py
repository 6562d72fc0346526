"""Paired SR data: folder layouts, generated-LR cache, bad input, embedded photos, patch sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nas import data as D
from nas.data import embedded, folders
from nas.errors import DataError
from nas.measure.images import modcrop, read_image, write_image
from nas.measure.imresize import downscale


@pytest.fixture(autouse=True)
def _user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SRNAS_HOME", str(tmp_path / "user_cache"))


def _image(seed: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _hr_folder(folder: Path, n: int = 3, size: tuple[int, int] = (42, 50)) -> list[np.ndarray]:
    images = [_image(i, *size) for i in range(n)]
    for i, img in enumerate(images):
        write_image(folder / f"{i + 1:04d}.png", img)
    return images


def _lr_folder(lr_dir: Path, images: list[np.ndarray], scale: int, suffix: str = "") -> None:
    for i, img in enumerate(images):
        write_image(lr_dir / f"{i + 1:04d}{suffix}.png", downscale(img, scale))


# ----------------------------------------------------------------------------- layouts


def test_plain_folder_with_lr_bicubic(tmp_path):
    images = _hr_folder(tmp_path)
    _lr_folder(tmp_path / "LR_bicubic" / "X4", images, 4, suffix="x4")
    pairs = D.open_pairs(tmp_path, 4)
    assert pairs.names == ["0001", "0002", "0003"]
    p = pairs.pair(1)
    np.testing.assert_array_equal(p.hr, modcrop(images[1], 4))
    np.testing.assert_array_equal(p.lr, downscale(images[1], 4))
    assert p.hr.shape == (40, 48, 3) and p.lr.shape == (10, 12, 3)
    assert not (tmp_path / "user_cache" / "lr").exists()  # nothing generated when LR exists


def test_div2k_root_picks_split_and_sibling_lr(tmp_path):
    train = _hr_folder(tmp_path / "DIV2K_train_HR", 2)
    _lr_folder(tmp_path / "DIV2K_train_LR_bicubic" / "X2", train, 2, suffix="x2")
    _hr_folder(tmp_path / "DIV2K_valid_HR", 1, size=(20, 24))
    hr, lr = D.resolve_folder(tmp_path, 2, "train")
    assert (hr.name, lr) == ("DIV2K_train_HR", tmp_path / "DIV2K_train_LR_bicubic" / "X2")
    assert D.resolve_folder(tmp_path, 2, "val") == (tmp_path / "DIV2K_valid_HR", None)
    assert D.has_split(tmp_path, "val") and not D.has_split(tmp_path / "DIV2K_train_HR", "val")
    # The HR folder itself also finds its DIV2K sibling.
    assert D.resolve_folder(tmp_path / "DIV2K_train_HR", 2)[1] == lr
    np.testing.assert_array_equal(D.open_pairs(tmp_path, 2).pair(0).lr, downscale(train[0], 2))


def test_hr_subfolder_and_reference_layout(tmp_path):
    images = _hr_folder(tmp_path / "a" / "HR", 1)
    _lr_folder(tmp_path / "a" / "LR_bicubic" / "X3", images, 3)  # LR named like HR
    assert D.open_pairs(tmp_path / "a", 3).pair(0).lr.shape == (14, 16, 3)
    images = _hr_folder(tmp_path / "b", 1)
    _lr_folder(tmp_path / "b" / "LR_bicubic_X4", images, 4, suffix="x4")  # Set5 kit layout
    assert D.resolve_folder(tmp_path / "b", 4)[1] == tmp_path / "b" / "LR_bicubic_X4"


def test_reference_set5_loads(reference):
    pairs = D.open_pairs(reference / "images" / "Set5", 4)
    assert len(pairs) == 5 and pairs.pair(0).hr.shape == (512, 512, 3)


# ----------------------------------------------------------------------------- generated LR


def _cached_lr(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "user_cache" / "lr").rglob("*.png"))


def test_generated_lr_is_cached_once_outside_the_folder(tmp_path, monkeypatch):
    hr_dir = tmp_path / "hr"
    images = _hr_folder(hr_dir)
    calls = []
    real = folders.downscale
    monkeypatch.setattr(folders, "downscale", lambda hr, s: calls.append(s) or real(hr, s))
    pairs = D.open_pairs(hr_dir, 4)
    cached = _cached_lr(tmp_path)
    assert sorted(p.name.split("-")[0] for p in cached) == ["0001", "0002", "0003"]
    assert all(p.parent.parent.name == "X4" for p in cached)
    assert sorted(p.name for p in hr_dir.iterdir()) == ["0001.png", "0002.png", "0003.png"]  # nothing written there
    np.testing.assert_array_equal(pairs.pair(2).lr, downscale(images[2], 4))
    mtimes = {p: p.stat().st_mtime_ns for p in cached}
    assert len(calls) == 3
    again = D.open_pairs(hr_dir, 4)
    assert len(calls) == 3  # read from the cache, not regenerated
    assert {p: p.stat().st_mtime_ns for p in _cached_lr(tmp_path)} == mtimes
    np.testing.assert_array_equal(again.pair(0).lr, pairs.pair(0).lr)
    assert D.resolve_folder(hr_dir, 4)[1] is None


def test_changed_hr_image_gets_a_new_lr_image(tmp_path):
    hr_dir = tmp_path / "hr"
    _hr_folder(hr_dir, 1)
    D.open_pairs(hr_dir, 2)
    new = _image(99, 30, 34)
    write_image(hr_dir / "0001.png", new)  # new size and mtime: a new key
    np.testing.assert_array_equal(D.open_pairs(hr_dir, 2).pair(0).lr, downscale(new, 2))
    assert len(_cached_lr(tmp_path)) == 2


def _tree(root: Path) -> dict[str, np.ndarray]:
    images = {"T91/t1": _image(1, 24, 28), "T91/t2": _image(2, 20, 20), "BSDS/sub/0042": _image(3, 32, 24)}
    for name, img in images.items():
        write_image(root / f"{name}.png", img)
    write_image(root / "BSDS" / "0007.jpg", _image(4, 16, 16))  # JPEG too
    images["BSDS/0007"] = read_image(root / "BSDS" / "0007.jpg")
    (root / "T91" / "SHA256SUMS").write_text("not an image\n")
    write_image(root / ".hidden" / "x.png", _image(5, 8, 8))  # skipped
    return images


def test_folder_tree_every_image_in_its_subfolders(tmp_path):
    images = _tree(tmp_path / "train")
    pairs = D.open_pairs(tmp_path / "train", 4)
    assert pairs.names == ["BSDS/0007", "BSDS/sub/0042", "T91/t1", "T91/t2"]
    for p in pairs.pairs():
        np.testing.assert_array_equal(p.hr, modcrop(images[p.name], 4))
        np.testing.assert_array_equal(p.lr, downscale(images[p.name], 4))
    assert not D.has_split(tmp_path / "train", "val")
    with pytest.raises(DataError, match="tree of HR images: it has no val split"):
        D.open_pairs(tmp_path / "train", 4, "val")
    assert D.PatchBatches(pairs, 2, 4, seed=0)[0][1].shape == (2, 3, 16, 16)


def test_read_only_tree_is_never_written(tmp_path):
    root = tmp_path / "ro"
    images = _tree(root)
    folders_ = [p for p in [root, *root.rglob("*")] if p.is_dir()]
    before = sorted(str(p) for p in root.rglob("*"))  # the check that counts (root ignores the mode bits)
    for p in sorted(folders_, reverse=True):
        p.chmod(0o555)
    try:
        pairs = D.open_pairs(root, 2)
        again = D.open_pairs(root, 2)
    finally:
        for p in folders_:
            p.chmod(0o755)
    assert sorted(str(p) for p in root.rglob("*")) == before
    assert len(_cached_lr(tmp_path)) == len(images)
    np.testing.assert_array_equal(again.pair(3).lr, pairs.pair(3).lr)
    np.testing.assert_array_equal(pairs.pair(3).lr, downscale(images["T91/t2"], 2))


def test_unwritable_cache_names_the_way_out(tmp_path, monkeypatch):
    _hr_folder(tmp_path / "hr", 1)
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("SRNAS_HOME", str(tmp_path / "file" / "cache"))  # under a file: cannot be created
    with pytest.raises(DataError, match="cannot cache the LR image of .*0001.png.*SRNAS_HOME"):
        D.open_pairs(tmp_path / "hr", 2)


def test_tree_with_two_files_of_one_name(tmp_path):
    write_image(tmp_path / "a" / "x.png", _image(1, 8, 8))
    write_image(tmp_path / "a" / "x.jpg", _image(2, 8, 8))
    with pytest.raises(DataError, match="two HR images share the name a/x"):
        D.open_pairs(tmp_path, 2)


def test_memory_budget_zero_decodes_on_demand(tmp_path):
    images = _hr_folder(tmp_path)
    pairs = D.open_pairs(tmp_path, 4, memory_bytes=0)
    assert all(e.pair is None for e in pairs._entries)
    np.testing.assert_array_equal(pairs.pair(1).hr, modcrop(images[1], 4))


# ----------------------------------------------------------------------------- bad input


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match="not found.*nope"):
        D.open_pairs(tmp_path / "nope", 4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        D.open_pairs(tmp_path / "empty", 4)


def test_truncated_hr_names_file_and_writes_nothing(tmp_path):
    _hr_folder(tmp_path)
    bad = tmp_path / "0002.png"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(DataError, match="0002.png"):
        D.open_pairs(tmp_path, 4)
    assert _cached_lr(tmp_path) == []


def test_truncated_lr_names_file(tmp_path):
    images = _hr_folder(tmp_path)
    _lr_folder(tmp_path / "LR_bicubic" / "X4", images, 4, suffix="x4")
    bad = tmp_path / "LR_bicubic" / "X4" / "0003x4.png"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(DataError, match="0003x4.png"):
        D.open_pairs(tmp_path, 4)


def test_size_mismatch_and_wrong_scale(tmp_path):
    images = _hr_folder(tmp_path)
    lr_dir = tmp_path / "LR_bicubic" / "X4"
    _lr_folder(lr_dir, images, 4, suffix="x4")
    write_image(lr_dir / "0002x4.png", _image(9, 11, 12))
    with pytest.raises(DataError, match=r"0002x4.png is 12x11, expected 12x10"):
        D.open_pairs(tmp_path, 4)
    write_image(lr_dir / "0002x4.png", downscale(images[1], 2))  # a x2 image in the X4 folder
    with pytest.raises(DataError, match=r"0002x4.png.*looks like a x2 image"):
        D.open_pairs(tmp_path, 4)
    with pytest.raises(DataError, match="unsupported scale 5"):
        D.open_pairs(tmp_path, 5)


def test_missing_lr_file(tmp_path):
    images = _hr_folder(tmp_path)
    _lr_folder(tmp_path / "LR_bicubic" / "X4", images[:2], 4, suffix="x4")
    with pytest.raises(DataError, match="0003x4.png"):
        D.open_pairs(tmp_path, 4)


def test_ambiguous_div2k_root(tmp_path):
    _hr_folder(tmp_path / "A_train_HR", 1)
    _hr_folder(tmp_path / "B_train_HR", 1)
    with pytest.raises(DataError, match="several train HR folders"):
        D.open_pairs(tmp_path, 4)


def test_patch_larger_than_image(tmp_path):
    _hr_folder(tmp_path, 1, size=(40, 64))
    with pytest.raises(DataError, match=r"0001 .* 16x10, smaller than the LR patch size 12"):
        D.PatchBatches(D.open_pairs(tmp_path, 4), 2, 12, seed=0)


def test_images_smaller_than_the_patch_are_not_sampled(tmp_path):
    write_image(tmp_path / "a" / "small.png", _image(1, 16, 16))
    write_image(tmp_path / "b" / "big.png", _image(2, 64, 64))
    with pytest.warns(UserWarning, match=r"1 of 2 LR images .* not sampled: a/small \(8x8\)"):
        batches = D.PatchBatches(D.open_pairs(tmp_path, 2), 4, 12, seed=0)
    assert batches.indices == [1]
    for step in range(3):
        assert batches[step][0].shape == (4, 3, 12, 12)


# ----------------------------------------------------------------------------- embedded


@pytest.fixture(scope="module")
def embedded_x4(tmp_path_factory):
    cache = tmp_path_factory.mktemp("embedded_cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("SRNAS_HOME", str(cache))
    embedded._embedded_pair.cache_clear()
    yield D.open_pairs("embedded", 4, "train"), D.open_pairs("embedded", 4, "val"), cache
    mp.undo()
    embedded._embedded_pair.cache_clear()


def test_embedded_split(embedded_x4):
    train, val, _ = embedded_x4
    assert train.names == list(D.EMBEDDED_SPLITS["train"])
    assert val.names == ["chelsea", "coffee"]
    assert not set(train.names) & set(val.names)
    for p in [*train.pairs(), *val.pairs()]:
        assert p.lr.dtype == np.uint8 and p.lr.shape[2] == 3
        assert p.hr.shape == (p.lr.shape[0] * 4, p.lr.shape[1] * 4, 3)
    chelsea = val.pair(0)
    np.testing.assert_array_equal(chelsea.hr, modcrop(D.embedded_image("chelsea"), 4))
    np.testing.assert_array_equal(chelsea.lr, downscale(D.embedded_image("chelsea"), 4))
    assert D.has_split("embedded", "val")


def test_embedded_is_deterministic_and_cached_on_disk(embedded_x4, monkeypatch):
    _, val, cache = embedded_x4
    cached = cache / "embedded" / "LR_bicubic" / "X4" / "coffeex4.png"
    np.testing.assert_array_equal(read_image(cached), val.pair(1).lr)
    monkeypatch.setenv("SRNAS_HOME", str(cache))
    monkeypatch.setattr(embedded, "downscale", None)  # must not be needed: LR comes from the disk cache
    embedded._embedded_pair.cache_clear()
    again = D.open_pairs("embedded", 4, "val")
    np.testing.assert_array_equal(again.pair(1).lr, val.pair(1).lr)
    np.testing.assert_array_equal(again.pair(0).hr, val.pair(0).hr)


def test_validation_pairs_center_crop(embedded_x4):
    _, val, _ = embedded_x4
    pairs = D.validation_pairs(val, max_size=64, limit=1)
    assert len(pairs) == 1 and pairs[0].hr.shape == (64, 64, 3) and pairs[0].lr.shape == (16, 16, 3)
    full = val.pair(0)
    lh, lw = full.lr.shape[:2]
    top, left = (lh - 16) // 2, (lw - 16) // 2
    np.testing.assert_array_equal(pairs[0].lr, full.lr[top : top + 16, left : left + 16])
    np.testing.assert_array_equal(pairs[0].hr, full.hr[top * 4 : top * 4 + 64, left * 4 : left * 4 + 64])


# ----------------------------------------------------------------------------- patches


def test_dihedral_gives_eight_distinct_views():
    a = np.arange(9).reshape(3, 3, 1)
    views = {D.dihedral(a, t).tobytes() for t in range(8)}
    assert len(views) == 8
    np.testing.assert_array_equal(D.dihedral(a, 0), a)


def _nearest_pair_folder(folder: Path, scale: int) -> None:
    """LR images whose HR is their nearest-neighbour upscale, so alignment is checkable exactly."""
    for i in range(2):
        lr = _image(10 + i, 15, 19)
        write_image(folder / f"{i}.png", np.kron(lr, np.ones((scale, scale, 1), dtype=np.uint8)))
        write_image(folder / "LR_bicubic" / f"X{scale}" / f"{i}x{scale}.png", lr)


def test_patches_aligned_deterministic(tmp_path):
    _nearest_pair_folder(tmp_path, 3)
    batches = D.PatchBatches(D.open_pairs(tmp_path, 3), batch_size=6, patch_size=5, seed=7)
    lr, hr = batches[4]
    assert lr.shape == (6, 3, 5, 5) and hr.shape == (6, 3, 15, 15)
    assert lr.dtype == hr.dtype and lr.min() >= 0 and lr.max() <= 1
    up = lr.repeat_interleave(3, dim=2).repeat_interleave(3, dim=3)
    assert (up == hr).all()  # every patch pair covers the same area under the same transform
    lr2, hr2 = batches[4]
    assert (lr2 == lr).all() and (hr2 == hr).all()
    assert not (batches[5][0] == lr).all()
    other_seed = D.PatchBatches(D.open_pairs(tmp_path, 3), batch_size=6, patch_size=5, seed=8)
    assert not (other_seed[4][0] == lr).all()


def test_iterate_with_workers_matches_in_process(tmp_path):
    _nearest_pair_folder(tmp_path, 2)
    batches = D.PatchBatches(D.open_pairs(tmp_path, 2), batch_size=2, patch_size=4, seed=0)
    serial = list(batches.iterate(3, 6))
    parallel = list(batches.iterate(3, 6, num_workers=1))
    assert [s for s, _, _ in parallel] == [3, 4, 5]
    for (_, a, b), (_, c, d) in zip(serial, parallel, strict=True):
        assert (a == c).all() and (b == d).all()
