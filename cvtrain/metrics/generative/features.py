"""Feature extractors for FID / KID / precision-recall: images in, N x D float64 out.

Every extractor is a network that takes N x 3 x H x W images in [0, 1] of any size
(it resizes them itself, as pytorch-fid's InceptionV3 does) and returns one vector per
image; `FeatureExtractor.extract` feeds it a tensor or an image folder in batches.

- `inception`: pytorch-fid's FID Inception (2048-d pool features) from a local weights
  file. pytorch-fid's own constructor downloads the weights; here the same architecture
  is built without them and the user's file is loaded: nothing is ever downloaded.
- `shapesworld`: the course's small CNN, trained once on ShapesWorld shape labels and
  cached under a name that hashes everything that defines it, so that scores computed
  on different days and machines compare. Its penultimate layer gives the features.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from cvtrain.errors import UserError

IMAGE_EXTENSIONS = ("bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp")  # pytorch-fid's
FID_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"


class FeatureExtractor:
    """A network from [0, 1] images to feature vectors, run in eval mode and batches."""

    def __init__(self, network, name: str, input_size: int, batch_size: int = 50, device: str = "cpu",
                 head=None, class_names: tuple[str, ...] = ()):
        self.network = network.eval().to(device)
        self.name, self.input_size, self.batch_size, self.device = name, input_size, batch_size, device
        # A classifier's last layer over the features, and its classes: a conditional
        # generator's samples are scored by whether they are classified as asked.
        self.head = head.eval().to(device) if head is not None else None
        self.class_names = tuple(class_names)

    def classify(self, features: np.ndarray) -> np.ndarray:
        """The class index the classifier assigns to each feature vector (from `extract`)."""
        import torch

        if self.head is None:
            raise UserError(f"the {self.name} features have no classifier; use --features shapesworld.")
        with torch.no_grad():
            logits = self.head(torch.as_tensor(features, dtype=torch.float32, device=self.device))
        return logits.argmax(1).cpu().numpy()

    def extract(self, images) -> np.ndarray:
        """N x D float64 features of a float tensor N x C x H x W in [0, 1], or of the
        images of a folder (sorted by name, not recursive, as pytorch-fid reads them)."""
        if isinstance(images, (str, Path)):
            return self.extract_files(image_files(images))
        rows = [self._forward(images[i : i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        return np.concatenate(rows) if rows else np.zeros((0, 0))

    def extract_files(self, files: list[Path]) -> np.ndarray:
        """Features of image files, read one batch at a time (a folder never sits in memory)."""
        rows = []
        for i in range(0, len(files), self.batch_size):
            rows.append(self._forward(self._stack([read_image(f) for f in files[i : i + self.batch_size]])))
        return np.concatenate(rows)

    def _stack(self, images: list):
        """One batch tensor; images of different sizes are first resized to the input size."""
        import torch
        import torch.nn.functional as F

        if len({tuple(im.shape) for im in images}) > 1:
            images = [F.interpolate(im[None], size=(self.input_size,) * 2, mode="bilinear", align_corners=False)[0]
                      for im in images]
        return torch.stack(images)

    def _forward(self, batch) -> np.ndarray:
        import torch

        batch = torch.as_tensor(batch, dtype=torch.float32)
        if batch.ndim != 4 or batch.shape[1] not in (1, 3):
            raise UserError(f"images must be N x 3 x H x W (or N x 1 x H x W), got {tuple(batch.shape)}.")
        if batch.shape[1] == 1:
            batch = batch.expand(-1, 3, -1, -1)
        with torch.no_grad():
            out = self.network(batch.to(self.device))
        return out.reshape(len(out), -1).double().cpu().numpy()


# --- image folders -------------------------------------------------------------------


def image_files(folder) -> list[Path]:
    """The image files directly in `folder`, sorted; a one-line error when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"'{folder}' is not a folder of images; check the path.")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS)
    if not files:
        raise UserError(f"'{folder}' holds no image files ({', '.join(IMAGE_EXTENSIONS)}); check the path.")
    return files


