"""Reliability: errors from DataLoader workers, dataset.verify, unsafe and stale checkpoints.

- a user's mistake met in a data-loader worker (a corrupt image) is told in the same one
  line as in the main process, while a bug raised there keeps its traceback;
- dataset.verify=true decodes every image before training and lists all unreadable ones;
- a checkpoint whose pickle would call os.system is refused, named, and never run;
- the temporary file of a killed checkpoint write is removed by the next save.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import torch
from conftest import cli_in_process, compose_cfg, run_cli
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from cvtrain.data.image_files import unreadable_images, verify_images
from cvtrain.engine import checkpoint
from cvtrain.errors import UserError
from cvtrain.registry import DATASETS

# --- helpers ------------------------------------------------------------------------


def write_image_folder(root: Path, per_class: int = 4) -> None:
    """root/{train,val}/{red,blue}/*.png: small solid images."""
    for split, count in (("train", per_class), ("val", 2)):
        for name, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.new("RGB", (12, 10), colour).save(folder / f"{i}.png")


def truncated_jpeg(path: Path) -> None:
    """A JPEG cut in half: its header opens, its pixels do not decode."""
    noise = torch.randint(0, 256, (48, 48, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    buffer = io.BytesIO()
    Image.fromarray(noise.numpy()).save(buffer, format="JPEG", quality=90)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("cvtrain: error: "), stderr
    assert "Traceback" not in stderr and "Caught" not in stderr and "worker process" not in stderr, stderr
    return lines[0]


def exit_code_and_stderr(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        cli_in_process(args)
    return exit_.value.code, capsys.readouterr().err


# --- errors raised in DataLoader workers ---------------------------------------------


def test_a_corrupt_image_read_by_a_worker_is_one_line_through_the_cli(tmp_path):
    root = tmp_path / "images"
    write_image_folder(root)
    broken = root / "train" / "red" / "broken.jpg"
    broken.write_bytes(b"this is not a JPEG at all " * 20)
    result = run_cli(["task=classification", "dataset=image_folder", f"dataset.root={root}", "dataset.num_workers=1",
                      "dataset.image_size=32", "dataset.batch_size=2", "dataset.eval_batch_size=2", "trainer.epochs=1",
                      "trainer.progress=none", "logger.images=false", f"hydra.run.dir={tmp_path / 'run'}"],
                     cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    line = one_error_line(result.stderr)
    assert str(broken) in line and "cannot read image" in line, line


class _Failing(Dataset):
    """Item 1 raises `error`; the others are fine."""

    def __init__(self, error: Exception):
        self.error = error

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: int):
        if i == 1:
            raise self.error
        return torch.tensor(i)


def _worker_error(error: Exception) -> Exception:
    """What the main process receives when a DataLoader worker raises `error`."""
    loader = DataLoader(_Failing(error), batch_size=1, num_workers=1)
    with pytest.raises(type(error)) as caught:
        list(loader)
    return caught.value


def test_a_user_error_from_a_worker_is_told_as_the_worker_raised_it(capsys):
    from cvtrain.cli import _exit_with

    message = "dataset: cannot read image '/data/x.jpg' (UnidentifiedImageError); delete or replace the file."
    received = _worker_error(UserError(message))
    assert "Original Traceback" in str(received), "torch wraps the worker's traceback into the message"
    with pytest.raises(SystemExit) as exit_:
        _exit_with(received)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"cvtrain: error: {message}\n"


def test_a_user_error_raised_from_another_error_in_a_worker_keeps_its_own_message():
    from cvtrain.config.explain import explain

    def nested() -> UserError:
        try:
            raise OSError("disk says no")
        except OSError as err:
            try:
                raise UserError("dataset: image 'a.png' cannot be read (disk says no); replace the file.") from err
            except UserError as user:
                return user

    received = _worker_error(nested())
    assert "disk says no" in str(received) and "direct cause" in str(received)
    assert explain(received) == "dataset: image 'a.png' cannot be read (disk says no); replace the file."


def test_a_bug_in_a_worker_keeps_its_traceback():
    from cvtrain.cli import _exit_with

    received = _worker_error(ZeroDivisionError("division by zero in __getitem__"))
    with pytest.raises(ZeroDivisionError) as caught:
        _exit_with(received)
    assert caught.value is received
    assert "Original Traceback" in str(caught.value) and "__getitem__" in str(caught.value)


# --- dataset.verify ----------------------------------------------------------------------


def test_verify_lists_every_unreadable_image_in_one_line(tmp_path, capsys):
    root = tmp_path / "images"
    write_image_folder(root)
    garbage = root / "train" / "blue" / "garbage.png"
    garbage.write_bytes(os.urandom(300))
    truncated = root / "val" / "red" / "truncated.jpg"
    truncated_jpeg(truncated)
    with Image.open(truncated) as image:
        assert image.size == (48, 48), "the truncated file's header still opens: only decoding finds it"

    code, err = exit_code_and_stderr(["task=classification", "dataset=image_folder", f"dataset.root={root}",
                                      "dataset.verify=true", "dataset.num_workers=0", "trainer.epochs=1",
                                      "trainer.progress=none", f"hydra.run.dir={tmp_path / 'run'}"], capsys)
    assert code == 2
    line = one_error_line(err)
    assert "dataset.verify: 2 of" in line, line
    assert str(garbage) in line and str(truncated) in line, line
    assert not (tmp_path / "run" / "checkpoints").exists(), "verification fails before any training"


def test_without_verify_a_data_set_is_built_without_decoding(tmp_path):
    root = tmp_path / "images"
    write_image_folder(root)
    (root / "train" / "blue" / "garbage.png").write_bytes(b"garbage")
    cfg = compose_cfg(["task=classification", "dataset=image_folder", f"dataset.root={root}"]).dataset
    assert cfg.verify is False
    assert len(DATASETS.get("image_folder", ("classification",))(cfg, "train")) == 9


def test_verify_names_the_first_few_and_counts_the_rest(tmp_path):
    paths = []
    for i in range(8):
        paths.append(tmp_path / f"bad{i}.png")
        paths[-1].write_bytes(b"no image here")
    good = tmp_path / "good.png"
    Image.new("RGB", (4, 4)).save(good)
    missing = tmp_path / "missing.png"
    bad = unreadable_images([good, *paths, missing])
    assert [p for p, _ in bad] == [*paths, missing]
    assert dict(bad)[missing] == "missing" and dict(bad)[paths[0]] == "not an image"
    with pytest.raises(UserError) as caught:
        verify_images([good, *paths, missing])
    message = str(caught.value)
    assert message.startswith("dataset.verify: 9 of 10 images cannot be read: "), message
    assert "\n" not in message and [f"bad{i}.png" in message for i in range(8)] == [True] * 5 + [False] * 3
    assert ", ... (4 more)" in message, message


def _corrupt(files: list[Path], count: int) -> list[Path]:
    chosen = sorted(files)[:count]
    for path in chosen:
        truncated_jpeg(path) if path.suffix == ".jpg" else path.write_bytes(b"corrupt")
    return chosen


@pytest.mark.parametrize("family", ["detection", "instance_segmentation", "segmentation"])
def test_verify_covers_coco(tmp_path, family):
    from dense_fixtures import write_coco_fixture

    fx = write_coco_fixture(tmp_path, n=4, splits={"val": "val2017"}, image_format="jpg")
    bad = _corrupt(list((tmp_path / "val2017").iterdir()), 2)
    builder = DATASETS.get("coco", (family,))
    assert len(builder(compose_cfg(["task=classification", *fx.overrides]).dataset, "val")) == 4
    with pytest.raises(UserError) as caught:
        builder(compose_cfg(["task=classification", *fx.overrides, "dataset.verify=true"]).dataset, "val")
    assert "2 of 4 images" in str(caught.value) and all(str(p) in str(caught.value) for p in bad)


@pytest.mark.parametrize("family", ["detection", "segmentation"])
def test_verify_covers_voc(tmp_path, family):
    from dense_fixtures import write_voc_fixture

    fx = write_voc_fixture(tmp_path, n=3, splits={"train": "train"})
    bad = _corrupt(list((tmp_path / "JPEGImages").iterdir()), 1)
    if family == "segmentation":
        bad += _corrupt(list((tmp_path / "SegmentationClass").iterdir()), 1)
    cfg = compose_cfg(["task=classification", *fx.overrides, "dataset.verify=true"]).dataset
    with pytest.raises(UserError) as caught:
        DATASETS.get("voc", (family,))(cfg, "train")
    assert f"{len(bad)} of" in str(caught.value) and all(str(p) in str(caught.value) for p in bad)


def test_verify_covers_coco_captions(tmp_path):
    images = []
    for i in range(20):
        Image.new("RGB", (8, 8), (i, i, i)).save(tmp_path / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png"})
    annotations = [{"image_id": i, "caption": "a grey square"} for i in range(20)]
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({"images": images, "annotations": annotations}))
    overrides = ["task=captioning", "dataset=coco_captions", f"dataset.root={tmp_path}",
                 f"dataset.annotations={captions}"]
    builder = DATASETS.get("coco_captions", ("captioning",))
    assert len(builder(compose_cfg([*overrides, "dataset.verify=true"]).dataset, "train")) == 18
    _corrupt([tmp_path / f"{i}.png" for i in range(20)], 20)
    with pytest.raises(UserError) as caught:
        builder(compose_cfg([*overrides, "dataset.verify=true"]).dataset, "train")
    assert "20 of 20 images" in str(caught.value), "all splits at once; files changed since a check are read again"


# --- checkpoints ---------------------------------------------------------------------------


class _System:
    """A pickle payload that calls os.system on loading (posix.system, or nt.system on Windows)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _evil_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "MARKER"
    evil = tmp_path / "EVIL.pt"
    torch.save({"format": 1, "models": {}, "payload": _System(f"touch '{marker}'")}, evil)
    return evil, marker


def test_a_pickle_that_calls_os_system_is_refused_and_named(tmp_path):
    evil, marker = _evil_checkpoint(tmp_path)
    with pytest.raises(UserError) as caught:
        checkpoint.load(evil)
    message = str(caught.value)
    assert "\n" not in message and f"checkpoint '{evil}' refused: it would import" in message
    assert f"{os.system.__module__}.system" in message, message  # posix.system (nt.system on Windows)
    assert not marker.exists(), "loading must never run code from the file"


def test_the_cli_refuses_the_os_system_pickle_in_one_line(tmp_path):
    evil, marker = _evil_checkpoint(tmp_path)
    result = run_cli(["task=classification", "mode=eval", f"ckpt={evil}", f"paths.output_dir={tmp_path / 'out'}"],
                     cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    line = one_error_line(result.stderr)
    assert "refused" in line and f"{os.system.__module__}.system" in line and str(evil) in line, line
    assert not marker.exists() and not (tmp_path / "MARKER").exists()


@pytest.mark.parametrize("wording, named", [
    ("Unsupported global: GLOBAL posix.system was not an allowed global by default. Please use ...", "posix.system"),
    ("Trying to load unsupported GLOBAL posix.system whose module posix is blocked.", "posix.system"),
    ("WeightsUnpickler error: unsupported global nt.system is blocked", "nt.system"),
    ("Unsupported global: GLOBAL getattr was not an allowed global by default.", "getattr"),
    ("Trying to call reduce for unrecognized function <built-in function system>", "system"),
    ("Can only build Tensor, Parameter, OrderedDict or types allowlisted via `add_safe_globals`, "
     "but got <class 'evil.Thing'>", "evil.Thing"),
])
def test_refusals_are_recognised_across_torch_wordings(wording, named):
    import pickle

    message = str(checkpoint._refusal(Path("x.pt"), pickle.UnpicklingError(f"Weights only load failed.\n\n{wording}")))
    assert message.startswith(f"checkpoint 'x.pt' refused: it would import {named} ("), message
    garbage = pickle.UnpicklingError("WeightsUnpickler error: Unsupported operand 110")
    assert "corrupt or truncated" in str(checkpoint._refusal(Path("x.pt"), garbage))


def test_the_next_save_removes_a_killed_writes_temporary_file(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save_atomic({"format": 1, "models": {"w": torch.zeros(2)}}, path)
    stale = tmp_path / ".last.pt.k1l3d.tmp"  # what a SIGKILL during torch.save leaves behind
    stale.write_bytes(b"half a checkpoint")
    keep = [tmp_path / name for name in ("notes.tmp", ".best.pt.abcd.tmp", "last.pt.bak", ".last.pt.txt")]
    for other in keep:
        other.write_bytes(b"not ours")
    checkpoint.save_atomic({"format": 1, "models": {"w": torch.ones(2)}}, path)
    assert not stale.exists()
    assert all(other.read_bytes() == b"not ours" for other in keep), "only last.pt's leftovers go"
    assert sorted(os.listdir(tmp_path)) == sorted(["last.pt", *(p.name for p in keep)])
    assert torch.equal(checkpoint.load(path)["models"]["w"], torch.ones(2))
