"""GPU and model profiles: the numbers the estimator works from.

Both live as TOML in `profiles/` (shipped) and are read with `tomllib`, so this
module stays import-light: `tunewiz estimate` answers without torch.

- GPUs: `profiles/gpus.toml`, plus the user's `<config dir>/gpus.toml`, whose
  entries add GPUs or override fields (usually the price) of a shipped one.
- Models: `profiles/models.toml` keyed by hub id, with the numbers of each
  model's `config.json`; a local `config.json` (or a model folder) or any hub id
  (only its `config.json` is fetched) works the same way.
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
import math
import os
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tunewiz.core import paths
from tunewiz.core.config import read_toml
from tunewiz.core.errors import UserError

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover
    pass

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------
# GPUs
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuProfile:
    name: str
    memory_gib: float
    bf16_tflops: float  # dense tensor-core peak (fp16 where the GPU has no bf16)
    price_per_hour_usd: float
    price_date: str
    price_source: str
    bf16: bool = True  # False: no bf16 (T4, V100); "auto" precision becomes fp16 there
    aliases: tuple[str, ...] = ()
    source: str = ""  # the file this profile (or its last override) came from


_GPU_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "memory_gib": (int, float),
    "bf16_tflops": (int, float),
    "price_per_hour_usd": (int, float),
    "price_date": str,
    "price_source": str,
}
_GPU_OPTIONAL: dict[str, type | tuple[type, ...]] = {"bf16": bool, "aliases": list}


def user_gpus_file() -> Path:
    return paths.config_dir() / "gpus.toml"


def _check_gpu_entry(raw: Any, where: str, *, partial: bool) -> dict[str, Any]:
    """Validate one [[gpu]] table; `partial` entries (user overrides) need only `name`."""
    if not isinstance(raw, dict):
        raise UserError("each [[gpu]] entry must be a table", where=where)
    known = {**_GPU_REQUIRED, **_GPU_OPTIONAL}
    for key, value in raw.items():
        if key not in known:
            raise UserError(
                f"unknown field `{key}`",
                where=f"{where}.{key}",
                hint="known fields: " + ", ".join(known),
            )
        typ = known[key]
        if isinstance(value, bool) and typ is not bool:
            ok = False
        else:
            ok = isinstance(value, typ)
        if not ok:
            raise UserError(f"has the wrong type ({type(value).__name__})", where=f"{where}.{key}")
        if isinstance(value, float) and not math.isfinite(value):  # TOML allows nan and inf
            raise UserError(f"must be a finite number, got {value}", where=f"{where}.{key}")
        if key in ("memory_gib", "bf16_tflops") and value <= 0:
            raise UserError(f"must be positive, got {value}", where=f"{where}.{key}")
        if key == "price_per_hour_usd" and value < 0:
            raise UserError(f"must be 0 or more, got {value}", where=f"{where}.{key}")
    required = ("name",) if partial else tuple(_GPU_REQUIRED)
    for key in required:
        if key not in raw:
            raise UserError(f"missing field `{key}`", where=f"{where}.{key}")
    return raw


def _gpu_entries(path: Path, *, partial: bool) -> list[dict[str, Any]]:
    data = read_toml(path)
    extra = set(data) - {"gpu"}
    if extra:
        raise UserError(
            f"unknown top-level key `{sorted(extra)[0]}`",
            where=str(path),
            hint="list GPUs as [[gpu]] tables with name, memory_gib, bf16_tflops, "
            "price_per_hour_usd, price_date, price_source",
        )
    entries = data.get("gpu", [])
    if not isinstance(entries, list):
        raise UserError("`gpu` must be an array of tables ([[gpu]])", where=str(path))
    return [
        _check_gpu_entry(raw, f"{path}: gpu[{i}]", partial=partial) for i, raw in enumerate(entries)
    ]


def _make_gpu(raw: dict[str, Any], source: str) -> GpuProfile:
    return GpuProfile(
        name=raw["name"],
        memory_gib=float(raw["memory_gib"]),
        bf16_tflops=float(raw["bf16_tflops"]),
        price_per_hour_usd=float(raw["price_per_hour_usd"]),
        price_date=raw["price_date"],
        price_source=raw["price_source"],
        bf16=raw.get("bf16", True),
        aliases=tuple(raw.get("aliases", ())),
        source=source,
    )


def load_gpus(user_file: Path | None = None) -> list[GpuProfile]:
    """The shipped GPUs with the user's file applied (new GPUs appended, same names overridden)."""
    user_file = user_gpus_file() if user_file is None else Path(user_file)
    try:
        stamp = user_file.stat().st_mtime_ns
    except OSError:
        stamp = None
    return list(_load_gpus_cached(str(user_file), stamp))


