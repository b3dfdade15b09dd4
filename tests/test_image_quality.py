"""The image-to-image scorers against their references: PSNR and SSIM against
scikit-image on random images, colourfulness against its formula written out with
numpy, and the torch Lab conversion against scikit-image's rgb2lab / lab2rgb."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from cvtrain.metrics.image_quality import ImageQuality, colourfulness, psnr, ssim
from cvtrain.tasks.lab import join_lab, lab_to_rgb, rgb_to_lab, split_lab

skimage_metrics = pytest.importorskip("skimage.metrics")
skimage_color = pytest.importorskip("skimage.color")


def _pairs(seed: int, n: int = 3, size: tuple[int, int] = (23, 31)) -> tuple[np.ndarray, np.ndarray]:
    """Targets and noisy, partly blurred predictions (N, 3, H, W) in [0, 1]: SSIM well away from 0 and 1."""
    rng = np.random.default_rng(seed)
    target = rng.random((n, 3, *size))
    pred = np.clip(0.7 * target + 0.3 * rng.random((n, 3, *size)) + rng.normal(0, 0.05, target.shape), 0, 1)
    return pred, target


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_psnr_and_ssim_equal_scikit_image_on_random_images(seed):
    pred, target = _pairs(seed)
    ours_psnr = psnr(torch.from_numpy(pred), torch.from_numpy(target)).numpy()
    ours_ssim = ssim(torch.from_numpy(pred), torch.from_numpy(target)).numpy()
    for i in range(len(pred)):
        ref_psnr = skimage_metrics.peak_signal_noise_ratio(target[i], pred[i], data_range=1.0)
        ref_ssim = skimage_metrics.structural_similarity(
            target[i], pred[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
            channel_axis=0)
        assert ours_psnr[i] == pytest.approx(ref_psnr, abs=1e-9)
        assert ours_ssim[i] == pytest.approx(ref_ssim, abs=1e-9)
        assert 0.1 < ref_ssim < 0.95, "a test image pair that exercises the formula"


def test_ssim_with_another_data_range_and_one_channel_equals_scikit_image():
    rng = np.random.default_rng(5)
    target = rng.integers(0, 256, (1, 1, 40, 40)).astype(np.float64)
    pred = np.clip(target + rng.normal(0, 30, target.shape), 0, 255)
    ours = ssim(torch.from_numpy(pred), torch.from_numpy(target), data_range=255.0).item()
    ref = skimage_metrics.structural_similarity(target[0, 0], pred[0, 0], gaussian_weights=True, sigma=1.5,
                                                use_sample_covariance=False, data_range=255.0)
    assert ours == pytest.approx(ref, abs=1e-9)
    assert ssim(torch.from_numpy(target), torch.from_numpy(target), data_range=255.0).item() == pytest.approx(1.0)


def test_ssim_refuses_images_smaller_than_its_window():
    with pytest.raises(ValueError, match="11x11 window"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_colourfulness_equals_the_hasler_suesstrunk_formula():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (4, 3, 16, 20)).astype(np.float64)
    images[0] = images[0, :1]  # grey: rg = yb = 0
    for image, ours in zip(images, colourfulness(torch.from_numpy(images)).numpy()):
        r, g, b = image
        rg, yb = r - g, 0.5 * (r + g) - b
        expected = np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
        assert ours == pytest.approx(expected, rel=1e-12)
    assert colourfulness(torch.from_numpy(images[:1])).item() == 0.0


def test_the_metric_averages_per_image_scores_and_leaves_exact_copies_out_of_psnr():
    rng = np.random.default_rng(4)
    target = torch.from_numpy(rng.integers(0, 256, (3, 3, 16, 16), dtype=np.uint8))
    output = target.clone()
    output[1:] = (target[1:].int() + torch.from_numpy(rng.integers(-20, 21, (2, 3, 16, 16)))).clamp(0, 255).to(torch.uint8)
    metric = ImageQuality(prefix="a2b_")
    metric.update(output[:2], target[:2])
    metric.update(output[2:], target[2:])
    scores = metric.compute()
    out, real = output.double() / 255, target.double() / 255
    assert scores["a2b_psnr"] == pytest.approx(psnr(out[1:], real[1:]).mean().item())
    assert scores["a2b_ssim"] == pytest.approx(ssim(out, real).mean().item())
    assert scores["a2b_colourfulness"] == pytest.approx(colourfulness(output).mean().item())
    assert scores["a2b_colourfulness_real"] == pytest.approx(colourfulness(target).mean().item())


def test_rgb_to_lab_and_back_equal_scikit_image():
    rng = np.random.default_rng(6)
    rgb = rng.random((2, 3, 9, 11))
    rgb[0, :, 0, :4] = [[0, 1, 0.02, 0.5]] * 3  # black, white, the linear segment, grey
    ours = rgb_to_lab(torch.from_numpy(rgb)).numpy()
    ref = skimage_color.rgb2lab(rgb, channel_axis=1)
    np.testing.assert_allclose(ours, ref, atol=1e-9)
    lab = ref.copy()
    lab[1, 1:] += rng.normal(0, 40, lab[1, 1:].shape)  # some out of the sRGB gamut: clipped alike
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # scikit-image warns of the clamped z
        back = skimage_color.lab2rgb(lab, channel_axis=1)
    np.testing.assert_allclose(lab_to_rgb(torch.from_numpy(lab)).numpy(), back, atol=1e-9)
    assert not np.allclose(back[1], rgb[1]), "the perturbed half left the round trip"


def test_split_and_join_lab_round_trip_uint8_images_within_one_level():
    images = torch.from_numpy(np.random.default_rng(7).integers(0, 256, (2, 3, 8, 8), dtype=np.uint8))
    light, ab = split_lab(images)
    assert light.shape == (2, 1, 8, 8) and ab.shape == (2, 2, 8, 8)
    assert light.min() >= -1 and light.max() <= 1 and ab.abs().max() <= 1
    assert (join_lab(light, ab).int() - images.int()).abs().max() <= 1
