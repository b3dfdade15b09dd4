"""Run a composed config: check it, pick the mode, build the task and hand it to the engine.

`run` is what the Hydra entry calls in the `cvtrain` process. With trainer.devices > 1
it saves the resolved config in the run folder and starts that many worker processes
(`python -m cvtrain.app RUN_DIR`), each of which reads the saved config, never Hydra.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cvtrain.config.ckpt import checkpoint_paths, describe_ckpt
from cvtrain.config.overrides import check_task_accepts
from cvtrain.config.schema import Mode, typed_config, typed_section
from cvtrain.config.user_code import import_user_modules
from cvtrain.errors import UserError

log = logging.getLogger("cvtrain")

CONFIG_FILE = "config.yaml"


def run(cfg: DictConfig) -> None:
    """The body of `cvtrain`: called once per job, with Hydra's run folder current."""
    from hydra.core.hydra_config import HydraConfig

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    with _discarded_on_failure(run_dir):
        check_complete(cfg)
        check_compatible(cfg)
        overrides = list(HydraConfig.get().overrides.task)
        if cfg.mode == Mode.train and _launched(cfg.trainer) and not _in_distributed_job():
            _launch_distributed(cfg, run_dir)
            return
        execute(cfg, run_dir, overrides)


@contextlib.contextmanager
def _discarded_on_failure(run_dir: Path):
    """A run that fails before writing a checkpoint or metrics removes the folder it
    created: each mistyped path would otherwise leave one more empty run folder among
    the real ones. `discard_if_unused` keeps resumed runs and any folder with results.
    Here, not in the workers: the folder is this process's, and the workers have exited."""
    from cvtrain.config.rundir import created_here, discard_if_unused

    try:
        yield
    except BaseException:
        if created_here(run_dir):
            _close_log_files(run_dir)
            discard_if_unused(run_dir)
        raise


def _close_log_files(run_dir: Path) -> None:
    """Close the handlers writing into `run_dir` (train.log) before it is removed, so no
    open file keeps it alive (Windows) or takes later messages into a deleted file."""
    for handler in list(log.handlers):
        filename = getattr(handler, "baseFilename", None)
        if filename and Path(filename).resolve().is_relative_to(run_dir.resolve()):
            log.removeHandler(handler)
            handler.close()