@functools.lru_cache(maxsize=8)
def _load_gpus_cached(user_file: str, stamp: int | None) -> tuple[GpuProfile, ...]:
    shipped = paths.profiles_dir() / "gpus.toml"
    gpus = {
        _norm(raw["name"]): _make_gpu(raw, str(shipped))
        for raw in _gpu_entries(shipped, partial=False)
    }
    if stamp is not None:
        path = Path(user_file)
        for i, raw in enumerate(_gpu_entries(path, partial=True)):
            key = _norm(raw["name"])
            if key in gpus:
                fields = {k: v for k, v in raw.items() if k != "name"}
                if "aliases" in fields:
                    fields["aliases"] = tuple(fields["aliases"])
                for k in ("memory_gib", "bf16_tflops", "price_per_hour_usd"):
                    if k in fields:
                        fields[k] = float(fields[k])
                gpus[key] = replace(gpus[key], source=str(path), **fields)
            else:
                _check_gpu_entry(raw, f"{path}: gpu[{i}]", partial=False)
                gpus[key] = _make_gpu(raw, str(path))
    return tuple(gpus.values())


def _norm(name: str) -> str:
    """`NVIDIA GeForce RTX 4090` -> `rtx4090`: what people type varies, the card does not."""
    text = name.lower()
    for noise in ("nvidia", "geforce", "tesla", "amd", "instinct"):
        text = text.replace(noise, "")
    return re.sub(r"[^a-z0-9]", "", text)


def find_gpu(name: str, gpus: list[GpuProfile] | None = None) -> GpuProfile:
    """A GPU by name or alias, forgiving case, spaces and vendor words ("4090", "h100-sxm")."""
    gpus = load_gpus() if gpus is None else gpus
    want = _norm(name)
    if want:
        for gpu in gpus:
            if want == _norm(gpu.name) or want in {_norm(a) for a in gpu.aliases}:
                return gpu
        # What nvidia-smi prints ("NVIDIA A100 80GB PCIe", "NVIDIA H100 80GB HBM3"): match the
        # model name, and pick by memory where the name alone is ambiguous.
        mem = re.search(r"(\d+)\s*gb", name.lower())
        base = _norm(re.sub(r"[\s_-]*\d+\s*gb.*$", "", name.lower()))
        if mem and base:
            hits = [
                g
                for g in gpus
                if any(_norm(n).startswith(base) for n in (g.name, *g.aliases))
                and abs(g.memory_gib - int(mem.group(1))) <= 2
            ]
            hits.sort(key=lambda g: base not in {_norm(n) for n in (g.name, *g.aliases)})
            if hits:
                return hits[0]
    names = [g.name for g in gpus]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.3)
    close += [n for n in names if want and want in _norm(n) and n not in close]
    raise UserError(
        f"unknown GPU {name!r}",
        where="--gpu",
        hint=(f"did you mean: {', '.join(close[:6])}? " if close else "")
        + "`tunewiz estimate --list-gpus` shows all; or give its memory with --gpu-mem GB, "
        f"or add it to {user_gpus_file()}",
    )


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------

#: Architecture families whose parameter count is exact (checked against transformers).
EXACT_FAMILIES = ("llama", "mistral", "qwen2", "gemma", "gemma2", "phi3", "gpt2", "mixtral")


