"""`tunewiz chat`, `tunewiz compare`, `tunewiz export`: talk to what you trained.

Model text is always printed literally (rich Text / markup=False): a reply that
contains `[bold red]` prints those characters, it does not turn red.
"""

from __future__ import annotations

import argparse
import sys

from tunewiz.cli.common import add_runs_dir, quiet_libraries
from tunewiz.core.config import finite_float
from tunewiz.core.text import dumps_json, visible

SETTING_FLAGS = (
    ("--temperature", finite_float, "Sampling temperature; 0 means greedy."),
    (
        "--top-p",
        finite_float,
        "Nucleus sampling: keep the smallest set of tokens with this total probability.",
    ),
    ("--top-k", int, "Sample only among the k most likely tokens (0: no limit)."),
    ("--max-new-tokens", int, "Longest reply, in tokens."),
    ("--repetition-penalty", finite_float, "Above 1.0 discourages repeating tokens."),
    ("--seed", int, "Random seed, so a sampled reply can be reproduced."),
)

HELP = """commands:
  /reset              forget the conversation
  /system TEXT        set the system prompt (/system alone clears it)
  /set NAME VALUE     change a setting, e.g. /set temperature 0.2
  /settings           show the settings
  /quit               leave (also Ctrl-D); Ctrl-C stops a reply"""


def register(subparsers) -> None:
    chat = subparsers.add_parser(
        "chat",
        help="Chat with a model or a run's checkpoint (streaming REPL, or one --prompt).",
        description="TARGET is a run (name under --runs-dir, or its folder) or a model "
        "(hub id, local folder, .gguf file, or `default`).",
    )
    chat.add_argument("target", help="A run name or folder, or a model.")
    chat.add_argument("--checkpoint", help="For a run: best, last, final (default), N, or base.")
    chat.add_argument(
        "--compare",
        metavar="base|CHECKPOINT",
        help="Also answer with this (the run's base model, another checkpoint, or another model).",
    )
    chat.add_argument("--system", help="System prompt.")
    add_settings(chat)
    chat.add_argument("--prompt", help="Answer this one message and exit.")
    chat.add_argument("--json", action="store_true", help="With --prompt: print one JSON object.")
    add_common(chat)
    chat.set_defaults(func=cmd_chat)

    compare = subparsers.add_parser(
        "compare",
        help="Run the validation rows (or a prompt file) through a checkpoint and the base; write a report.",
    )
    compare.add_argument("run", help="A run name or folder.")
    compare.add_argument("--checkpoint", help="Side A: best, last, final (default), or N.")
    compare.add_argument(
        "--against", default="base", help="Side B: base (default) or a checkpoint."
    )
    compare.add_argument(
        "--prompts", help="Prompt file: .txt (one per line) or .jsonl with prompt/reference."
    )
    compare.add_argument("--out", help="Report folder (default: RUN/compare/A-vs-B).")
    compare.add_argument("--limit", type=int, help="Only the first N prompts.")
    add_settings(compare, greedy_default=True)
    add_common(compare)
    compare.set_defaults(func=cmd_compare)

    export = subparsers.add_parser(
        "export",
        help="Merge a run's LoRA adapter into its base and save a standalone model folder.",
    )
    export.add_argument("run", help="A run name or folder.")
    export.add_argument(
        "--merge", required=True, metavar="OUT_DIR", help="Folder to write the merged model to."
    )
    export.add_argument("--checkpoint", help="best, last, final (default), or N.")
    export.add_argument(
        "--dtype", default="auto", help="auto (base's own; bf16 for QLoRA), fp32, fp16, bf16."
    )
    export.add_argument("--overwrite", action="store_true", help="Replace OUT_DIR if it has files.")
    export.add_argument(
        "--push-to-hub", metavar="REPO", help="Also upload to this hub repo (needs network)."
    )
    export.add_argument(
        "--runs-dir", default=None, help="Folder that holds the runs (default: runs)."
    )
    export.add_argument(
        "--trust-remote-code", action="store_true", help="Allow Python code shipped with the model."
    )
    export.set_defaults(func=cmd_export)


