"""House rules of the architecture, checked in fresh interpreters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "peft", "datasets", "bitsandbytes", "textual")


def loaded_modules(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {name.split(".")[0] for name in out.split()}


def test_import_core_is_light():
    mods = loaded_modules(
        "import tunewiz.core, tunewiz.core.config, tunewiz.core.errors, tunewiz.core.paths, tunewiz.core.bundled"
    )
    assert not mods & set(HEAVY), mods & set(HEAVY)


def test_core_never_imports_textual():
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "tunewiz" / "core").rglob("*.py")
        if any(
            line.strip().startswith(("import textual", "from textual"))
            for line in p.read_text(encoding="utf-8").splitlines()
        )
    ]
    assert offenders == []


def test_naming_loading_and_launching_modules_import_light():
    # The launcher's quick checks and eval's plan answer in seconds: naming a model, the checks,
    # the disk sizing and the log follower never import torch; loading imports it on call only.
    mods = loaded_modules(
        "import tunewiz.core.models, tunewiz.core.loading, tunewiz.core.train.launcher, "
        "tunewiz.core.train.preflight, tunewiz.core.train.disk, tunewiz.core.train.follow, "
        "tunewiz.core.train.failure"
    )
    assert not mods & set(HEAVY), mods & set(HEAVY)
