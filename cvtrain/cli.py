"""The `cvtrain` command: compose the config with Hydra, then run it.

The command answers `--help` and rejects bad options before torch is imported, and
it turns every user mistake into one line on stderr and a non-zero exit (`--debug`, or
`debug=true`, shows the traceback instead).
"""

from __future__ import annotations

import os
import re
import sys

from cvtrain.errors import Stopped, UserError, error_chain

_LOCAL_RANK_ARG = re.compile(r"^--local[-_]rank(=.*)?$")


def main(argv: list[str] | None = None) -> None:
    """Entry point of `cvtrain` and `python -m cvtrain`."""
    args = list(sys.argv[1:] if argv is None else argv)
    run_reporting_errors(lambda: _use_config_dirs(args))
    if "--help" in args or "-h" in args:  # `task=NAME --help`: what that task accepts
        from cvtrain.config.help import render_help, task_from_args

        text: list[str] = []
        run_reporting_errors(lambda: text.append(render_help(task_from_args(args))), _pop_debug(args))
        try:
            print(text[0])
        except BrokenPipeError:  # `cvtrain --help | head`: the reader has gone, nothing to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    debug = _pop_debug(args)
    args = [a for a in args if not _LOCAL_RANK_ARG.match(a)]  # torchrun's legacy flag
    from cvtrain.worker_exit import in_distributed_job, run_then_exit

    def run() -> None:
        run_reporting_errors(lambda: _compose_and_run(args), debug)

    if in_distributed_job():  # one rank of torchrun or srun: leaves as cvtrain's own workers do
        run_then_exit(run)
    else:
        run()


def _use_config_dirs(args: list[str]) -> None:
    """The user's config folders (`--config-dir DIR`, `hydra.searchpath=[file://DIR]`) join
    cvtrain's for --help and the pre-check, as they will for Hydra."""
    from cvtrain.config.groups import config_dirs_from_args, use_config_dirs

    first, last = config_dirs_from_args(args)
    for folder in [*first, *last]:
        if not os.path.isdir(folder):
            raise UserError(f"config folder '{folder}' does not exist; pass --config-dir DIR of a folder "
                            "holding model/, dataset/, experiment/ ... YAML files.")
    use_config_dirs(first, last)


def _config_dir_flags_first(args: list[str]) -> list[str]:
    """`--config-dir DIR` moved before the overrides: Hydra's parser takes flags only
    there, and `cvtrain model=my_net --config-dir myconf` should work all the same."""
    flags, rest, skip = [], [], False
    for i, arg in enumerate(args):
        if skip:
            skip = False
        elif arg in ("--config-dir", "-cd") and i + 1 < len(args):
            flags += [arg, args[i + 1]]
            skip = True
        elif arg.startswith("--config-dir="):
            flags.append(arg)
        else:
            rest.append(arg)
    return [*flags, *rest]


def run_reporting_errors(body, debug: bool | None = None) -> None:
    """Run `body`; a user's mistake becomes one line on stderr and exit status 2."""
    if debug is None:
        debug = os.environ.get("CVTRAIN_DEBUG", "") not in ("", "0")
    try:
        body()
    except Stopped as stop:  # a signal, honoured after saving: say where, exit 128 + signal
        if str(stop):
            print(f"cvtrain: {stop}", file=sys.stderr)
        sys.exit(stop.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as error:  # a bug keeps its traceback: _exit_with re-raises it
        if debug:
            raise
        _exit_with(error)


def _pop_debug(args: list[str]) -> bool:
    debug = os.environ.get("CVTRAIN_DEBUG", "") not in ("", "0")
    for flag in ("--debug", "debug=true", "debug=True"):
        if flag in args:
            debug = True
            os.environ["CVTRAIN_DEBUG"] = "1"  # distributed workers inherit it
            if flag == "--debug":
                args.remove(flag)
    return debug


def _compose_and_run(args: list[str]) -> None:
    from cvtrain.config.overrides import check_overrides

    args = _config_dir_flags_first(args)
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    check_overrides(overrides)
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us, to be told in one line
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun: one run folder for all ranks
        from cvtrain.config.rundir import STAMP_ENV, mark_shared, run_stamp
        from cvtrain.engine.distributed import agree_on_run_stamp

        agree_on_run_stamp(STAMP_ENV, run_stamp)
        mark_shared()
    _hydra_main(args)


def _hydra_main(args: list[str]) -> None:
    import hydra

    from cvtrain.config.groups import CONF_DIR
    from cvtrain.config.rundir import register_resolvers
    from cvtrain.config.schema import register

    register()
    register_resolvers()

    failures: list[BaseException] = []

    @hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="config")
    def hydra_entry(cfg) -> None:
        from cvtrain.app import run

        try:
            run(cfg)
        except Exception as error:  # kept from Hydra, which would print its own report
            failures.append(error)

    saved = sys.argv
    sys.argv = [saved[0], *args]
    try:
        hydra_entry()
    finally:
        sys.argv = saved
    if failures:
        raise failures[0]


def _exit_with(error: BaseException) -> None:
    from cvtrain.config.explain import explain

    if not _is_user_error(error):
        raise error
    print(f"cvtrain: error: {explain(error)}", file=sys.stderr)
    sys.exit(getattr(error, "exit_code", UserError.exit_code))


def _is_user_error(error: BaseException) -> bool:
    """Mistakes in configs, options, paths and checkpoints; not bugs in cvtrain."""
    kinds: list[type] = [UserError]
    try:
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        kinds += [HydraException, OmegaConfBaseException]
    except ImportError:
        pass
    if isinstance(error, ValueError) and _raised_by_hydra(error):
        return True  # Hydra's own flag checks, e.g. --cfg together with -m
    from cvtrain.config.launcher_errors import launcher_failed

    if launcher_failed(error):
        return True  # a sweep's launcher plugin could not start (no SLURM here, a bad partition)
    return any(isinstance(cause, tuple(kinds)) for cause in error_chain(error))


def _raised_by_hydra(error: BaseException) -> bool:
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame is not None and f"{os.sep}hydra{os.sep}" in frame.tb_frame.f_code.co_filename
