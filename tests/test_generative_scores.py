"""FID / KID / improved precision-recall against independent references, the ShapesWorld
feature network's cache, and `cvtrain-score fid`."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from conftest import run_score_cli

from cvtrain.errors import UserError
from cvtrain.metrics.generative import frechet_distance, kernel_inception_distance, precision_recall, statistics

# --- FID -------------------------------------------------------------------------------


def reference_fid(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's formula (with its eps fallback), written out with scipy.linalg.sqrtm of the product."""
    from scipy import linalg

    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(len(mu1)) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def random_statistics(rng, n, d, scale=1.0, shift=0.0):
    return statistics(rng.normal(size=(n, d)) * scale + shift)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pytorch-fid passes scipy's deprecated disp=
@pytest.mark.parametrize("n", [400, 33, 20], ids=["full-rank", "near-singular", "rank-deficient"])
def test_fid_matches_scipy_sqrtm_and_pytorch_fid(n):
    rng = np.random.default_rng(n)
    (mu1, s1), (mu2, s2) = random_statistics(rng, n, 32), random_statistics(rng, n, 32, 1.3, 0.2)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(reference_fid(mu1, s1, mu2, s2), abs=1e-6, rel=1e-9)
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    assert ours == pytest.approx(fid_score.calculate_frechet_distance(mu1, s1, mu2, s2), abs=1e-6, rel=1e-9)


def test_fid_of_identical_statistics_is_zero_and_stats_are_pytorch_fids():
    features = np.random.default_rng(1).normal(size=(50, 8))
    mu, sigma = statistics(features)
    np.testing.assert_allclose(sigma, np.cov(features, rowvar=False))
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0, abs=1e-8)


def test_fid_singular_statistics_are_finite():
    """Rank-1 covariances: the eigen-route stays finite where sqrtm may not."""
    v = np.arange(1.0, 5.0)
    s1, s2 = np.outer(v, v), np.outer(v[::-1], v[::-1])
    value = frechet_distance(np.zeros(4), s1, np.ones(4), s2)
    assert np.isfinite(value)
    assert value == pytest.approx(reference_fid(np.zeros(4), s1, np.ones(4), s2), abs=1e-5)


# --- KID -------------------------------------------------------------------------------


def naive_kid(x, y):
    """Unbiased MMD² with k(a, b) = (a·b / d + 1)³, one pair at a time."""
    m, d = len(x), x.shape[1]
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_equals_naive_unbiased_mmd():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 5)) + 0.3
    mean, std = kernel_inception_distance(x, y, subsets=1, subset_size=1000)  # capped: all 30 samples
    assert mean == pytest.approx(naive_kid(x, y), abs=1e-9)
    assert std == 0


def test_kid_is_seeded_and_near_zero_for_one_distribution():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    first = kernel_inception_distance(x, y, subsets=20, subset_size=50)
    assert first == kernel_inception_distance(x, y, subsets=20, subset_size=50)
    assert abs(first[0]) < 3 * first[1] + 0.05
    assert kernel_inception_distance(x, y + 2, subsets=20, subset_size=50)[0] > 1


# --- precision / recall -------------------------------------------------------------------


def test_precision_recall_identical_and_disjoint_sets():
    x = np.random.default_rng(4).normal(size=(100, 6))
    assert precision_recall(x, x.copy()) == (1.0, 1.0)
    assert precision_recall(x, x + 1000) == (0.0, 0.0)


def test_precision_recall_by_hand():
    """1-d, k=1. Real 0, 1, 2, 10: radii 1, 1, 1, 8. Fake 0.5, 1.5, 20, 21: radii 1, 1, 1, 1.
    Fakes inside a real ball: 0.5, 1.5 (20 is 10 from 10 > 8) -> precision 1/2.
    Reals inside a fake ball: 0 (0.5 from 0.5), 1, 2 (0.5 from 1.5); 10 is not -> recall 3/4."""
    real = np.array([[0.0], [1.0], [2.0], [10.0]])
    fake = np.array([[0.5], [1.5], [20.0], [21.0]])
    assert precision_recall(real, fake, k=1) == (0.5, 0.75)
    assert precision_recall(real, fake, k=1, block=3) == (0.5, 0.75)  # blocks change nothing


# --- the ShapesWorld feature network ----------------------------------------------------------


def shapes_images(split: str, n: int) -> torch.Tensor:
    from cvtrain.data.shapesworld import ShapesWorldSpec, load_split

    data = load_split(split, n, ShapesWorldSpec())
    return torch.from_numpy(data.images).permute(0, 3, 1, 2).float().div(255)