def read_image(path: Path):
    """3 x H x W float tensor in [0, 1] (RGB), as torchvision's ToTensor makes it."""
    import torch

    from cvtrain.data.image_files import open_rgb

    array = np.asarray(open_rgb(path), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255)


# --- the FID Inception -----------------------------------------------------------------


def inception_features(weights: str | None, batch_size: int = 50, device: str = "cpu") -> FeatureExtractor:
    """pytorch-fid's InceptionV3 (pool3, 2048-d; inputs resized to 299, scaled to [-1, 1])
    with the weights of a local file."""
    if not weights:
        raise UserError(f"--features inception needs --weights FILE: pytorch-fid's {FID_WEIGHTS} "
                        "(from its GitHub releases; nothing is downloaded at run time).")
    if not Path(weights).is_file():
        raise UserError(f"Inception weights '{weights}' not found; pass --weights with pytorch-fid's {FID_WEIGHTS}.")
    try:
        from pytorch_fid import inception as fid
    except ImportError:
        raise UserError("--features inception needs pytorch-fid: pip install 'cvtrain[fid]'.") from None
    network = _fid_inception(fid, weights)
    return FeatureExtractor(network, "inception", 299, batch_size, device)


def _fid_inception(fid, weights: str):
    """InceptionV3([pool3]) exactly as pytorch-fid assembles it, around the Inception that
    `fid_inception_v3` would build, but loading `weights` instead of downloading them."""
    from unittest import mock

    import torch

    inception = fid._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    inception.Mixed_5b = fid.FIDInceptionA(192, pool_features=32)
    inception.Mixed_5c = fid.FIDInceptionA(256, pool_features=64)
    inception.Mixed_5d = fid.FIDInceptionA(288, pool_features=64)
    inception.Mixed_6b = fid.FIDInceptionC(768, channels_7x7=128)
    inception.Mixed_6c = fid.FIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6d = fid.FIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6e = fid.FIDInceptionC(768, channels_7x7=192)
    inception.Mixed_7b = fid.FIDInceptionE_1(1280)
    inception.Mixed_7c = fid.FIDInceptionE_2(2048)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        inception.load_state_dict(state)
    except Exception as err:  # a wrong or corrupt file: say which, not a traceback
        raise UserError(f"'{weights}' is not pytorch-fid's FID Inception state dict ({type(err).__name__}); "
                        f"use {FID_WEIGHTS}.") from None
    # InceptionV3 calls fid_inception_v3() (which downloads): hand it the network built here.
    with mock.patch.object(fid, "fid_inception_v3", lambda: inception):
        model = fid.InceptionV3([fid.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    from .networks import FirstOutput

    return FirstOutput(model)


# --- the ShapesWorld classifier --------------------------------------------------------

# Bump when anything about the network, its data or its training changes in a way the
# recipe below does not capture (it is part of the cache name).
SHAPESWORLD_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ShapesWorldRecipe:
    """Everything that defines the ShapesWorld feature network: its hash names the cache file."""

    image_size: int = 32  # network input; ShapesWorld renders at 64 and is resized down
    width: int = 16  # SmallCNN base width: 64-d features
    num_train: int = 8000
    data_image_size: int = 64
    data_seed: int = 0
    seed: int = 0
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3

    def key(self) -> str:
        from cvtrain.data.shapesworld import GENERATOR_VERSION

        what = {"recipe": dataclasses.asdict(self), "arch": "SmallCNN+resize+normalize",
                "generator": GENERATOR_VERSION, "version": SHAPESWORLD_VERSION}
        return hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()


def cache_root() -> Path:
    """$CVTRAIN_CACHE, else ~/.cache/cvtrain (the folder ShapesWorld's data cache lives in)."""
    root = os.environ.get("CVTRAIN_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "cvtrain"


def shapesworld_cache_file(recipe: ShapesWorldRecipe) -> Path:
    """Where the network of `recipe` is cached: its key in the name, so a new recipe never reads an old file."""
    return cache_root() / "scorers" / f"shapesworld-features-{recipe.key()[:20]}.pt"


def shapesworld_features(image_size: int = 32, batch_size: int = 256, device: str = "cpu",
                         quiet: bool = False) -> FeatureExtractor:
    """The ShapesWorld feature extractor: loaded from the cache, else trained (seconds on a
    CPU) and cached. Features are the pooled output of the CNN's last conv block."""
    recipe = ShapesWorldRecipe(image_size=image_size)
    path = shapesworld_cache_file(recipe)
    network = _shapesworld_network(recipe)
    if not _load_cached(network, path, recipe.key()):
        if not quiet:
            print(f"training the ShapesWorld feature network once (cached in {path})", file=sys.stderr)
        state = _train_shapesworld(network, recipe)
        _save_atomic(path, {"key": recipe.key(), "state_dict": state})
    from cvtrain.data.shapesworld import SHAPES

    return FeatureExtractor(network.features, "shapesworld", image_size, batch_size, device, head=network.head,
                            class_names=SHAPES)


def _shapesworld_network(recipe: ShapesWorldRecipe):
    from cvtrain.data.shapesworld import SHAPES

    from .networks import ShapesWorldNet

    return ShapesWorldNet(recipe.width, recipe.image_size, len(SHAPES))


def _train_shapesworld(network, recipe: ShapesWorldRecipe) -> dict:
    """A few epochs of Adam on ShapesWorld shape labels, seeded and on one thread, so that
    the same recipe gives the same weights on any machine (the thread count changes the
    order of float sums); one thread is also the fastest on a busy CPU (seconds)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):  # seeds its own stream: a training run that first
            return _fit(network, recipe)  # needs the network goes on with its random state untouched
    finally:
        torch.set_num_threads(threads)


def _fit(network, recipe: ShapesWorldRecipe) -> dict:
    import torch
    import torch.nn.functional as F

    from cvtrain.data.shapesworld import ShapesWorldSpec, load_split

    data = load_split("train", recipe.num_train, ShapesWorldSpec(image_size=recipe.data_image_size,
                                                                  seed=recipe.data_seed))
    images = torch.from_numpy(data.images).permute(0, 3, 1, 2).float().div_(255)
    images = F.interpolate(images, size=(recipe.image_size,) * 2, mode="bilinear", align_corners=False,
                           antialias=True)  # once, not every epoch: the same op the network applies
    labels = torch.from_numpy(data.labels).long()
    torch.manual_seed(recipe.seed)
    network.apply(_reset)
    generator = torch.Generator().manual_seed(recipe.seed)
    optimizer = torch.optim.Adam(network.parameters(), lr=recipe.lr)
    network.train()
    for _ in range(recipe.epochs):
        order = torch.randperm(len(images), generator=generator)
        for i in range(0, len(order), recipe.batch_size):
            batch = order[i : i + recipe.batch_size]
            loss = F.cross_entropy(network(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    network.eval()
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


def _reset(module) -> None:
    """Re-initialise seeded: the network's initial weights are part of the recipe."""
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()


def _load_cached(network, path: Path, key: str) -> bool:
    """Load the cached weights into `network`; False when the file is missing, unreadable,
    for another key or for another architecture (it is then trained again, never trusted)."""
    import torch

    if not path.is_file():
        return False
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("key") != key:
            return False
        network.load_state_dict(saved["state_dict"])
        network.eval()
        return True
    except Exception:
        return False


def _save_atomic(path: Path, obj: dict, what: str = "ShapesWorld feature network") -> None:
    """The checkpoints' atomic torch.save (readers never see half a file, and two processes
    training at once both leave a whole one); a cache folder that cannot be written costs
    a warning, not the run: the network is trained again next time."""
    from cvtrain.engine.checkpoint import save_atomic

    try:
        save_atomic(obj, path)
    except OSError as err:
        print(f"warning: {what} not cached in {path.parent}: {err}", file=sys.stderr)


def build_extractor(kind: str, weights: str | None = None, device: str = "cpu") -> FeatureExtractor:
    """The extractor named on the command line."""
    if kind == "inception":
        return inception_features(weights, device=device)
    if weights:
        raise UserError("--weights is for --features inception; the ShapesWorld network trains itself.")
    return shapesworld_features(device=device)