@dataclass(frozen=True)
class ModelArch:
    """The shape of a decoder-only transformer, as its config.json describes it."""

    name: str
    family: str  # config.json's model_type
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    num_experts: int = 0  # MoE: experts per layer (0 for a dense MLP)
    experts_per_token: int = 0
    gated_mlp: bool = True  # SwiGLU/GeGLU (gate, up, down) vs GPT-2's (fc, proj)
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    norms_per_layer: int = 2
    norm_has_bias: bool = False  # LayerNorm (gpt2) vs RMSNorm
    learned_positions: bool = False  # gpt2's wpe
    source: str = "catalog"
    exact: bool = True  # False for families we only approximate

    def __hash__(self) -> int:  # the estimator caches per architecture: hash once, not per call
        return self._hash

    @functools.cached_property  # noqa: B019
    def _hash(self) -> int:
        return hash(tuple(getattr(self, f) for f in self.__dataclass_fields__))

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @functools.cached_property  # noqa: B019 - frozen and hashable: one value per architecture
    def _linear_shapes(self) -> dict[str, tuple[int, int, int]]:
        return self._compute_linear_shapes()

    def linear_shapes(self) -> dict[str, tuple[int, int, int]]:
        """Per layer: module name -> (d_in, d_out, count) of every adaptable matrix (a copy)."""
        return dict(self._linear_shapes)

    def _compute_linear_shapes(self) -> dict[str, tuple[int, int, int]]:
        """Per layer: module name -> (d_in, d_out, count) of every adaptable matrix.

        Names are the usual PEFT target names; count > 1 for MoE experts.
        """
        h, i = self.hidden_size, self.intermediate_size
        if self.family == "gpt2":
            return {
                "c_attn": (h, 3 * h, 1),
                "c_proj": (h, h, 1),
                "c_fc": (h, i, 1),
                "mlp.c_proj": (i, h, 1),
            }
        shapes = {
            "q_proj": (h, self.q_dim, 1),
            "k_proj": (h, self.kv_dim, 1),
            "v_proj": (h, self.kv_dim, 1),
            "o_proj": (self.q_dim, h, 1),
        }
        experts = max(self.num_experts, 1)
        shapes.update(
            {
                "gate_proj": (h, i, experts),
                "up_proj": (h, i, experts),
                "down_proj": (i, h, experts),
            }
        )
        return shapes

    def params_per_layer(self) -> int:
        h = self.hidden_size
        total = sum(d_in * d_out * n for d_in, d_out, n in self.linear_shapes().values())
        if self.family == "gpt2":
            total += 3 * h + h + self.intermediate_size + h  # biases of the Conv1D layers
        else:
            if self.qkv_bias:
                total += self.q_dim + 2 * self.kv_dim
            if self.o_bias:
                total += h
            if self.mlp_bias:
                total += 2 * self.intermediate_size * max(self.num_experts, 1) + h * max(
                    self.num_experts, 1
                )
            if self.num_experts:
                total += h * self.num_experts  # the router
        total += self.norms_per_layer * h * (2 if self.norm_has_bias else 1)
        return total

    def embedding_params(self) -> int:
        n = self.vocab_size * self.hidden_size
        if self.learned_positions:
            n += self.max_position_embeddings * self.hidden_size
        return n

    def lm_head_params(self) -> int:
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    def final_norm_params(self) -> int:
        return self.hidden_size * (2 if self.norm_has_bias else 1)

    def num_params(self) -> int:
        """Total parameters, counted like `sum(p.numel() for p in model.parameters())`."""
        return self._num_params

    @functools.cached_property  # noqa: B019
    def _num_params(self) -> int:
        return (
            self.embedding_params()
            + self.num_layers * self.params_per_layer()
            + self.final_norm_params()
            + self.lm_head_params()
        )


_CONFIG_KEYS = {
    "vocab_size": ("vocab_size", "padded_vocab_size"),
    "hidden_size": ("hidden_size", "n_embd", "d_model", "dim"),
    "num_layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
    "num_heads": ("num_attention_heads", "n_head", "num_heads", "n_heads"),
}