@pytest.fixture(scope="module")
def shapes_extractor():
    from cvtrain.metrics.generative import features

    extractor = features.shapesworld_features(image_size=32, quiet=True)
    return extractor, features.shapesworld_cache_file(features.ShapesWorldRecipe(image_size=32))


def test_shapesworld_extractor_is_cached(shapes_extractor, monkeypatch):
    from cvtrain.metrics.generative import features

    first, path = shapes_extractor
    assert path.is_file() and path.name.startswith("shapesworld-features-")
    mtime = path.stat().st_mtime_ns

    def no_training(*args):
        raise AssertionError("trained again instead of loading the cache")

    monkeypatch.setattr(features, "_train_shapesworld", no_training)
    second = features.shapesworld_features(image_size=32)
    assert path.stat().st_mtime_ns == mtime
    images = shapes_images("val", 8)
    np.testing.assert_array_equal(first.extract(images), second.extract(images))



def test_the_cache_is_written_whole_and_an_unwritable_cache_folder_costs_a_warning(tmp_path, capsys):
    import torch

    from cvtrain.metrics.generative import features

    path = tmp_path / "scorers" / "net.pt"
    features._save_atomic(path, {"key": "k", "state_dict": {"w": torch.ones(2)}})
    assert torch.load(path, weights_only=True)["key"] == "k"
    assert [p.name for p in path.parent.iterdir()] == ["net.pt"], "no temporary file left behind"
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    features._save_atomic(blocked / "scorers" / "net.pt", {"key": "k"})
    assert "warning: ShapesWorld feature network not cached" in capsys.readouterr().err

def test_the_shapesworld_classifier_knows_the_shapes_it_scores_samples_by(shapes_extractor):
    """class_acc (a conditional generator's samples drawn as asked) means something only
    if the classifier is right on real images: on unseen val images at 32 and 64 pixels."""
    from cvtrain.data.shapesworld import SHAPES, ShapesWorldSpec, load_split

    extractor, _ = shapes_extractor
    assert extractor.class_names == SHAPES
    for size in (32, 64):
        data = load_split("val", 300, ShapesWorldSpec(image_size=size))
        images = torch.from_numpy(data.images).permute(0, 3, 1, 2).float().div(255)
        accuracy = (extractor.classify(extractor.extract(images)) == data.labels).mean()
        assert accuracy >= 0.95, f"{size} px: {accuracy:.3f}"


def test_shapesworld_recipe_names_the_cache():
    from cvtrain.metrics.generative.features import ShapesWorldRecipe

    assert ShapesWorldRecipe().key() == ShapesWorldRecipe().key()
    assert ShapesWorldRecipe(epochs=1).key() != ShapesWorldRecipe().key()


def test_shapesworld_fid_small_for_real_large_for_noise(shapes_extractor):
    extractor, _ = shapes_extractor
    train, val = extractor.extract(shapes_images("train", 256)), extractor.extract(shapes_images("val", 256))
    noise = extractor.extract(torch.rand(256, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    assert train.shape == (256, extractor.network.backbone.features)  # 64: the pooled last block
    real_fid = frechet_distance(*statistics(train), *statistics(val))
    noise_fid = frechet_distance(*statistics(train), *statistics(noise))
    assert noise_fid > 10 * real_fid


# --- the Inception extractor (random weights: the real file is not in the test data) -------------


@pytest.mark.slow  # two Inception forwards at 299 x 299 on a CPU: ~10 s
def test_inception_features_match_pytorch_fid(tmp_path):
    """A folder through our extractor gives pytorch-fid's get_activations, the model built
    by pytorch-fid itself (its download replaced by the same local file)."""
    from unittest import mock

    from PIL import Image

    inception = pytest.importorskip("pytorch_fid.inception")
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    from cvtrain.metrics.generative.features import inception_features

    torch.manual_seed(0)
    network = _fid_inception_without_weights(inception)
    weights = tmp_path / "fid_inception.pth"
    torch.save(network.state_dict(), weights)
    folder = tmp_path / "images"
    folder.mkdir()
    pixels = np.random.default_rng(7).integers(0, 256, size=(2, 40, 40, 3), dtype=np.uint8)
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"{i}.png")
    ours = inception_features(str(weights), batch_size=2).extract(folder)
    state = torch.load(weights, weights_only=True)
    with mock.patch.object(inception, "load_state_dict_from_url", lambda *a, **k: state):
        model = inception.InceptionV3([3])
    files = sorted(folder.iterdir())
    with mock.patch.object(fid_score, "tqdm", lambda x: x, create=True):
        theirs = fid_score.get_activations(files, model, batch_size=2, dims=2048, num_workers=0)
    assert ours.shape == (2, 2048)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def _fid_inception_without_weights(inception):
    """pytorch-fid's FID Inception with random weights: its builder, the download stubbed
    out and load_state_dict skipped."""
    from unittest import mock

    from torch import nn

    with mock.patch.object(inception, "load_state_dict_from_url", lambda *a, **k: None), \
            mock.patch.object(nn.Module, "load_state_dict", lambda self, state, *a, **k: None):
        return inception.fid_inception_v3()



def test_inception_needs_weights_and_package(tmp_path, monkeypatch):
    from cvtrain.metrics.generative.features import inception_features

    with pytest.raises(UserError, match="--weights"):
        inception_features(None)
    with pytest.raises(UserError, match="not found"):
        inception_features(str(tmp_path / "missing.pth"))
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"not a state dict")
    monkeypatch.setitem(__import__("sys").modules, "pytorch_fid", None)
    with pytest.raises(UserError, match="pip install"):
        inception_features(str(weights))


