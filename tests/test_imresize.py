"""MATLAB-bicubic resizing: hand-derived kernel values, shapes, and bit-exactness on Set5/Set14 x4."""

from __future__ import annotations

import numpy as np
import pytest

from nas.measure.images import read_image
from nas.measure.imresize import _round_clip_uint8, contributions, cubic, downscale, imresize
from nas.paths import reference_dir

_REF = reference_dir()
_HR_FILES = sorted((_REF / "images").glob("Set*/*.png")) if _REF else []

# Interior taps of a /2 resize: 0.5 * cubic(d / 2) for d = +-0.5, +-1.5, ..., +-3.5 (all dyadic, so exact).
_W2 = [-0.01171875, -0.03515625, 0.11328125, 0.43359375, 0.43359375, 0.11328125, -0.03515625, -0.01171875]


def test_cubic_kernel_values():
    x = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, -0.5, -1.5])
    # 1.5|x|^3 - 2.5|x|^2 + 1 on [0, 1]; -0.5|x|^3 + 2.5|x|^2 - 4|x| + 2 on (1, 2]; 0 beyond.
    np.testing.assert_array_equal(cubic(x), [1.0, 0.5625, 0.0, -0.0625, 0.0, 0.0, 0.5625, -0.0625])


def test_contributions_half_scale_interior_and_mirrored_border():
    weights, idx = contributions(8, 4, 0.5)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    # Output 2 (1-based) is centred at input 3.5: taps on inputs 0..7 (1-based), input 0 mirrors to 1.
    row = {int(i): 0.0 for i in idx[1]}
    for i, w in zip(idx[1], weights[1], strict=True):
        row[int(i)] += w
    expected = {0: _W2[0] + _W2[1], 1: _W2[2], 2: _W2[3], 3: _W2[4], 4: _W2[5], 5: _W2[6], 6: _W2[7]}
    assert {k: v for k, v in row.items() if v != 0} == expected


def test_float_row_half_scale_matches_hand_values():
    x = np.arange(10.0, 90.0, 10.0)[None, :]  # 1x8: 10, 20, ..., 80
    out = imresize(x, 0.5)
    assert out.shape == (1, 4) and out.dtype == np.float64
    # Output 1: centre 1.5, taps on inputs -2..5 with -2, -1, 0 mirrored to 3, 2, 1.
    out0 = (_W2[3] + _W2[2]) * 10 + (_W2[4] + _W2[1]) * 20 + (_W2[5] + _W2[0]) * 30
    out0 += _W2[6] * 40 + _W2[7] * 50
    # Output 2: centre 3.5, taps on inputs 0..7, input 0 mirrored to 1.
    out1 = (_W2[0] + _W2[1]) * 10 + sum(w * v for w, v in zip(_W2[2:], [20, 30, 40, 50, 60, 70], strict=True))
    assert out0 == pytest.approx(14.4921875, abs=1e-12)
    assert out1 == pytest.approx(34.8828125, abs=1e-12)
    np.testing.assert_allclose(out[0, :2], [out0, out1], rtol=0, atol=1e-12)
    # The signal is mirrored at both ends, so a reversed ramp gives the reversed output.
    np.testing.assert_allclose(imresize(x[:, ::-1], 0.5)[0, ::-1], out[0], rtol=0, atol=1e-12)


def test_uint8_row_is_rounded():
    x = np.arange(10, 90, 10, dtype=np.uint8)[None, :]
    out = imresize(x, 0.5)
    assert out.dtype == np.uint8
    assert out[0, :2].tolist() == [14, 35]  # 14.4921875 and 34.8828125


def test_upscale_x2_hand_value():
    x = np.array([[3.0, 7.0, 1.0, 5.0]])
    out = imresize(x, 2.0)
    assert out.shape == (2, 8)
    # Output 1 centred at 0.75: cubic(1.75, 0.75, 0.25, 1.25) on inputs -1, 0, 1, 2 -> 2, 1, 1, 2.
    expected = (-0.0234375 * 7) + (0.2265625 + 0.8671875) * 3 + (-0.0703125 * 7)
    np.testing.assert_allclose(out[:, 0], expected, rtol=0, atol=1e-12)