def _get(cfg: dict, keys: tuple[str, ...], where: str, *, required: bool = True) -> Any:
    for key in keys:
        if cfg.get(key) is not None:
            value = cfg[key]
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise UserError(
                    f"must be a positive whole number, got {value!r}", where=f"{where}: {key}"
                )
            return value
    if required:
        raise UserError(
            f"missing field `{keys[0]}`",
            where=where,
            hint="a model config.json needs " + ", ".join(k[0] for k in _CONFIG_KEYS.values()),
        )
    return None


def arch_from_config(cfg: dict[str, Any], *, name: str, where: str) -> ModelArch:
    """Read the architecture numbers out of a config.json dict; errors name `where` and the field."""
    if not isinstance(cfg, dict):
        raise UserError("expected a JSON object", where=where)
    if isinstance(cfg.get("text_config"), dict):  # multimodal wrappers keep the LM here
        inner = dict(cfg["text_config"])
        inner.setdefault("model_type", cfg.get("model_type", ""))
        cfg = inner
    family = str(cfg.get("model_type") or "").lower()
    if not family:
        raise UserError("missing field `model_type`", where=where)
    vocab = _get(cfg, _CONFIG_KEYS["vocab_size"], where)
    h = _get(cfg, _CONFIG_KEYS["hidden_size"], where)
    layers = _get(cfg, _CONFIG_KEYS["num_layers"], where)
    heads = _get(cfg, _CONFIG_KEYS["num_heads"], where)
    kv = (
        _get(cfg, ("num_key_value_heads", "num_kv_heads", "n_head_kv"), where, required=False)
        or heads
    )
    head_dim = _get(cfg, ("head_dim",), where, required=False) or h // heads
    max_pos = (
        _get(
            cfg,
            ("max_position_embeddings", "n_positions", "seq_length", "max_seq_len"),
            where,
            required=False,
        )
        or 2048
    )
    if heads % kv:
        raise UserError(
            f"num_attention_heads ({heads}) is not a multiple of num_key_value_heads ({kv})",
            where=f"{where}: num_key_value_heads",
        )
    common = dict(
        name=name,
        family=family,
        vocab_size=vocab,
        hidden_size=h,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim,
        max_position_embeddings=max_pos,
        source=where,
        exact=family in EXACT_FAMILIES,
    )
    if family == "gpt2":
        inner = _get(cfg, ("n_inner",), where, required=False) or 4 * h
        return ModelArch(
            **common,
            intermediate_size=inner,
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", True)),
            gated_mlp=False,
            norm_has_bias=True,
            learned_positions=True,
        )
    inter = _get(cfg, ("intermediate_size", "ffn_dim", "n_inner"), where)
    default_tie = family in ("gemma", "gemma2")
    extra: dict[str, Any] = {}
    if family == "qwen2":
        extra["qkv_bias"] = True
    else:
        extra["qkv_bias"] = extra["o_bias"] = bool(cfg.get("attention_bias", False))
    extra["mlp_bias"] = bool(cfg.get("mlp_bias", False))
    if family == "gemma2":
        extra["norms_per_layer"] = 4  # pre/post attention and pre/post feed-forward
    experts = cfg.get("num_local_experts") or cfg.get("num_experts") or 0
    if experts:
        extra["num_experts"] = int(experts)
        extra["experts_per_token"] = int(cfg.get("num_experts_per_tok") or 2)
    return ModelArch(
        **common,
        intermediate_size=inter,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", default_tie)),
        **extra,
    )


@functools.lru_cache(maxsize=1)
def _catalog() -> dict[str, ModelArch]:
    path = paths.profiles_dir() / "models.toml"
    data = read_toml(path)
    return {
        key: arch_from_config(cfg, name=key, where=f"{path}: [{key!r}]")
        for key, cfg in data.items()
    }


def catalog_models() -> list[ModelArch]:
    return list(_catalog().values())


def _catalog_lookup(name: str) -> ModelArch | None:
    want = name.strip().lower()
    cat = _catalog()
    for key, arch in cat.items():
        if key.lower() == want:
            return arch
    bare = [arch for key, arch in cat.items() if key.split("/")[-1].lower() == want]
    return bare[0] if bare else None


