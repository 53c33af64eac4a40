"""`tunewiz train | runs | logs | stop | resume`: start runs and look after them, headless.

Every config option is also a flag (`training.max_steps` -> `--max-steps`), generated
from the config dataclasses in tunewiz.core.config, so the help lines and choices are the same as in the wizard.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from tunewiz.cli.common import add_runs_dir
from tunewiz.core.config import Option, RunConfig, Source, flag_name, options
from tunewiz.core.text import dumps_json, visible


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="Start a training run (detached: it survives closing the terminal).",
        description="Check the options, model and data (its first rows), then start the run in the "
        "background and print its name; the run tokenizes the data itself (state `preparing`). "
        "Options come from CONFIG.toml, a --preset, and flags (flags win).",
    )
    p.add_argument("config", nargs="?", metavar="CONFIG.toml", help="A run config file (optional).")
    p.add_argument(
        "--preset",
        help="Start from a training preset: sample-demo, quick-test, standard or thorough.",
    )
    p.add_argument(
        "--foreground", action="store_true", help="Stream the run's log here until it ends."
    )
    add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("runs", help="List runs with state, progress, loss and ETA.")
    p.add_argument("--json", action="store_true", help="Machine-readable output.")
    add_runs_dir(p)
    p.set_defaults(func=cmd_runs)

    p = subparsers.add_parser("logs", help="Show a run's log (train.log).")
    p.add_argument("run", metavar="RUN", help="Run name or folder.")
    p.add_argument("-f", "--follow", action="store_true", help="Keep printing as the run goes on.")
    p.add_argument("-n", "--lines", type=int, default=50, help="How many last lines to show.")
    add_runs_dir(p)
    p.set_defaults(func=cmd_logs)

    p = subparsers.add_parser("stop", help="Stop a run gracefully (it saves a checkpoint first).")
    p.add_argument("run", metavar="RUN", help="Run name or folder.")
    p.add_argument("--wait", action="store_true", help="Wait until the run has stopped.")
    add_runs_dir(p)
    p.set_defaults(func=cmd_stop)

    p = subparsers.add_parser(
        "resume", help="Continue a stopped or failed run from its last checkpoint."
    )
    p.add_argument("run", metavar="RUN", help="Run name or folder.")
    p.add_argument(
        "--foreground", action="store_true", help="Stream the run's log here until it ends."
    )
    add_runs_dir(p)
    p.set_defaults(func=cmd_resume)


# -- flags from the config dataclasses ----------------------------------------


def _help(option: Option) -> str:
    return option.help.replace("%", "%%")  # argparse formats help with %


def add_config_flags(p: argparse.ArgumentParser) -> None:
    top = p.add_argument_group("run")
    for option in options(None):
        top.add_argument(
            flag_name(option.name),
            dest=f"cfg:{option.dotted}",
            default=None,
            metavar=option.name.upper(),
            help=_help(option),
        )
    for section in RunConfig.SECTIONS:
        group = p.add_argument_group(section)
        for option in options(section):
            kw: dict = {"dest": f"cfg:{option.dotted}", "default": None, "help": _help(option)}
            if option.kind is bool:
                # `--gradient-checkpointing` alone means true; `--gradient-checkpointing false` too.
                kw.update(nargs="?", const="true", metavar="true|false")
            elif option.choices:
                kw["choices"] = list(option.choices)
            else:
                kw["metavar"] = option.name.upper()
            group.add_argument(flag_name(option.name), **kw)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Defaults < preset < CONFIG.toml < flags, merged first and checked once, whole: a flag
    can fix a bad value in the file, and what is still wrong names the file or the flag."""
    from tunewiz.core.config import read_toml

    sources = []
    if getattr(args, "preset", None):
        from tunewiz.core.train.presets import load_preset

        sources.append(Source(f"preset {args.preset}", load_preset(args.preset)))
    if getattr(args, "config", None):
        # Only the keys the file sets, so a preset's values survive what the file leaves out.
        sources.append(Source(args.config, read_toml(args.config)))
    flags: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if dest.startswith("cfg:") and value is not None:
            section, _, name = dest[4:].rpartition(".")
            (flags.setdefault(section, {}) if section else flags)[name] = value
    if flags:
        sources.append(Source("flags", flags, flags=True))
    return RunConfig.from_sources(*sources)


# -- commands -----------------------------------------------------------------


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def cmd_train(args: argparse.Namespace) -> int:
    from tunewiz.core.train import launch

    # tunewiz.cli.main ignores SIGHUP for `train`: a dead terminal only loses the messages below.
    cfg = config_from_args(args)
    _say("checking the model, data and options ...", style="dim")
    run_dir = launch(cfg, foreground=False)
    _say_started(run_dir)
    if args.foreground:
        return _follow_here(run_dir)
    return 0


def _follow_here(run_dir) -> int:
    """Follow the log until the run ends; a hang-up now ends only the following, not the run."""
    import signal

    from tunewiz.core.train.follow import follow

    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    return _exit_code(run_dir, follow(run_dir))


def _say(text, style: str = "") -> None:
    """Print, unless the terminal is gone (EIO after a hang-up): the run goes on regardless."""
    try:
        _console().print(text, style=style)
    except OSError:
        pass