def test_round_half_away_from_zero_and_clip():
    x = np.array([0.5, 1.5, 2.5, 2.4999999, -0.5, -3.0, 254.5, 255.5, 300.0])
    assert _round_clip_uint8(x).tolist() == [1, 2, 3, 2, 0, 0, 255, 255, 255]


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_constant_image_stays_constant(factor):
    img = np.full((24, 36, 3), 173, dtype=np.uint8)
    out = downscale(img, factor)
    assert out.shape == (24 // factor, 36 // factor, 3)
    assert (out == 173).all()
    np.testing.assert_allclose(imresize(img.astype(np.float32) / 255, 1 / factor), 173 / 255, atol=1e-6)


@pytest.mark.parametrize(("factor", "shape"), [(2, (6, 8, 3)), (3, (4, 5, 3)), (4, (3, 4, 3))])
def test_downscale_modcrops_then_resizes(factor, shape):
    img = np.random.default_rng(0).integers(0, 256, (13, 17, 3), dtype=np.uint8)
    out = downscale(img, factor)
    assert out.shape == shape and out.dtype == np.uint8
    h, w = img.shape[0] // factor * factor, img.shape[1] // factor * factor
    np.testing.assert_array_equal(out, imresize(img[:h, :w], 1 / factor))


def _dense(in_len: int, out_len: int, scale: float) -> np.ndarray:
    weights, idx = contributions(in_len, out_len, scale)
    m = np.zeros((out_len, in_len))
    np.add.at(m, (np.repeat(np.arange(out_len), idx.shape[1]), idx.ravel()), weights.ravel())
    return m


def test_uint8_rounds_between_passes():
    img = np.random.default_rng(1).integers(0, 256, (48, 60), dtype=np.uint8)
    mh, mw = _dense(48, 16, 1 / 3), _dense(60, 20, 1 / 3)
    two_pass = _round_clip_uint8(_round_clip_uint8(mh @ img) @ mw.T)
    one_pass = _round_clip_uint8(mh @ img.astype(np.float64) @ mw.T)
    out = imresize(img, 1 / 3)
    np.testing.assert_array_equal(out, two_pass)
    assert (out != one_pass).any()  # intermediate rounding matters, so this test can tell them apart
    np.testing.assert_allclose(imresize(img.astype(np.float64), 1 / 3), mh @ img @ mw.T, atol=1e-10)


def test_rejects_bad_input():
    with pytest.raises(TypeError, match="uint8"):
        downscale(np.zeros((8, 8, 3), dtype=np.float32), 2)
    with pytest.raises(TypeError, match="int32"):
        imresize(np.zeros((8, 8), dtype=np.int32), 0.5)
    with pytest.raises(ValueError, match="smaller than"):
        downscale(np.zeros((3, 8, 3), dtype=np.uint8), 4)


def test_512_image_is_fast():
    import time

    img = np.random.default_rng(2).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    start = time.perf_counter()
    downscale(img, 4)
    assert time.perf_counter() - start < 1.0


def test_reference_kit_has_all_19_images():
    if _REF is None:
        pytest.skip("reference kit not found (set SRNAS_REFERENCE_DIR)")
    assert len(_HR_FILES) == 19


@pytest.mark.parametrize("hr_path", _HR_FILES or [None], ids=lambda p: p.stem if p else "no-kit")
def test_matches_shipped_matlab_lr_x4(hr_path):
    if hr_path is None:
        pytest.skip("reference kit not found (set SRNAS_REFERENCE_DIR)")
    lr = read_image(hr_path.parent / "LR_bicubic_X4" / f"{hr_path.stem}x4.png")
    out = downscale(read_image(hr_path), 4)
    assert out.shape == lr.shape
    assert int((out != lr).sum()) == 0


def test_downscale_command_writes_div2k_names(tmp_path, capsys):
    from nas.cli.main import main
    from nas.measure.images import write_image

    src, dst = tmp_path / "hr", tmp_path / "lr"
    write_image(src / "0001.png", _random_image((13, 17, 3), 3))
    write_image(src / "0002.png", _random_image((8, 10), 4))  # grey, replicated to RGB
    assert main(["downscale", "--input", str(src), "--output", str(dst), "--scale", "2"]) == 0
    assert sorted(p.name for p in dst.iterdir()) == ["0001x2.png", "0002x2.png"]
    for name in ("0001", "0002"):
        expected = downscale(read_image(src / f"{name}.png"), 2)
        np.testing.assert_array_equal(read_image(dst / f"{name}x2.png"), expected)
    assert read_image(dst / "0001x2.png").shape == (6, 8, 3)


def test_downscale_command_errors_write_nothing(tmp_path, capsys):
    from nas.cli.main import main
    from nas.measure.images import write_image

    src, dst = tmp_path / "hr", tmp_path / "lr"
    assert main(["downscale", "--input", str(src), "--output", str(dst)]) == 1
    assert "image folder not found" in capsys.readouterr().err
    write_image(src / "0001.png", _random_image((16, 16, 3), 5))
    (src / "0002.png").write_bytes(b"not a png")
    assert main(["downscale", "--input", str(src), "--output", str(dst)]) == 1
    assert "0002.png" in capsys.readouterr().err
    assert not dst.exists()
    (src / "0002.png").unlink()
    write_image(src / "0003.png", _random_image((3, 16, 3), 6))
    assert main(["downscale", "--input", str(src), "--output", str(dst)]) == 1
    assert "smaller than the scale 4" in capsys.readouterr().err
    assert not dst.exists()
    assert main(["downscale", "--input", str(src), "--output", str(src)]) == 1
    assert "is the --input folder" in capsys.readouterr().err


def _random_image(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