def add_settings(parser: argparse.ArgumentParser, *, greedy_default: bool = False) -> None:
    for flag, typ, text in SETTING_FLAGS:
        parser.add_argument(flag, type=typ, help=text)
    parser.add_argument(
        "--greedy",
        action=argparse.BooleanOptionalAction,
        default=greedy_default,
        help="Always pick the most likely token (deterministic).",
    )


def add_common(parser: argparse.ArgumentParser) -> None:
    add_runs_dir(parser)
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available).")
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="Allow Python code shipped with the model."
    )


def settings_from(args):
    from tunewiz.core.chat import GenerationSettings

    s = GenerationSettings()
    for flag, _, _ in SETTING_FLAGS:
        name = flag[2:].replace("-", "_")
        value = getattr(args, name)
        if value is not None:
            setattr(s, name, value)
    s.greedy = bool(args.greedy)
    s.check()
    return s


def _load(args, target: str, checkpoint: str | None):
    from tunewiz.core.loading import load_for_chat

    return load_for_chat(
        target,
        checkpoint,
        runs_dir=args.runs_dir,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
    )


def _load_compare(args, main):
    """--compare: the run's base or another checkpoint of the same run; else another model."""
    spec = args.compare
    if main.run_dir is not None:
        return _load(args, str(main.run_dir), spec)
    if spec == "base":
        from tunewiz.core.errors import UserError

        raise UserError(f"{args.target!r} is a model, not a run: it has no base", where="--compare")
    return _load(args, spec, None)


def cmd_chat(args) -> int:
    from rich.console import Console

    from tunewiz.core.chat import ChatSession

    settings = settings_from(args)
    err = Console(stderr=True)
    if args.json and not args.prompt:
        from tunewiz.core.errors import UserError

        raise UserError("--json needs --prompt (one answer as one JSON object)", where="--json")
    quiet_libraries()
    with err.status("loading the model..."):
        main = _load(args, args.target, args.checkpoint)
        other = _load_compare(args, main) if args.compare else None
    sessions = [ChatSession(main, system=args.system, settings=settings)]
    if other is not None:
        sessions.append(ChatSession(other, system=args.system, settings=settings))
    if args.prompt is not None:
        return answer_once(args, sessions)
    return repl(sessions, Console(), err)


def answer_once(args, sessions) -> int:
    from rich.console import Console
    from rich.text import Text

    replies = [s.reply(args.prompt) for s in sessions]
    if args.json:
        out = {
            "target": args.target,
            "checkpoint": sessions[0].loaded.checkpoint,
            "reply": replies[0].text,
            "tokens": replies[0].tokens,
            "seconds": round(replies[0].seconds, 3),
        }
        if len(replies) > 1:
            out["compare"] = sessions[1].loaded.label
            out["compare_reply"] = replies[1].text
            out["compare_tokens"] = replies[1].tokens
        sys.stdout.write(dumps_json(out) + "\n")
        return 0
    console = Console(highlight=False)
    if len(sessions) == 1:
        console.print(Text(visible(replies[0].text)))
        return 0
    for session, reply in zip(sessions, replies, strict=True):
        console.print(Text(f"── {visible(session.loaded.label)}", style="bold cyan"))
        console.print(Text(visible(reply.text)))
    return 0


def repl(sessions, console, err) -> int:
    from rich.text import Text

    from tunewiz.core.errors import UserError

    names = visible(" vs ".join(s.loaded.label for s in sessions))
    console.print(Text(f"chatting with {names}. /help for commands, /quit to leave.", style="dim"))
    while True:
        try:
            line = console.input("[bold green]you>[/] ")
        except EOFError:
            console.print()
            return 0
        except KeyboardInterrupt:
            console.print()
            return 0
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            try:
                if handle_command(text, sessions, console) == "quit":
                    return 0
            except UserError as exc:
                err.print(Text(f"error: {visible(exc)}", style="red"))
            continue
        for session in sessions:
            stream_reply(session, text, console, labelled=len(sessions) > 1)


