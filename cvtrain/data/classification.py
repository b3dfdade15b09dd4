"""Classification data sets: digits (bundled), MNIST and CIFAR-10 from disk, image folders.

Builders have the signature `build(cfg, split) -> Dataset` with split in train/val/test.
A sample is {"image": uint8 (C, H, W), "label": int64 scalar}; every data set carries
`class_names` and `in_channels`. Small data sets come back as `InMemoryDataset`, resized
once here, so training indexes whole batches instead of decoding images per step.
Nothing downloads: MNIST and CIFAR-10 are read from `dataset.root` with download=False.

torchvision is imported inside the builders that need it: its import takes seconds and
`digits` (scikit-learn's bundled 8x8 images) works without it.
"""

from __future__ import annotations

import functools
import os
import pickle
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from cvtrain.data.image_files import verify_images, wants_verify
from cvtrain.data.memory import InMemoryDataset
from cvtrain.errors import UserError
from cvtrain.registry import DATASETS

SPLITS = ("train", "val", "test")
_CHUNK = 2048  # images resized per interpolate call: bounds the float copy's memory


# --- shared helpers ------------------------------------------------------------------


def _opt(cfg: Any, key: str, default: Any) -> Any:
    """cfg[key] when cfg has it (DictConfig or dict), else `default`."""
    getter = getattr(cfg, "get", None)
    return getter(key, default) if getter else getattr(cfg, key, default)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}.")


def _image_size(cfg: Any) -> int:
    size = _opt(cfg, "image_size", None)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise UserError(
            f"dataset.image_size: must be a positive integer (square side), got {size!r}; e.g. dataset.image_size=64."
        )
    return size


def _val_fraction(cfg: Any, parts: int = 1) -> float:
    """The held-out fraction per split; `parts` splits (val, test) must leave a train set."""
    frac = _opt(cfg, "val_fraction", 0.1)
    limit = 1.0 / parts
    if not isinstance(frac, (int, float)) or isinstance(frac, bool) or not 0.0 < frac < limit:
        raise UserError(
            f"dataset.val_fraction: must be in (0, {limit:g}), got {frac!r}; e.g. dataset.val_fraction=0.1."
        )
    return float(frac)