def load_config_json(path: Path) -> ModelArch:
    """A local config.json (or a folder holding one)."""
    if path.is_dir():
        folder = path
        path = path / "config.json"
        if not path.is_file():
            raise UserError(
                "this folder has no config.json",
                where=str(folder),
                hint="point at a Hugging Face model folder, or at the model's config.json",
            )
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"not valid JSON: {exc.msg}", where=f"{path}:{exc.lineno}") from None
    except OSError as exc:
        raise UserError(f"cannot read: {exc.strerror}", where=str(path)) from None
    name = cfg.get("_name_or_path") if isinstance(cfg, dict) else None
    return arch_from_config(
        cfg, name=name or str(path.parent if path.name == "config.json" else path), where=str(path)
    )


def _fetch_hub_config(repo_id: str) -> ModelArch:
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    hint = (
        "download that model's config.json (the file only) and pass its path: "
        "tunewiz estimate ./config.json"
    )
    try:
        from huggingface_hub import hf_hub_download

        from tunewiz.core.models import hub_unreachable

        try:  # a cached copy needs no network
            local = hf_hub_download(repo_id, "config.json", local_files_only=True)
        except Exception:  # noqa: BLE001 - not cached: ask the hub if it answers in seconds
            if hub_unreachable():
                offline = True
                raise ConnectionError(hub_unreachable()) from None
            local = hf_hub_download(repo_id, "config.json")
    except Exception as exc:  # noqa: BLE001 - network, auth and offline errors all end up here
        cls = type(exc).__name__
        if offline or "Offline" in cls or "Connect" in cls or "LocalEntryNotFound" in cls:
            why = "the Hugging Face hub cannot be reached (offline?)"
        elif "RepositoryNotFound" in cls or "GatedRepo" in cls:
            why = "the hub has no such model, or it is gated (log in with `hf auth login`)"
        else:
            why = f"fetching its config.json failed ({cls})"
        close = _close_names(repo_id)
        raise UserError(
            f"{repo_id!r} is not in the catalog and {why}",
            where="MODEL",
            hint=(f"catalog models with a similar name: {', '.join(close)}; or " if close else "")
            + hint,
        ) from None
    return load_config_json(Path(local))


def _close_names(name: str) -> list[str]:
    keys = list(_catalog())
    by_lower = {k.lower(): k for k in keys}
    by_bare = {k.split("/")[-1].lower(): k for k in keys}
    want = name.strip().lower()
    hits = difflib.get_close_matches(want, list(by_lower), n=5, cutoff=0.5)
    hits += difflib.get_close_matches(want.split("/")[-1], list(by_bare), n=5, cutoff=0.5)
    out: list[str] = []
    for h in hits:
        key = by_lower.get(h) or by_bare.get(h)
        if key and key not in out:
            out.append(key)
    return out[:5]


def load_model_arch(name_or_path: str) -> ModelArch:
    """A model's architecture from a catalog name, a local config.json/folder, or a hub id."""
    from tunewiz.core.bundled import DEFAULT_MODEL_ID, is_default

    text = str(name_or_path).strip()
    if not text:
        raise UserError("no model given", where="MODEL")
    if is_default(text):
        return _catalog()[DEFAULT_MODEL_ID]
    path = Path(text).expanduser()
    if path.exists():
        if path.suffix == ".gguf":
            raise UserError(
                "cannot read the architecture of a .gguf file directly",
                where=str(path),
                hint="give the model's hub id or its config.json instead",
            )
        return load_config_json(path)
    found = _catalog_lookup(text)
    if found:
        return found
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text):
        return _fetch_hub_config(text)
    close = _close_names(text)
    raise UserError(
        f"unknown model {text!r}",
        where="MODEL",
        hint=(f"did you mean: {', '.join(close)}? " if close else "")
        + "give a hub id (org/name), a local config.json or model folder; "
        "`tunewiz estimate --list-models` shows the catalog",
    )