# --- cvtrain-score fid ----------------------------------------------------------------------


def test_cli_on_feature_files(tmp_path, capsys):
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(60, 4)), rng.normal(size=(50, 4)) + 0.5
    np.savez(tmp_path / "real.npz", features=real)
    np.savez(tmp_path / "fake.npz", features=fake)
    code, out, _ = run_score_cli(["fid", "--real", str(tmp_path / "real.npz"), "--fake", str(tmp_path / "fake.npz"),
                              "--json", "--kid-subsets", "5", "--kid-subset-size", "20"], capsys)
    assert code == 0
    scores = json.loads(out)
    assert scores["fid"] == pytest.approx(frechet_distance(*statistics(real), *statistics(fake)))
    assert (scores["kid_mean"], scores["kid_std"]) == pytest.approx(kernel_inception_distance(real, fake, 5, 20))
    assert (scores["precision"], scores["recall"]) == precision_recall(real, fake)


def test_cli_on_statistics_gives_fid_only(tmp_path, capsys):
    rng = np.random.default_rng(6)
    mu, sigma = statistics(rng.normal(size=(40, 3)))
    np.savez(tmp_path / "stats.npz", mu=mu, sigma=sigma)
    np.savez(tmp_path / "feats.npz", features=rng.normal(size=(40, 3)))
    code, out, err = run_score_cli(["fid", "--real", str(tmp_path / "stats.npz"), "--fake", str(tmp_path / "feats.npz"),
                                "--json"], capsys)
    assert code == 0 and set(json.loads(out)) == {"fid"} and "FID only" in err
    code, out, _ = run_score_cli(["fid", "--real", str(tmp_path / "stats.npz"), "--fake", str(tmp_path / "feats.npz")],
                             capsys)
    assert code == 0 and out.startswith("FID") and "FID only" in out


def test_cli_on_image_folders(tmp_path, capsys, shapes_extractor):
    from PIL import Image

    for name, split in (("real", "train"), ("fake", "val")):
        (tmp_path / name).mkdir()
        images = (shapes_images(split, 12) * 255).round().byte().permute(0, 2, 3, 1).numpy()
        for i, image in enumerate(images):
            Image.fromarray(image).save(tmp_path / name / f"{i:03d}.png")
    code, out, err = run_score_cli(["fid", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"),
                                "--json", "--features", "shapesworld"], capsys)
    assert code == 0, err
    scores = json.loads(out)
    assert set(scores) == {"fid", "kid_mean", "kid_std", "precision", "recall"}
    extractor, _ = shapes_extractor
    expected = frechet_distance(*statistics(extractor.extract(shapes_images("train", 12))),
                                *statistics(extractor.extract(shapes_images("val", 12))))
    assert scores["fid"] == pytest.approx(expected, rel=1e-6)  # PNG round trip is exact for uint8 pixels
    code, out, _ = run_score_cli(["fid", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake")], capsys)
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["FID", "KID", "precision", "recall"]


def test_cli_missing_path_is_one_line_exit_2(tmp_path, capsys):
    np.savez(tmp_path / "real.npz", features=np.zeros((5, 2)))
    code, out, err = run_score_cli(["fid", "--real", str(tmp_path / "real.npz"), "--fake", str(tmp_path / "nope")],
                               capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--fake" in err and "does not exist" in err


def test_score_help_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom cvtrain.score_cli import main\ntry:\n    main(['fid', '--help'])\n"
            "except SystemExit:\n    pass\nassert 'torch' not in sys.modules, 'torch imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