def _say_started(run_dir) -> None:
    from rich.text import Text

    from tunewiz.core import runs

    st = runs.read_status(run_dir)
    _say(
        Text.assemble(("started run ", "green"), (run_dir.name, "bold"), f"  (pid {st.get('pid')})")
    )
    _say(
        Text(
            f"  folder:  {run_dir}\n  follow:  tunewiz logs {run_dir.name} -f\n"
            f"  stop:    tunewiz stop {run_dir.name}\n"
            "  the run prepares (tokenizes) the data first: `tunewiz runs` shows how far it is"
        )
    )


def cmd_resume(args: argparse.Namespace) -> int:
    from rich.text import Text

    from tunewiz.core import runs
    from tunewiz.core.train import resume

    run_dir = runs.resolve_run(args.run, args.runs_dir)
    resume(run_dir)
    _console().print(
        Text.assemble(
            ("resumed run ", "green"),
            (run_dir.name, "bold"),
            f"  from {runs.read_status(run_dir).get('resumed_from')}",
        )
    )
    if args.foreground:
        return _follow_here(run_dir)
    return 0


def _exit_code(run_dir, state: str) -> int:
    from rich.text import Text

    from tunewiz.core import runs

    info = runs.read_run(run_dir)
    if state in ("finished", "stopped"):
        _console().print(Text(f"run {info.name} {state} at step {info.step}"))
        return 0
    _console(stderr=True).print(Text(f"run {info.name} {state}: {info.error}", style="red"))
    return 1


def cmd_runs(args: argparse.Namespace) -> int:
    from rich.table import Table
    from rich.text import Text

    from tunewiz.core import runs

    infos = runs.list_runs(args.runs_dir)
    if args.json:
        print(dumps_json([i.to_json() for i in infos], indent=2, default=str))
        return 0
    if not infos:
        _console().print(f"no runs in {args.runs_dir}/ yet: start one with `tunewiz train`")
        return 0
    table = Table(box=None, header_style="bold")
    # At 80 columns the numbers keep their width and a long run name wraps whole onto a
    # second line (cut, names that share a model prefix all read the same).
    table.add_column("run", overflow="fold", min_width=16)
    for col in ("state", "progress", "loss", "best eval", "elapsed", "ETA", "method"):
        table.add_column(
            col, justify="left" if col in ("state", "method") else "right", no_wrap=True
        )
    colours = {
        "running": "green",
        "finished": "cyan",
        "failed": "red",
        "died": "red",
        "damaged": "red",
        "stopped": "yellow",
        "preparing": "yellow",
    }
    for i in infos:
        progress = i.progress_text()
        table.add_row(
            Text(visible(i.name, newlines=False)),
            Text(i.state, style=colours.get(i.state, "")),
            progress,
            runs.format_loss(i.last_loss),
            runs.format_loss(i.best_eval_loss),
            runs.format_duration(i.elapsed_s),
            runs.format_duration(i.eta_s),
            Text(visible(i.method, newlines=False)),
        )
    console = _console()
    console.print(table)
    for i in infos:
        name = visible(i.name, newlines=False)
        if i.state in ("failed", "died") and i.error:
            console.print(Text(f"{name}: {visible(i.error)}", style="red"))
        elif i.note:
            console.print(Text(f"{name}: {visible(i.note)}", style="yellow"))
        if i.damaged:
            console.print(Text(f"{name}: damaged: {visible(i.damaged)}", style="red"))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from tunewiz.core import runs

    run_dir = runs.resolve_run(args.run, args.runs_dir)
    if not args.follow:
        for line in runs.tail_log(run_dir, args.lines):
            sys.stdout.write(visible(line) + "\n")
        return 0
    # Follow from the last lines on; Ctrl-C only stops following (the run goes on).
    path = run_dir / runs.LOG_FILE
    for line in runs.tail_log(run_dir, args.lines):
        sys.stdout.write(visible(line) + "\n")
    sys.stdout.flush()
    offset = path.stat().st_size if path.exists() else 0
    try:
        while True:
            if path.exists():
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
                offset += len(chunk)
                if chunk:
                    text = chunk.decode("utf-8", errors="replace").replace("\r\n", "\n")
                    sys.stdout.write(visible(text.replace("\r", "\n")))  # as tail_log splits
                    sys.stdout.flush()
            if not chunk_pending(run_dir, path, offset):
                return 0
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0


def chunk_pending(run_dir, path, offset) -> bool:
    """Keep following while the run lives or output is still unread."""
    from tunewiz.core import runs

    if runs.read_run(run_dir).state in runs.LIVE_STATES:
        return True
    return path.exists() and path.stat().st_size > offset


def cmd_stop(args: argparse.Namespace) -> int:
    from rich.text import Text

    from tunewiz.core import runs

    run_dir = runs.resolve_run(args.run, args.runs_dir)
    runs.stop_run(run_dir)
    console = _console()
    console.print(Text(f"asked {run_dir.name} to stop: it saves a checkpoint, then exits"))
    if args.wait:
        while runs.read_run(run_dir).state in runs.LIVE_STATES:
            time.sleep(0.5)
        info = runs.read_run(run_dir)
        console.print(Text(f"{info.name}: {info.state} at step {info.step}"))
    return 0