def stream_reply(session, text: str, console, *, labelled: bool) -> None:
    from rich.text import Text

    label = visible(session.loaded.label) if labelled else "assistant"
    console.print(Text(f"{label}> ", style="bold cyan"), end="")
    before = len(session.notices)
    try:
        for piece in session.stream(text):
            console.print(Text(visible(piece)), end="", soft_wrap=True)
    except KeyboardInterrupt:
        console.print(Text(" [stopped]", style="dim"), end="")
    console.print()
    for note in session.notices[before:]:
        console.print(Text(f"({visible(note)})", style="yellow"))
    reply = session.last_reply
    if reply and reply.seconds > 0:
        console.print(
            Text(f"{reply.tokens} tokens, {reply.tokens / reply.seconds:.1f} tokens/s", style="dim")
        )


def handle_command(text: str, sessions, console) -> str | None:
    from rich.text import Text

    from tunewiz.core.errors import UserError

    cmd, _, rest = text.partition(" ")
    rest = rest.strip()
    if cmd in ("/quit", "/exit", "/q"):
        return "quit"
    if cmd == "/help":
        console.print(Text(HELP))
    elif cmd == "/reset":
        for s in sessions:
            s.reset()
        console.print(Text("(conversation cleared)", style="dim"))
    elif cmd == "/system":
        for s in sessions:
            s.set_system(rest or None)
            s.reset()
        console.print(
            Text(
                "(system prompt " + ("set" if rest else "cleared") + "; conversation cleared)",
                style="dim",
            )
        )
    elif cmd == "/set":
        parts = rest.split()
        if len(parts) != 2:
            raise UserError("usage: /set NAME VALUE, e.g. /set temperature 0.2", where="/set")
        name = parts[0].replace("-", "_")
        for s in sessions:
            s.settings = s.settings.updated(name, parts[1])
        console.print(Text(f"({name} = {getattr(sessions[0].settings, name)})", style="dim"))
    elif cmd == "/settings":
        console.print(settings_table(sessions[0].settings))
        console.print(Text("(change one with /set NAME VALUE)", style="dim"))
    else:
        raise UserError(f"unknown command {cmd}", hint="/help lists the commands")
    return None


def settings_table(settings):
    """The generation settings as a two-column table."""
    from dataclasses import fields

    from rich.table import Table

    table = Table(box=None, header_style="bold")
    table.add_column("setting")
    table.add_column("value", justify="right")
    for f in fields(settings):
        value = getattr(settings, f.name)
        table.add_row(f.name, "-" if value is None else str(value))
    return table


def cmd_compare(args) -> int:
    from rich.console import Console
    from rich.text import Text

    from tunewiz.core.compare import compare_batch

    settings = settings_from(args)
    quiet_libraries()
    err = Console(stderr=True)

    def progress(label: str, done: int, total: int) -> None:
        err.print(Text(f"{label}: {done}/{total}", style="dim"))

    out, rows = compare_batch(
        args.run,
        checkpoint=args.checkpoint,
        against=args.against,
        prompts_file=args.prompts,
        out_dir=args.out,
        settings=settings,
        limit=args.limit,
        runs_dir=args.runs_dir,
        device=args.device,
        progress=progress,
        trust_remote_code=args.trust_remote_code,
    )
    console = Console(highlight=False)
    console.print(
        Text(
            f"{len(rows)} prompts compared; report: {out / 'report.md'} and {out / 'report.jsonl'}"
        )
    )
    return 0


def cmd_export(args) -> int:
    from rich.console import Console
    from rich.text import Text

    from tunewiz.core.export import merge_run

    quiet_libraries()
    out = merge_run(
        args.run,
        args.merge,
        checkpoint=args.checkpoint,
        runs_dir=args.runs_dir,
        dtype=args.dtype,
        overwrite=args.overwrite,
        push_to_hub=args.push_to_hub,
        trust_remote_code=args.trust_remote_code,
    )
    Console(highlight=False).print(
        Text(
            f"merged model saved to {out}; load it with AutoModelForCausalLM.from_pretrained({str(out)!r})"
        )
    )
    return 0
