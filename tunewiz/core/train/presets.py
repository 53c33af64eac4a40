"""Training presets: partial run configs in profiles/presets/<name>.toml (light: no torch)."""

from __future__ import annotations

from pathlib import Path

from tunewiz.core.config import tomllib
from tunewiz.core.errors import UserError
from tunewiz.core.paths import profiles_dir


def presets_dir() -> Path:
    return profiles_dir() / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in presets_dir().glob("*.toml"))


def load_preset(name: str) -> dict:
    """The preset's tables (model / data / training ...) as a dict for RunConfig.update()."""
    path = presets_dir() / f"{name}.toml"
    if not path.is_file():
        raise UserError(
            f"no training preset named {name!r}",
            where="--preset",
            hint="presets: " + ", ".join(preset_names()),
        )
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"not valid TOML: {exc}", where=str(path)) from None


def preset_description(name: str) -> str:
    """The preset file's first comment line, for menus."""
    for line in (presets_dir() / f"{name}.toml").read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return name