def check_complete(cfg: DictConfig) -> None:
    """Every mandatory value (`???` in a YAML file) must be given on the command line."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        example = " ".join(f"{key}=VALUE" for key in missing)
        raise UserError(f"{', '.join(missing)} is required but not set; pass it on the command line, e.g. {example}.")


def check_compatible(cfg: DictConfig) -> None:
    """A model family the task does not accept is a config error (caught before torch loads)."""
    check_task_accepts(cfg.task.name, list(cfg.task.families), cfg.model.name, cfg.model.family)


def _in_distributed_job() -> bool:
    from cvtrain.engine.distributed import env_from_os

    return env_from_os().enabled


def _launched(trainer) -> bool:
    """Workers are started (by torch's elastic agent) for more than one process, and for
    restarts: a restarted worker resumes from last.pt. Not inside torchrun's workers:
    torchrun is the launcher there."""
    wanted = trainer.devices > 1 or trainer.nodes > 1 or trainer.max_restarts > 0
    return wanted and "TORCHELASTIC_RUN_ID" not in os.environ


def _launch_distributed(cfg: DictConfig, run_dir: Path) -> None:
    """Start `trainer.devices` workers on this node (`python -m cvtrain.app RUN_DIR`); a
    failed worker's one-line error, or a stop signal, is raised here for the CLI to report."""
    from cvtrain.engine.launcher import launch_workers, python_module_command

    save_config(cfg, run_dir)
    t = cfg.trainer
    launch_workers(python_module_command("cvtrain.app", str(run_dir)), t.devices, t.nodes, t.max_restarts,
                   t.rdzv_endpoint)


def save_config(cfg: DictConfig, run_dir: Path) -> Path:
    """The resolved config, as the run folder's config.yaml, replaced atomically: rank 0
    writes it while the other ranks of the job read it (a half-written file would lose keys)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CONFIG_FILE
    partial = path.with_name(f".{CONFIG_FILE}.{os.getpid()}.tmp")
    OmegaConf.save(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), partial)
    os.replace(partial, path)
    return path


def load_config(path: Path) -> DictConfig:
    """A saved config, typed again by the schema (its task, model and data set by the
    schemas they name)."""
    return typed_config(OmegaConf.load(path))


def execute(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None) -> dict:
    """Train, evaluate or predict in this process (one rank of a job, or the only one)."""
    from cvtrain.engine import checkpoint
    from cvtrain.engine.distributed import env_from_os, shutdown
    from cvtrain.engine.records import setup_logging
    from cvtrain.engine.trainer import Trainer
    from cvtrain.registry import TASKS

    env = env_from_os()
    setup_logging(run_dir, env.is_main)
    state, states = None, {}
    if cfg.mode != Mode.train:
        if not cfg.ckpt:
            raise UserError(f"mode={cfg.mode.value} needs a checkpoint: add ckpt=PATH (a run's checkpoints/best.pt).")
        states = {name: checkpoint.load(path) for name, path in checkpoint_paths(cfg.ckpt).items()}
        state = next(iter(states.values()))  # the primary: its config and weights are the run's
        cfg = merge_checkpoint_config(cfg, state["config"], overrides or [])
    if env.is_main:
        save_config(cfg, run_dir)
    import_user_modules(cfg)  # a user's task, model or data set module registers itself before the lookups
    task = TASKS.get(cfg.task.name)(cfg)
    task.checkpoints = states  # every loaded checkpoint by name, for a task that needs several
    if state is not None:
        task.load_state_dict(state.get("task", {}))
    try:
        trainer = Trainer(cfg, task, run_dir, env)
        if cfg.mode == Mode.train:
            results = trainer.fit()
            _summary(trainer, run_dir)
        else:
            trainer.load_weights(state)
            results = (_evaluate(trainer, task, cfg, run_dir, env.is_main) if cfg.mode == Mode.eval
                       else _predict(trainer, task, cfg, run_dir))
        return results
    finally:
        shutdown()


def merge_checkpoint_config(cfg: DictConfig, saved: dict, overrides: list[str]) -> DictConfig:
    """Evaluate a checkpoint as it was trained: its task, model, loss and data config,
    except the sections this command line overrides."""
    saved_cfg = OmegaConf.create(saved)
    merged = cfg.copy()
    named = {o.lstrip("+~").split("=")[0].split(".")[0].split("@")[0] for o in overrides}
    for section in ("task", "model", "loss", "dataset"):
        if section not in named and section in saved_cfg:
            OmegaConf.set_struct(merged, False)
            if section == "loss":
                merged[section] = OmegaConf.merge(cfg[section], saved_cfg[section])
            else:  # typed by the schema it names, which may not be this command line's default's
                merged[section] = typed_section(section, saved_cfg[section])
            OmegaConf.set_struct(merged, True)
    return merged


def _evaluate(trainer, task, cfg, run_dir: Path, is_main: bool) -> dict:
    results = trainer.evaluate(trainer.eval_batches(cfg.split), f"eval {cfg.split}", cfg.split)
    if is_main:
        (run_dir / "eval.json").write_text(json.dumps({"split": cfg.split, "ckpt": describe_ckpt(cfg.ckpt), **results}, indent=2))
        if cfg.logger.images:
            task.save_outputs(run_dir / "images", f"eval {cfg.split}")
    log.info("eval %s: %s", cfg.split, " ".join(f"{k} {v:.4f}" for k, v in results.items()))
    return results


def _predict(trainer, task, cfg, run_dir: Path) -> list:
    """One record per input; each is printed as `input<TAB>prediction` and saved."""
    task.active = trainer.eval_modules()
    for module in task.active.values():
        module.eval()
    records = task.predict(run_dir / "images")
    with (run_dir / "predictions.jsonl").open("w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    for record in records:
        print(f"{record['input']}\t{record['prediction']}")
    return records


def _summary(trainer, run_dir: Path) -> None:
    name, _ = trainer.task.monitor()
    if trainer.best is not None:
        log.info("best %s %.4f at epoch %s; checkpoints in %s", name, trainer.best, trainer.best_epoch, run_dir / "checkpoints")


def worker_main(argv: list[str]) -> None:
    """Entry of each distributed worker: `python -m cvtrain.app RUN_DIR`."""
    from cvtrain.cli import run_reporting_errors
    from cvtrain.engine.launcher import die_with_launcher
    from cvtrain.worker_exit import run_then_exit

    die_with_launcher()
    run_dir = Path(argv[0])

    def body() -> None:
        execute(load_config(run_dir / CONFIG_FILE), run_dir)

    run_then_exit(lambda: run_reporting_errors(lambda: _reporting_to_launcher(body)))


def _reporting_to_launcher(body) -> None:
    """Run `body`; if it fails, leave its one-line error for cvtrain's launcher, which
    prints it last. A user's error, or a collective that failed because another rank
    died, then exits quietly (the launcher says it once); a bug keeps its traceback."""
    from cvtrain.cli import _is_user_error
    from cvtrain.config.explain import explain
    from cvtrain.engine.launcher import record_failure
    from cvtrain.errors import Stopped

    try:
        body()
    except Stopped:
        raise
    except Exception as error:
        user, secondary = _is_user_error(error), _peer_failed(error)
        if secondary:
            line = f"worker rank {os.environ.get('RANK', '?')}: a collective failed, most likely because another " \
                   f"worker died: {_first_line(error)}"
        else:
            line = explain(error) if user else _bug_line(error)
        quiet = (user or secondary) and os.environ.get("CVTRAIN_DEBUG", "") in ("", "0")
        if record_failure(line, secondary) and quiet:
            sys.exit(getattr(error, "exit_code", UserError.exit_code) if user else 1)
        raise


def _first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:300]}"


def _bug_line(error: BaseException) -> str:
    return f"worker rank {os.environ.get('RANK', '?')} failed with {_first_line(error)} (traceback above)"


def _peer_failed(error: BaseException) -> bool:
    """A collective's error about a peer that went away (gloo: connection closed or reset)."""
    import torch.distributed as dist

    from cvtrain.errors import error_chain

    text = " ".join(str(e) for e in error_chain(error)).lower()
    return any(isinstance(e, dist.DistError) for e in error_chain(error)) or any(
        words in text for words in ("connection closed by peer", "connection reset by peer", "broken pipe"))


if __name__ == "__main__":
    worker_main(sys.argv[1:])
