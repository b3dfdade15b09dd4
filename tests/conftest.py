"""Shared fixtures: a session-wide ShapesWorld cache and ways to run the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

# Small ShapesWorld splits: enough to learn from, quick to render.
SMALL_DATA = ["dataset.num_train=1024", "dataset.num_val=256", "dataset.num_test=256"]


@pytest.fixture(scope="session", autouse=True)
def shapes_cache(tmp_path_factory) -> Path:
    """One ShapesWorld cache for the whole session, shared with subprocesses."""
    cache = tmp_path_factory.getbasetemp() / "shapes-cache"
    cache.mkdir(exist_ok=True)
    os.environ["CVTRAIN_CACHE"] = str(cache)
    return cache


def run_cli(args: list[str], cwd: Path, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m cvtrain ARGS` in a subprocess, as a user runs it."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    full_env.pop("CVTRAIN_RUN_STAMP", None)
    return subprocess.run(
        [sys.executable, "-m", "cvtrain", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env
    )


def cli_in_process(args: list[str]) -> None:
    """`cvtrain ARGS` in this process (faster: torch is already imported)."""
    from cvtrain.cli import main

    os.environ.pop("CVTRAIN_RUN_STAMP", None)
    main(args)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def compose_cfg(overrides: list[str]):
    """The composed config for `overrides`, as the CLI would see it."""
    from hydra import compose, initialize_config_dir

    from cvtrain.config.groups import CONF_DIR
    from cvtrain.config.rundir import register_resolvers
    from cvtrain.config.schema import register

    register()
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name="config", overrides=overrides)
