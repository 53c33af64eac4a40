"""Export SVG screenshots of the wizard's screens into docs/ (for the README).

    .venv/bin/python scripts/tui_screenshots.py

Runs the real app headless in a temporary folder: the bundled sample, a data file with
two bad rows, Llama-3.1-8B against an RTX 4090 on the model screen.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TUNEWIZ_HOME", str(ROOT / ".tunewiz-home"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.tui_pilot import settle  # noqa: E402
from tunewiz.tui.app import make_app  # noqa: E402

DOCS = ROOT / "docs"
SIZE = (120, 36)
SHARED = ROOT.parent / "shared" / "data" / "alpaca_en_demo.json"


def bad_file(folder: Path) -> Path:
    rows = json.loads(SHARED.read_text(encoding="utf-8"))[:200] if SHARED.exists() else []
    path = folder / "support.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for i, row in enumerate(rows):
            if i == 17:
                fh.write('{"instruction": "Reset my password",\n')
            if i == 42:
                fh.write(json.dumps({"instruction": "Cancel my order", "output": ""}) + "\n")
            fh.write(json.dumps(row) + "\n")
    return path


async def shoot(step: str, name: str, work: Path, prepare=None) -> None:
    app = make_app(work / "state", Path("runs"), resume=False, detect_gpus=False, start_at=step)
    app.wizard.gpu = "RTX 4090"
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        if prepare:
            await prepare(pilot)
            await settle(app, pilot)
        for widget in app.screen.query("Input, TextArea"):
            widget.cursor_blink = False
        await pilot.pause()
        app.save_screenshot(filename=f"{name}.svg", path=str(DOCS))
        print("wrote", DOCS / f"{name}.svg")


async def main() -> None:
    work = Path(tempfile.mkdtemp())
    os.chdir(work)
    data = bad_file(work)

    async def problems(pilot) -> None:
        field = pilot.app.screen.query_one("#data-path")
        field.value = data.name
        field.focus()
        await pilot.press("enter")
        await settle(pilot.app, pilot)
        pilot.app.screen.query_one("#data-tabs").active = "tab-problems"

    async def preview(pilot) -> None:
        pilot.app.screen.query_one("#data-tabs").active = "tab-preview"

    async def llama(pilot) -> None:
        field = pilot.app.screen.query_one("#model-name")
        field.value = "meta-llama/Llama-3.1-8B-Instruct"
        field.focus()
        await pilot.press("enter")
        await settle(pilot.app, pilot)
        pilot.app.screen.query_one("#method-qlora").value = True

    await shoot("start", "tui-start", work)
    await shoot("data", "tui-data-problems", work, problems)
    await shoot("data", "tui-data-masking", work, preview)
    await shoot("model", "tui-model-memory", work, llama)
    await shoot("settings", "tui-settings", work)


if __name__ == "__main__":
    asyncio.run(main())
