"""A built wheel carries the configs: installed away from the source tree, `cvtrain --help`
lists every group and a config composes from the packaged cvtrain/conf/."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "setup.py", "README.md", "cvtrain", "conf")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources (the checkout stays free of build/),
    installed into a folder of its own."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(src)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    wheels = list((tmp / "dist").glob("cvtrain-*.whl"))
    assert len(wheels) == 1
    installed = subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp / "site"), str(wheels[0])],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    return tmp / "site"


def _run(site: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(site))
    env.pop("CVTRAIN_CONFIG_DIRS", None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_the_installed_wheel_lists_the_groups_without_the_source_tree_or_torch(site, tmp_path):
    code = (
        "import sys, io, contextlib, cvtrain; from cvtrain.cli import main\n"
        "from cvtrain.config.groups import CONF_DIR\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf): main(['--help'])\n"
        "assert 'torch' not in sys.modules, 'help imported torch'\n"
        "print(cvtrain.__file__); print(CONF_DIR); print(buf.getvalue())"
    )
    result = _run(site, ["-c", code], tmp_path)
    assert result.returncode == 0, result.stderr
    module, conf, text = result.stdout.split("\n", 2)
    assert Path(module).is_relative_to(site) and Path(conf) == site / "cvtrain" / "conf", "the wheel's, not the checkout's"
    for group in ("task", "model", "dataset", "loss", "optimizer", "scheduler", "trainer", "logger"):
        assert f"  {group}:" in text
    for option in ("classification", "resnet18", "digits", "cross_entropy", "adamw", "detection_fcos"):
        assert re.search(rf"^    {option}\b", text, re.M), option
    via_module = _run(site, ["-m", "cvtrain", "--help"], tmp_path)
    assert via_module.returncode == 0 and "Config groups (GROUP=OPTION):" in via_module.stdout


def test_the_installed_wheel_composes_configs_and_refuses_bad_ones(site, tmp_path):
    shown = _run(site, ["-m", "cvtrain", "experiment=detection_fcos", "--cfg", "job"], tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "name: fcos" in shown.stdout and "schema: detection" in shown.stdout
    bad = _run(site, ["-m", "cvtrain", "task=classification", "task.coco_backend=x"], tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("cvtrain: error: ") and "task.coco_backend" in bad.stderr
