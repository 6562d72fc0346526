"""PSNR / SSIM / Y-channel against hand-computed values and scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from nas.errors import DataError
from nas.measure.metrics import evaluate_pair, psnr, rgb_to_y, ssim


def _random(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_rgb_to_y_hand_values():
    rgb = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [10, 20, 30]]], dtype=np.uint8)
    # 16 + (65.481 R + 128.553 G + 24.966 B) / 255; (10, 20, 30): 16 + 3974.85 / 255.
    expected = [16.0, 235.0, 16.0 + 65.481, 16.0 + 3974.85 / 255.0]
    np.testing.assert_allclose(rgb_to_y(rgb), [expected], rtol=0, atol=1e-12)
    assert rgb_to_y(rgb).dtype == np.float64  # not rounded


def test_psnr_of_one_gray_level_offset():
    a = np.full((16, 16, 3), 100, dtype=np.uint8)
    b = a + 1
    assert psnr(a, b, crop_border=0, test_y_channel=False) == pytest.approx(20 * math.log10(255))
    # Y moves by (65.481 + 128.553 + 24.966) / 255 = 219 / 255.
    assert psnr(a, b, crop_border=0, test_y_channel=True) == pytest.approx(20 * math.log10(255 * 255 / 219))


def test_psnr_y_of_a_single_red_change():
    a = _random((10, 10, 3))
    a[2, 3] = (100, 50, 50)
    b = a.copy()
    b[2, 3, 0] = 110  # R + 10 -> Y + 654.81 / 255 on one pixel of 100
    mse = (654.81 / 255) ** 2 / 100
    assert psnr(a, b, crop_border=0, test_y_channel=True) == pytest.approx(10 * math.log10(255**2 / mse))
    rgb_mse = 100 / 300  # one channel of one pixel off by 10
    assert psnr(a, b, crop_border=0, test_y_channel=False) == pytest.approx(10 * math.log10(255**2 / rgb_mse))


def test_border_is_excluded():
    a = _random((20, 20, 3))
    b = a.copy()
    b[3, :, :] = np.where(a[3] > 200, a[3] - 10, a[3] + 10)  # row 3 off by 10 everywhere
    assert psnr(a, b, crop_border=4, test_y_channel=False) == math.inf
    assert ssim(a, b, crop_border=4, test_y_channel=False) == 1.0
    # crop 3 keeps 14x14 pixels, of which row 3 (14 pixels x 3 channels) differs by 10.
    expected = 10 * math.log10(255**2 / (14 * 3 * 100 / (14 * 14 * 3)))
    assert psnr(a, b, crop_border=3, test_y_channel=False) == pytest.approx(expected)


def test_float_inputs_need_and_use_data_range():
    a, b = _random((16, 16, 3), 1), _random((16, 16, 3), 2)
    ref = psnr(a, b, crop_border=2, test_y_channel=True)
    f1, f2 = a / 255.0, b / 255.0
    assert psnr(f1, f2, crop_border=2, test_y_channel=True, data_range=1.0) == pytest.approx(ref, abs=1e-9)
    assert psnr(a * 1.0, b * 1.0, crop_border=2, test_y_channel=True, data_range=255.0) == pytest.approx(ref)
    with pytest.raises(ValueError, match="data_range"):
        psnr(f1, f2, crop_border=0, test_y_channel=False)
    with pytest.raises(ValueError, match="data_range"):
        ssim(f1, f2, crop_border=0, test_y_channel=False)
    with pytest.raises(ValueError, match="both be uint8 or both be float"):
        psnr(a, f2, crop_border=0, test_y_channel=False, data_range=1.0)
    with pytest.raises(ValueError, match="data_range 255"):
        psnr(a, b, crop_border=0, test_y_channel=False, data_range=1.0)


def test_shape_and_crop_errors():
    a = _random((16, 16, 3))
    with pytest.raises(ValueError, match=r"same shape.*\(16, 16, 3\).*\(16, 12, 3\)"):
        psnr(a, a[:, :12], crop_border=0, test_y_channel=False)
    with pytest.raises(ValueError, match="crop_border=8"):
        psnr(a, a, crop_border=8, test_y_channel=False)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(a, a, crop_border=3, test_y_channel=False)


def test_grey_image_is_its_own_luma():
    a, b = _random((16, 16), 3), _random((16, 16), 4)
    assert psnr(a, b, crop_border=1, test_y_channel=True) == psnr(a, b, crop_border=1, test_y_channel=False)
    assert psnr(a[:, :, None], b[:, :, None], crop_border=1, test_y_channel=True) == psnr(
        a, b, crop_border=1, test_y_channel=True
    )


def test_identical_images():
    a = _random((24, 24, 3))
    assert psnr(a, a, crop_border=0, test_y_channel=True) == math.inf
    assert ssim(a, a, crop_border=0, test_y_channel=True) == pytest.approx(1.0, abs=1e-12)
    assert ssim(a, a, crop_border=0, test_y_channel=False) == pytest.approx(1.0, abs=1e-12)


def test_ssim_matches_skimage():
    a, b = _random((40, 48, 3), 5), _random((40, 48, 3), 6)
    b = (0.7 * a + 0.3 * b).astype(np.uint8)  # correlated pair, SSIM well away from 0
    opts = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "data_range": 255}
    ref_rgb = structural_similarity(a[2:-2, 2:-2], b[2:-2, 2:-2], channel_axis=2, **opts)
    ref_y = structural_similarity(rgb_to_y(a)[2:-2, 2:-2], rgb_to_y(b)[2:-2, 2:-2], **opts)
    assert 0.3 < ref_y < 0.99
    assert ssim(a, b, crop_border=2, test_y_channel=False) == pytest.approx(ref_rgb, abs=1e-6)
    assert ssim(a, b, crop_border=2, test_y_channel=True) == pytest.approx(ref_y, abs=1e-6)


def test_evaluate_pair_modcrops_hr_and_crops_scale_pixels():
    hr = _random((22, 26, 3), 7)  # modcrop x4 -> 20x24
    sr = hr[:20, :24].copy()
    sr[:4] = 0  # inside the 4-pixel border: ignored
    sr[4:16, 4:20] = np.where(sr[4:16, 4:20] > 127, sr[4:16, 4:20] - 2, sr[4:16, 4:20] + 2)
    m = evaluate_pair(sr, hr, 4)
    assert set(m) == {"psnr_y", "psnr_rgb", "ssim_y", "ssim_rgb"}
    # Kept area 12x16; all of it differs by 2 in every channel.
    assert m["psnr_rgb"] == pytest.approx(10 * math.log10(255**2 / 4))
    assert m["ssim_y"] < 1 and m["ssim_rgb"] < 1
    assert evaluate_pair(hr[:20, :24], hr, 4)["psnr_y"] == math.inf
    with pytest.raises(DataError, match=r"\(20, 20, 3\).*\(20, 24, 3\)"):
        evaluate_pair(sr[:, :20], hr, 4)
