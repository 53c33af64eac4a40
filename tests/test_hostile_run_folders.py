"""Every reader of a run folder against every kind of damage (issue 9, "readers that survive").

A run folder is written by another process, maybe another version, maybe half-written when
the machine died, maybe edited by hand. Each file a run holds is corrupted in each way of
the table below, next to a healthy run, and every reader is run on it: core's functions,
`tunewiz runs [--json]` and `logs`, the live panel's watchers, and the wizard's start screen
and live panel through Pilot. The damaged run must show as damaged (with why) or simply with
less data; the healthy run must still be listed; nothing may raise; and nothing the files
hold may reach the terminal as a control character.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.tui_pilot import screen_text
from tunewiz.cli import main as cli_main
from tunewiz.core import runs
from tunewiz.core.checkpoints import (
    last_complete_checkpoint,
    list_checkpoints,
    resolve_checkpoint,
)
from tunewiz.core.config import RunConfig
from tunewiz.core.errors import UserError
from tunewiz.tui.screens.train_live import TrainLiveScreen
from tunewiz.tui.widgets.run_feed import (
    CheckpointWatcher,
    LogFollower,
    StatusWatcher,
)

ESC = "\x1b"
HOSTILE_TEXT = (
    "\x1b]52;c;cm0gLXJmIH4=\x07\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\\x1b[2J\x9b31m\x07"
)
GOOD_STATUS = {
    "state": "finished",
    "pid": 1,
    "host": socket.gethostname(),
    "step": 4,
    "total_steps": 4,
    "epoch": 2.0,
    "last_loss": 1.25,
    "best_eval_loss": 1.5,
    "started_at": 1000.0,
    "ended_at": 1060.0,
    "method": "lora",
    "model": "tiny",
}
GOOD_ROWS = [
    {"step": s, "epoch": s / 2, "loss": 2.0 - s / 10, "elapsed_s": s * 1.0} for s in (1, 2, 3, 4)
]


def good_state(step: int) -> dict:
    return {"global_step": step, "epoch": step / 2, "log_history": GOOD_ROWS[:step]}


def make_run(runs_dir: Path, name: str) -> Path:
    """A complete finished run as the worker leaves it (weights are empty files: no reader loads them)."""
    run = runs_dir / name
    run.mkdir(parents=True)
    cfg = RunConfig(name=name, runs_dir=str(runs_dir))
    cfg.model.model = "tiny"
    cfg.save(run / "config.toml")
    (run / "status.json").write_text(json.dumps(GOOD_STATUS))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GOOD_ROWS))
    (run / "train.log").write_text("loading\nstep 4 loss 1.6\ndone\n")
    (run / "estimate.json").write_text(json.dumps({"total_bytes": 3_000_000_000}))
    for step in (2, 4):
        ckpt = run / f"checkpoint-{step}"
        ckpt.mkdir()
        (ckpt / "adapter_config.json").write_text("{}")
        (ckpt / "adapter_model.safetensors").write_bytes(b"")
        (ckpt / "trainer_state.json").write_text(json.dumps(good_state(step)))
    (run / "final").mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json"):
        (run / "final" / name).write_text("{}")
    (run / "final" / "trainer_state.json").write_text(json.dumps(good_state(4)))
    return run


# -- the corruptions: each turns a good file's bytes into damaged bytes (None: remove it) --

WRONG_TYPES = {
    "state": ["running"],
    "pid": "12",
    "host": 5,
    "step": {"a": 1},
    "total_steps": True,
    "epoch": "two",
    "last_loss": [1.0],
    "best_eval_loss": {},
    "started_at": "yesterday",
    "ended_at": [],
    "error": 42,
    "method": None,
    "model": ["x"],
    "global_step": "4",
    "log_history": {"step": 1},
    "best_model_checkpoint": 7,
    "loss": "low",
    "eval_loss": [1],
}
NON_FINITE = (
    '{"state": "failed", "step": NaN, "total_steps": Infinity, "epoch": -Infinity,'
    ' "last_loss": "nan", "best_eval_loss": NaN, "started_at": Infinity, "ended_at": NaN,'
    ' "pid": NaN, "global_step": Infinity, "loss": NaN, "eval_loss": -Infinity,'
    ' "log_history": [{"step": NaN, "loss": Infinity, "eval_loss": NaN, "epoch": NaN}],'
    ' "total_bytes": Infinity, "elapsed_s": NaN}'
)
HUGE = (
    '{"state": "running", "step": 1e308, "total_steps": '
    + "9" * 400
    + ', "pid": '
    + "9" * 30
    + ', "epoch": 1e308, "last_loss": -1e308, "started_at": 1e308,'
    ' "elapsed_before_s": 1e308, "first_step_at": -1e308, "start_step": -5,'
    ' "global_step": 1e300, "log_history": [{"step": 1e300, "loss": 1e308}],'
    ' "total_bytes": 1e300, "total_gib": 1e300}'
)
ESCAPES = json.dumps(
    {
        "state": "failed",
        "error": HOSTILE_TEXT,
        "method": HOSTILE_TEXT,
        "model": HOSTILE_TEXT,
        "host": socket.gethostname(),
        "log_history": [{"step": 1, "loss": 1.0, "note": HOSTILE_TEXT}],
        "best_model_checkpoint": HOSTILE_TEXT,
    }
)

CORRUPTIONS: dict[str, Callable[[bytes], bytes | None]] = {
    "missing": lambda good: None,
    "empty": lambda good: b"",
    "truncated": lambda good: good[: len(good) // 2],
    "binary": lambda good: bytes(range(256)) * 8,
    "not_utf8": lambda good: good.replace(b'"', b'"\xff\xfe', 1),
    "nul_bytes": lambda good: b"\x00" * 1000,
    "list": lambda good: b"[1, 2, 3]",
    "string": lambda good: b'"finished"',
    "null": lambda good: b"null",
    "number": lambda good: b"NaN",
    "wrong_types": lambda good: json.dumps(WRONG_TYPES).encode(),
    "non_finite": lambda good: NON_FINITE.encode(),
    "huge_numbers": lambda good: HUGE.encode(),
    "deep_nesting": lambda good: b"[" * 200_000 + b"]" * 200_000,
    "escapes": lambda good: ESCAPES.encode(),
    "lines_of_garbage": lambda good: good + b"\xff\xfe{not json\n[1]\n\x1b[31m\n" + good,
}
# Where each file lives in a run folder; trainer_state.json is damaged in every checkpoint.
FILES = {
    "status.json": ["status.json"],
    "metrics.jsonl": ["metrics.jsonl"],
    "trainer_state.json": [
        "checkpoint-2/trainer_state.json",
        "checkpoint-4/trainer_state.json",
        "final/trainer_state.json",
    ],
    "estimate.json": ["estimate.json"],
    "train.log": ["train.log"],
}
CASES = [(f, c) for f in FILES for c in CORRUPTIONS]


def damage(run: Path, file: str, corruption: str) -> None:
    for rel in FILES[file]:
        path = run / rel
        new = CORRUPTIONS[corruption](path.read_bytes())
        path.unlink()
        if new is not None:
            path.write_bytes(new)


@pytest.fixture
def hostile(tmp_path, request) -> tuple[Path, Path, Path]:
    """(runs dir, the damaged run, the healthy run)."""
    runs_dir = tmp_path / "runs"
    bad, good = make_run(runs_dir, "bad"), make_run(runs_dir, "good")
    file, corruption = request.param
    damage(bad, file, corruption)
    # the healthy run is the newer one, so the damaged one is listed after it
    os.utime(good / "status.json", (time.time() + 5, time.time() + 5))
    return runs_dir, bad, good


def no_controls(text: str) -> None:
    assert ESC not in text and "\x07" not in text and "\x9b" not in text, repr(text[:300])


@pytest.mark.parametrize("hostile", CASES, indirect=True, ids=[f"{f}-{c}" for f, c in CASES])
def test_core_readers_survive(hostile):
    runs_dir, bad, good = hostile
    listed = {r.name: r for r in runs.list_runs(runs_dir)}
    assert set(listed) == {"bad", "good"}
    assert listed["good"].state == "finished" and not listed["good"].damaged
    info = runs.read_run(bad)
    json.dumps(info.to_json(), allow_nan=False, default=str)  # never NaN/inf in --json
    for value in (info.step, info.total_steps, info.epoch, info.elapsed_s):
        assert math.isfinite(value) and value >= 0
    assert info.pid is None or 0 < info.pid <= runs.PID_MAX
    assert 0.0 <= info.progress <= 1.0
    for row in runs.read_metrics(bad):
        assert all(math.isfinite(v) for v in row.values())
    runs.tail_log(bad, 20)
    checkpoints = list_checkpoints(bad)
    # Without trainer_state.json a checkpoint was cut off mid-save: neither offered nor resumed.
    # Damaged, it is complete: listed without losses (its weights are whole).
    saved = (bad / "checkpoint-4" / "trainer_state.json").exists()
    numbered = ["checkpoint-2", "checkpoint-4"] if saved else []
    assert [c.name for c in checkpoints] == [*numbered, "final"]
    for c in checkpoints:
        for value in (c.step, c.epoch, c.train_loss, c.eval_loss):
            assert value is None or math.isfinite(value)
        c.describe()
    assert last_complete_checkpoint(bad) == (bad / "checkpoint-4" if saved else None)
    if saved:
        assert resolve_checkpoint(bad, "last").name == "checkpoint-4"
    else:
        with pytest.raises(UserError, match="no checkpoint 'last'"):
            resolve_checkpoint(bad, "last")
    assert resolve_checkpoint(bad, "final").name == "final"
    # the live panel's own readers
    StatusWatcher(bad).poll()
    CheckpointWatcher(bad).poll()
    for line in LogFollower(bad / "train.log").read_new():
        no_controls(line)
    runs.MetricsTail(bad / "metrics.jsonl").read_new()
    estimate = runs.read_estimate_bytes(bad)
    assert estimate is None or 0 < estimate < 10**18


@pytest.mark.parametrize("corruption", [c for c in CORRUPTIONS if c not in ("missing", "escapes")])
def test_a_damaged_status_says_so(tmp_path, corruption):
    run = make_run(tmp_path, "bad")
    damage(run, "status.json", corruption)
    info = runs.read_run(run)
    if corruption == "truncated" or corruption == "empty":
        assert info.state == runs.DAMAGED and "not valid JSON" in info.damaged
    else:
        assert info.damaged, f"{corruption}: nothing said about the damage"


def test_nan_loss_written_by_tunewiz_is_not_damage(tmp_path):
    # The trainer writes a loss that went NaN as the string "nan" (JSON has no NaN).
    run = make_run(tmp_path, "nan-run")
    (run / "status.json").write_text(
        json.dumps({**GOOD_STATUS, "state": "failed", "last_loss": "nan"})
    )
    info = runs.read_run(run)
    assert info.state == "failed" and info.last_loss is None and not info.damaged


@pytest.mark.parametrize("hostile", CASES, indirect=True, ids=[f"{f}-{c}" for f, c in CASES])
def test_cli_runs_and_logs_survive(hostile, capsys, monkeypatch):
    runs_dir, bad, good = hostile
    monkeypatch.setenv("COLUMNS", "200")
    assert cli_main(["runs", "--runs-dir", str(runs_dir), "--json"]) == 0
    out = capsys.readouterr().out
    listed = json.loads(out, parse_constant=lambda c: pytest.fail(f"--json printed {c}"))
    assert {r["name"] for r in listed} == {"bad", "good"}
    assert cli_main(["runs", "--runs-dir", str(runs_dir)]) == 0
    out = capsys.readouterr().out
    assert "good" in out and "bad" in out
    no_controls(out)
    assert cli_main(["logs", "bad", "--runs-dir", str(runs_dir)]) == 0
    no_controls(capsys.readouterr().out)


# The wizard reads status.json itself (state, title, liveness): every corruption of it; the
# other files reach the screens through the core readers tested above, so a few kinds each.
PILOT_CASES = [(f, c) for f, c in CASES if f == "status.json"] + [
    (f, c)
    for f, c in CASES
    if f != "status.json" and c in ("binary", "non_finite", "escapes", "lines_of_garbage")
]


@pytest.mark.parametrize(
    "hostile", PILOT_CASES, indirect=True, ids=[f"{f}-{c}" for f, c in PILOT_CASES]
)
async def test_wizard_start_and_live_panel_survive(hostile, tmp_path):
    from tunewiz.tui.app import make_app
    from tunewiz.tui.screens.start import StartScreen

    runs_dir, bad, good = hostile
    app = make_app(tmp_path / "state", runs_dir, resume=False, detect_gpus=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        shown = screen_text(app)
        assert "good" in shown and "bad" in shown
        info = runs.read_run(bad)
        if info.damaged:
            assert "damaged" in shown
        no_controls(shown)
        start = app.screen
        assert isinstance(start, StartScreen)
        start.query_one("#runs").move_cursor(row=[r.name for r in start.runs].index("bad"))
        await pilot.press("o")  # open the damaged run, as a user would
        await pilot.pause()
        live = app.screen
        assert isinstance(live, TrainLiveScreen) and live.run_dir == bad
        live.poll()
        await pilot.pause()
        shown = screen_text(app)
        if info.damaged:
            assert "damaged" in shown
        no_controls(shown)


@pytest.mark.parametrize("corruption", ["binary", "not_utf8", "nul_bytes", "deep_nesting", "list"])
def test_a_damaged_config_is_a_message(tmp_path, corruption):
    run = make_run(tmp_path, "bad")
    path = run / "config.toml"
    path.write_bytes(CORRUPTIONS[corruption](path.read_bytes()) or b"")
    with pytest.raises(UserError) as err:
        RunConfig.load(path)
    assert str(path) in str(err.value)
    shutil.rmtree(path.parent / "final")
    path.unlink()
    path.mkdir()  # a folder where the file should be
    with pytest.raises(UserError):
        RunConfig.load(path)


# Valid TOML that no version of tunewiz writes: a value out of range, a choice that does not
# exist, an option renamed away, a type that cannot be read.
BAD_CONFIGS = {
    "out_of_range": ("lora_r = 16", "lora_r = -3"),
    "no_such_choice": ('method = "lora"', 'method = "dora"'),
    "unknown_option": ("lora_r = 16", "lora_rank = 16"),
    "wrong_type": ("max_steps = -1", 'max_steps = "many"'),
    "across_options": ('distributed = "none"', 'distributed = "ddp"'),
}


@pytest.mark.parametrize("damage_kind", list(BAD_CONFIGS))
def test_a_run_whose_config_is_bad_is_reported_as_damaged(tmp_path, capsys, damage_kind):
    from tunewiz.core.config import load_run_config
    from tunewiz.core.loading import load_for_chat

    run = make_run(tmp_path, "bad")
    path = run / "config.toml"
    old, new = BAD_CONFIGS[damage_kind]
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new))
    with pytest.raises(UserError, match="this run is damaged") as err:
        load_run_config(run)
    assert str(path) in str(err.value)
    with pytest.raises(UserError, match="this run is damaged"):
        load_for_chat(str(run), device="cpu")
    (run / "status.json").write_text(json.dumps({**GOOD_STATUS, "state": "stopped"}))
    assert cli_main(["resume", "bad", "--runs-dir", str(tmp_path)]) == 2
    shown = capsys.readouterr()
    assert "this run is damaged" in " ".join(shown.err.split()) and "Traceback" not in shown.err
    assert runs.read_status(run)["state"] == "stopped"  # nothing was started


def test_a_damaged_config_stops_chat_with_a_message(tmp_path):
    from tunewiz.core.loading import load_for_chat

    run = make_run(tmp_path, "bad")
    (run / "config.toml").write_bytes(bytes(range(256)))
    with pytest.raises(UserError, match="not a text file"):
        load_for_chat(str(run), device="cpu")


def test_chat_screen_opens_on_a_damaged_run(tmp_path):
    from tunewiz.tui.screens.chat import ChatScreen

    run = make_run(tmp_path, "bad")
    for file in ("metrics.jsonl", "trainer_state.json"):
        damage(run, file, "binary")
    screen = ChatScreen(str(run), None, runs_dir=tmp_path, loader=lambda *a: None)
    assert [c.name for c in screen.checkpoints] == ["checkpoint-2", "checkpoint-4", "final"]
    # a folder renamed by hand: its name reaches the chat's labels escaped
    evil = make_run(tmp_path, "evil\x1b]52;c;eA==\x07[b]")
    screen = ChatScreen(str(evil), None, runs_dir=tmp_path, loader=lambda *a: None)
    label = screen.label_for("final")
    assert "\x1b" not in label and "\x07" not in label and "[b]" in label


# -- property-style: any JSON value, any bytes ------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
status_keys = st.sampled_from(
    [
        "state",
        "step",
        "total_steps",
        "epoch",
        "last_loss",
        "best_eval_loss",
        "pid",
        "host",
        "error",
        "method",
        "model",
        "started_at",
        "ended_at",
        "updated_at",
        "elapsed_before_s",
        "first_step_at",
        "start_step",
        "created_at",
    ]
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(status=st.dictionaries(status_keys, json_values) | json_values)
def test_any_status_json_reads(tmp_path, status):
    run = tmp_path / "r"
    run.mkdir(exist_ok=True)
    (run / "status.json").write_text(json.dumps(status))
    info = runs.read_run(run)
    json.dumps(info.to_json(), allow_nan=False, default=str)
    assert 0.0 <= info.progress <= 1.0 and math.isfinite(info.elapsed_s)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        json_values
        | st.dictionaries(st.sampled_from(["step", "loss", "eval_loss", "epoch"]), json_values),
        max_size=6,
    ),
    junk=st.binary(max_size=64),
)
def test_any_metrics_and_trainer_state_read(tmp_path, rows, junk):
    run = tmp_path / "r"
    shutil.rmtree(run, ignore_errors=True)
    (run / "checkpoint-3").mkdir(parents=True)
    (run / "checkpoint-3" / "adapter_config.json").write_text("{}")
    (run / "checkpoint-3" / "adapter_model.safetensors").write_bytes(b"")
    (run / "checkpoint-3" / "trainer_state.json").write_text(json.dumps({"log_history": rows}))
    (run / "final").mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
        (run / "final" / name).write_text("{}")
    with open(run / "metrics.jsonl", "wb") as fh:
        for row in rows:
            fh.write(json.dumps(row).encode() + b"\n")
        fh.write(junk + b"\n")
    for row in runs.read_metrics(run):
        assert all(math.isfinite(v) for v in row.values())
    for c in list_checkpoints(run):
        assert all(
            v is None or math.isfinite(v) for v in (c.step, c.epoch, c.train_loss, c.eval_loss)
        )


class FakeTokenizer:
    all_special_tokens: list[str] = []

    def decode(self, ids, **kw):
        return " ".join(map(str, ids))


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe\x00garbage\n", b'{"input_ids": [1, 2], "labels": "x"}\n', b"[1]\n", b"[" * 50_000],
    ids=["binary", "wrong_types", "list", "deep"],
)
def test_compare_names_a_damaged_validation_row(tmp_path, content):
    from tunewiz.core.compare import validation_items

    run = make_run(tmp_path, "bad")
    (run / "data").mkdir()
    good = json.dumps({"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}).encode() + b"\n"
    (run / "data" / "eval.jsonl").write_bytes(good + content)
    with pytest.raises(UserError, match="damaged validation row") as err:
        validation_items(run, tokenizer=FakeTokenizer())
    assert err.value.where == f"{run / 'data' / 'eval.jsonl'}:2"


def test_a_damaged_recorded_chat_template_is_ignored(tmp_path):
    from tunewiz.core.loading import _recorded_template

    run = make_run(tmp_path, "bad")
    (run / "chat_template.jinja").write_bytes(b"\xff\xfe{{ garbage")
    assert _recorded_template(run) == ""
    (run / "chat_template.jinja").write_text("{{ messages }}")
    assert _recorded_template(run) == "{{ messages }}"