def _root(cfg: Any) -> str | None:
    root = _opt(cfg, "root", None)
    return os.path.expanduser(str(root)) if root else None


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) images resized to size x size, in chunks.

    Bilinear in both directions: with antialias when shrinking (no aliasing from
    skipped pixels), and plain bilinear when enlarging, which turns 8x8 digits into smooth
    strokes rather than the hard 8x8 blocks that nearest would give (and that no real
    handwriting has).
    """
    if images.shape[-2:] == (size, size):
        return images
    shrink = size < min(images.shape[-2:])
    out = torch.empty((*images.shape[:2], size, size), dtype=torch.uint8)
    for start in range(0, len(images), _CHUNK):
        chunk = images[start : start + _CHUNK].float()
        resized = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
        out[start : start + _CHUNK] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return out


def stratified_split(labels: torch.Tensor, fractions: tuple[float, ...], seed: int) -> list[torch.Tensor]:
    """Sorted index sets [rest, part_1, ...]: each part takes `fraction` of every class.

    Per-class shuffles from one seeded generator make the split deterministic per seed
    and keep class proportions equal across splits. A class with at least one image per
    split gives each part at least one, so tiny folders still get a validation set.
    """
    gen = torch.Generator().manual_seed(int(seed))
    parts: list[list[torch.Tensor]] = [[] for _ in range(len(fractions) + 1)]
    for cls in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        start = 0
        for p, frac in enumerate(fractions, 1):
            take = round(len(idx) * frac)
            if take == 0 and len(idx) > len(fractions):
                take = 1
            parts[p].append(idx[start : start + take])
            start += take
        parts[0].append(idx[start:])
    empty = torch.empty(0, dtype=torch.long)
    return [torch.sort(torch.cat(p) if p else empty).values for p in parts]


def _in_memory(images: torch.Tensor, labels: torch.Tensor, class_names: list[str], size: int) -> InMemoryDataset:
    """An InMemoryDataset of uint8 (N, C, size, size) images and int64 labels."""
    images = resize_images(images.contiguous(), size)
    return InMemoryDataset(
        fields={"image": images, "label": labels.to(torch.int64)},
        class_names=list(class_names),
        in_channels=int(images.shape[1]),
    )


# --- digits: scikit-learn's bundled 8x8 images --------------------------------------


@DATASETS.register("digits", family="classification")
@DATASETS.register("digits", family="clip")  # zero-shot and linear-probe scoring of a trained CLIP
def digits(cfg: Any, split: str) -> Dataset:
    """1797 real 8x8 handwritten digits that ship with scikit-learn: no download, no root.

    There is no official split, so train/val/test are one seeded stratified split, with
    `val_fraction` of every class in val and the same fraction in test.
    """
    _check_split(split)
    size, frac = _image_size(cfg), _val_fraction(cfg, parts=2)
    images, labels = _load_digits()
    train, val, test = stratified_split(labels, (frac, frac), _opt(cfg, "seed", 0))
    idx = {"train": train, "val": val, "test": test}[split]
    return _in_memory(images[idx], labels[idx], [str(d) for d in range(10)], size)


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (1797, 1, 8, 8) images scaled from 0..16 to 0..255, and labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UserError(
            "dataset=digits needs scikit-learn; run pip install 'cvtrain[digits]' (or pip install scikit-learn)."
        ) from None
    data = load_digits()
    images = torch.from_numpy(data.images).float().mul_(255.0 / 16.0).round_().clamp_(0, 255)
    return images.to(torch.uint8).unsqueeze(1), torch.from_numpy(data.target).to(torch.int64)


# --- MNIST and CIFAR-10 from a local torchvision folder -----------------------------

# name -> (torchvision class, folder torchvision expects under root, layout hint)
_TORCHVISION = {
    "mnist": ("MNIST", "MNIST", "MNIST/raw/train-images-idx3-ubyte etc., unzipped"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", "cifar-10-batches-py/data_batch_1..5 and test_batch"),
}


def _torchvision_split(name: str, cfg: Any, split: str) -> Dataset:
    """train/val: a seeded stratified split of the official train set; test: the test set."""
    _check_split(split)
    size, frac = _image_size(cfg), _val_fraction(cfg)
    root = _official_root(name, _root(cfg))
    images, labels, classes = _load_torchvision(name, root, split != "test")
    if split != "test":
        train, val = stratified_split(labels, (frac,), _opt(cfg, "seed", 0))
        idx = train if split == "train" else val
        images, labels = images[idx], labels[idx]
    return _in_memory(images, labels, classes, size)


def _official_root(name: str, root: str | None) -> str:
    """The folder to hand torchvision; a root that points at its data folder is accepted."""
    _, folder, layout = _TORCHVISION[name]
    fix = (
        f"point dataset.root at a folder holding {layout} (torchvision layout), "
        "or use dataset=digits for offline data."
    )
    if not root:
        raise UserError(f"dataset.root is required but not set for dataset={name}; {fix}")
    if not os.path.isdir(root):
        raise UserError(f"dataset.root: no such folder '{root}'; {fix}")
    if os.path.basename(os.path.normpath(root)) == folder:
        return os.path.dirname(os.path.normpath(root))
    return root


@functools.lru_cache(maxsize=4)
def _load_torchvision(name: str, root: str, train: bool) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """uint8 (N, C, H, W) images, labels and class names of an official split, read once."""
    import torchvision.datasets as tvd

    cls, _, layout = _TORCHVISION[name]
    try:
        ds = getattr(tvd, cls)(root, train=train, download=False)
    except RuntimeError as err:
        if "not found" in str(err).lower() or "corrupted" in str(err).lower():
            raise UserError(
                f"dataset.root: no {cls} files under '{root}'; expected {os.path.join(root, layout)} "
                f"(torchvision layout), or use dataset=digits for offline data."
            ) from None
        raise UserError(f"dataset.root: could not read {cls} under '{root}' ({err}); re-extract the files.") from None
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as err:
        raise UserError(f"dataset.root: could not read {cls} under '{root}' ({err}); re-extract the files.") from None
    images = torch.as_tensor(ds.data)
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
    classes = [str(d) for d in range(10)] if name == "mnist" else list(ds.classes)
    return images.to(torch.uint8), torch.as_tensor(ds.targets, dtype=torch.int64), classes


@DATASETS.register("mnist", family="classification")
@DATASETS.register("mnist", family="clip")  # zero-shot and linear-probe scoring of a trained CLIP
def mnist(cfg: Any, split: str) -> Dataset:
    """MNIST from `dataset.root` (torchvision layout: root/MNIST/raw/...)."""
    return _torchvision_split("mnist", cfg, split)


@DATASETS.register("cifar10", family="classification")
@DATASETS.register("cifar10", family="clip")  # zero-shot and linear-probe scoring of a trained CLIP
def cifar10(cfg: Any, split: str) -> Dataset:
    """CIFAR-10 from `dataset.root` (torchvision layout: root/cifar-10-batches-py/...)."""
    return _torchvision_split("cifar10", cfg, split)


# --- image folders, read lazily from disk -------------------------------------------

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class ImageFolderDataset(Dataset):
    """(path, label) pairs decoded on access: folders too large for memory still work."""

    in_channels = 3

    def __init__(self, samples: list[tuple[str, int]], class_names: list[str], image_size: int):
        self.samples = samples
        self.class_names = class_names
        self.image_size = image_size

    @property
    def labels(self) -> torch.Tensor:
        """All labels, without decoding an image (for samplers and class counts)."""
        return torch.tensor([label for _, label in self.samples], dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        path, label = self.samples[index]
        return {"image": _read_image(path, self.image_size), "label": torch.tensor(label, dtype=torch.int64)}


def _read_image(path: str, size: int) -> torch.Tensor:
    """uint8 (3, size, size): decoded, converted to RGB and resized (antialiased) by PIL."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.v2 import functional as TF

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise UserError(
            f"dataset: cannot read image '{path}' ({type(err).__name__}); delete or replace the file."
        ) from None
    img = TF.resize(img, [size, size], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return TF.pil_to_tensor(img)


def _scan(folder: str) -> dict[str, list[str]]:
    """{class: sorted image paths} for each non-hidden subfolder holding images."""
    found = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_dir() and not entry.name.startswith("."):
            paths = sorted(
                os.path.join(d, f)
                for d, _, files in os.walk(entry.path, followlinks=True)
                for f in files
                if f.lower().endswith(_IMAGE_EXTENSIONS) and not f.startswith(".")
            )
            if paths:
                found[entry.name] = paths
    return found


def _folder_splits(root: str, frac: float, seed: int) -> dict[str, dict[str, list[str]]]:
    """{split: {class: paths}} from root/{train,val[,test]} or a seeded split of root.

    With train/ but no val/, train/ itself is split; without test/, test is val.
    """
    has = {s: os.path.isdir(os.path.join(root, s)) for s in SPLITS}
    if not has["train"]:
        return _split_scan(_scan(root), frac, seed)
    splits = {"train": _scan(os.path.join(root, "train"))}
    if has["val"]:
        splits["val"] = _scan(os.path.join(root, "val"))
    else:
        splits = _split_scan(splits["train"], frac, seed)
    splits["test"] = _scan(os.path.join(root, "test")) if has["test"] else splits["val"]
    return splits


def _split_scan(scan: dict[str, list[str]], frac: float, seed: int) -> dict[str, dict[str, list[str]]]:
    """A seeded stratified train/val split of one scan; test is val."""
    pairs = [(c, p) for c, paths in scan.items() for p in paths]
    label_of = {c: i for i, c in enumerate(sorted(scan))}
    labels = torch.tensor([label_of[c] for c, _ in pairs], dtype=torch.long)
    train, val = (_group([pairs[i] for i in idx.tolist()]) for idx in stratified_split(labels, (frac,), seed))
    return {"train": train, "val": val, "test": val}


def _group(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for cls, path in pairs:
        grouped.setdefault(cls, []).append(path)
    return grouped


@DATASETS.register("image_folder", family="classification")
@DATASETS.register("image_folder", family="clip")  # zero-shot and linear-probe scoring of a trained CLIP
def image_folder(cfg: Any, split: str) -> Dataset:
    """Images in torchvision ImageFolder layout (root/<class>/<image>), read lazily.

    root/train and root/val (optionally root/test) are used as given; otherwise root
    is split by `val_fraction` and `seed`. All splits share one sorted class list, so
    label i means the same class everywhere.
    """
    _check_split(split)
    size, frac = _image_size(cfg), _val_fraction(cfg)
    root = _root(cfg)
    layout = "root/<class>/<image>.png (ImageFolder layout), optionally under root/train and root/val"
    if not root:
        raise UserError(f"dataset.root is required but not set; pass dataset.root=PATH with images in {layout}.")
    if not os.path.isdir(root):
        raise UserError(f"dataset.root: no such folder '{root}'; point dataset.root at images in {layout}.")
    splits = _folder_splits(root, frac, _opt(cfg, "seed", 0))
    classes = sorted(set().union(*(s.keys() for s in splits.values())))
    if not classes:
        raise UserError(f"dataset.root: no images found in '{root}'; expected {layout}.")
    _check_classes(root, splits)
    if not splits[split]:
        raise UserError(
            f"dataset.root: the {split} split of '{root}' is empty; add images or raise dataset.val_fraction."
        )
    label_of = {c: i for i, c in enumerate(classes)}
    samples = [(p, label_of[c]) for c in sorted(splits[split]) for p in splits[split][c]]
    if wants_verify(cfg):  # every split's files at once: one list of all unreadable ones
        verify_images(sorted({p for found in splits.values() for paths in found.values() for p in paths}))
    return ImageFolderDataset(samples, classes, size)


def _check_classes(root: str, splits: dict[str, dict[str, list[str]]]) -> None:
    """A class that appears in val or test but not in train cannot be learnt."""
    for name in ("val", "test"):
        unseen = sorted(set(splits[name]) - set(splits["train"]))
        if unseen:
            raise UserError(
                f"dataset.root: {name} classes {', '.join(unseen)} have no train images in '{root}'; "
                f"add them to {os.path.join(root, 'train')} or remove them from {name}."
            )
