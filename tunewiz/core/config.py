"""The run configuration: what `config.toml` holds, what the CLI flags set, what the wizard edits.

One dataclass per concern. Each field's `help` metadata is the single source of
the one-line explanation shown in `--help`, in the wizard's forms and in the
comments of a written `config.toml`. Training options keep the names of
transformers' `TrainingArguments` so that users recognise them.

A `config.toml` looks like:

    name = "smol-facts"
    runs_dir = "runs"

    [model]
    model = "HuggingFaceTB/SmolLM2-135M-Instruct"
    method = "lora"

    [data]
    data = "sample"
    task = "instruction"

    [training]
    num_train_epochs = 3
    per_device_train_batch_size = 4
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from tunewiz.core.errors import UserError
from tunewiz.core.text import visible

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def opt(default: Any, help: str, choices: tuple | None = None, **kw: Any) -> Any:
    """A config field with its beginner-facing help line (and allowed values)."""
    meta: dict[str, Any] = {"help": help}
    if choices:
        meta["choices"] = choices
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


METHODS = ("full", "lora", "qlora", "freeze")
OBJECTIVES = ("sft", "dpo", "orpo", "kto")
# TRL's loss_type values: DPOConfig's pairwise losses, KTOConfig's unpaired ones (ORPO has none).
DPO_LOSSES = ("sigmoid", "hinge", "ipo", "robust", "bco_pair", "sppo_hard", "apo_zero", "apo_down")
KTO_LOSSES = ("kto", "apo_zero_unpaired")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TASKS = ("instruction", "chat", "text")
DISTRIBUTED = ("none", "ddp", "fsdp", "zero2", "zero3")


@dataclass
class ModelConfig:
    model: str = opt(
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "The model to fine-tune: a Hugging Face hub id, a local model folder, or a .gguf file.",
    )
    method: str = opt(
        "lora",
        "full trains every weight (most memory); lora trains small adapters; "
        "qlora does that on a 4-bit base (least memory); freeze trains only the last layers.",
        METHODS,
    )
    freeze_trainable_layers: int = opt(
        2,
        "freeze: how many of the last transformer blocks train; the rest stay as they are "
        "(fewer = less memory).",
    )
    freeze_train_lm_head: bool = opt(
        False, "freeze: also train the output layer (LM head; the embeddings too when tied)."
    )
    freeze_train_embeddings: bool = opt(
        False, "freeze: also train the input embeddings (large: a vocabulary-sized matrix)."
    )
    precision: str = opt(
        "auto",
        "Number format for training: auto picks bf16 on GPUs that support it, else fp16, "
        "and fp32 on a CPU.",
        PRECISIONS,
    )
    gradient_checkpointing: bool = opt(
        False,
        "Recompute activations in the backward pass: much less memory for ~30% more time.",
    )
    attn_implementation: str = opt(
        "auto",
        "Attention kernel: auto (flash_attention_2 where flash-attn and an Ampere+ GPU are there, "
        "else sdpa), sdpa, flash_attention_2, or eager (slowest, most memory).",
        ("auto", "sdpa", "flash_attention_2", "eager"),
    )
    liger_kernel: Literal["auto", "true", "false"] = opt(
        "auto",
        "Liger's fused GPU kernels (no full logits, leaner RMSNorm/SwiGLU): auto uses them on CUDA "
        "when liger-kernel is installed and supports the model.",
        ("auto", "true", "false"),
    )
    trust_remote_code: bool = opt(
        False,
        "Run Python code shipped with the model on the hub. Only for models you trust.",
    )
    lora_r: int = opt(
        16, "LoRA rank: the size of the adapters. 8-64 is typical; higher learns more."
    )
    lora_alpha: int = opt(32, "LoRA scaling; usually twice the rank.")
    lora_dropout: float = opt(0.05, "Dropout on the adapters, against overfitting small datasets.")
    lora_target_modules: str = opt(
        "all-linear",
        "Which weight matrices get adapters: all-linear, or a list such as q_proj,v_proj.",
    )
    bnb_4bit_quant_type: str = opt(
        "nf4", "QLoRA's 4-bit format: nf4 (normal float, the QLoRA paper's) or fp4.", ("nf4", "fp4")
    )
    bnb_4bit_use_double_quant: bool = opt(
        True, "QLoRA: also quantize the quantization constants (saves ~0.4 bits per weight)."
    )
    bnb_4bit_compute_dtype: str = opt(
        "auto",
        "QLoRA: the dtype the 4-bit weights are expanded to for each matmul (auto follows precision).",
        ("auto", "bf16", "fp16", "fp32"),
    )


@dataclass
class DataConfig:
    data: str = opt(
        "sample",
        "Training data: a file, a folder of files, a hub dataset id, or `sample` for the bundled "
        "demo set.",
    )
    task: str = opt(
        "instruction",
        "instruction: one prompt and one answer per row; chat: multi-turn conversations; "
        "text: plain text to continue pre-training on.",
        TASKS,
    )
    format: str = opt(
        "auto",
        "Row format (auto-detected): alpaca, prompt_completion, openai, sharegpt or text.",
        ("auto", "alpaca", "prompt_completion", "openai", "sharegpt", "text"),
    )
    columns: dict = opt(
        {},
        "Map your column names onto the format's, e.g. prompt=question, response=answer.",
    )
    data_config_name: str = opt("", "Hub datasets only: the configuration (subset) to load.")
    data_split: str = opt("train", "Hub datasets only: which split to load.")
    text_split: str = opt(
        "paragraph",
        ".txt files: `document` keeps each file as one document, `paragraph` splits at blank lines.",
        ("document", "paragraph"),
    )
    max_seq_len: int = opt(
        512,
        "Longest sequence in tokens; longer rows are truncated. Memory grows with it.",
    )
    packing: str = opt(
        "auto",
        "Pack short rows together into full-length sequences (faster training); auto packs "
        "only for the text task.",
        ("auto", "true", "false"),
    )
    train_on_inputs: bool = opt(
        False,
        "Compute the loss on prompts too, not only on the responses (rarely what you want).",
    )
    validation_split: float = opt(
        0.1,
        "Held-out rows for evaluation: a fraction (0.1 = 10%) or a count (e.g. 200); 0 for none.",
    )
    validation_file: str = opt("", "A separate file to evaluate on, instead of splitting.")
    on_bad_rows: str = opt(
        "skip",
        "What to do with rows that fail validation: skip them (counted and listed) or stop.",
        ("skip", "stop"),
    )
    split_seed: int = opt(42, "Seed for the train/validation split, so it is reproducible.")


@dataclass
class TrainingConfig:
    objective: str = opt(
        "sft",
        "What to learn: sft copies the answers; dpo/orpo learn which of two answers is better "
        "(chosen over rejected); kto learns from answers marked good or bad.",
        OBJECTIVES,
    )
    num_train_epochs: float = opt(3.0, "How many times to go through the training data.")
    max_steps: int = opt(
        -1, "Stop after this many optimizer steps (overrides epochs); -1 for no limit."
    )
    per_device_train_batch_size: int = opt(
        4, "Rows per step on each GPU. Bigger is faster but needs more memory."
    )
    per_device_eval_batch_size: int = opt(4, "Rows per step when evaluating.")
    gradient_accumulation_steps: int = opt(
        1,
        "Add up gradients over this many steps before updating: a bigger batch at no memory cost.",
    )
    learning_rate: float = opt(
        2e-4, "Step size of the optimizer. ~2e-4 for LoRA, ~1e-5 for full fine-tuning."
    )
    lr_scheduler_type: str = opt(
        "cosine",
        "How the learning rate changes over the run.",
        ("linear", "cosine", "constant", "constant_with_warmup"),
    )
    warmup_ratio: float = opt(
        0.03, "Fraction of the run spent ramping the learning rate up from 0."
    )
    weight_decay: float = opt(0.0, "Pull weights gently towards zero, against overfitting.")
    max_grad_norm: float = opt(
        1.0, "Clip gradients to this norm so one bad batch cannot derail training."
    )
    optim: str = opt(
        "adamw_torch",
        "Optimizer: adamw_torch, or the 8-bit / paged ones (bitsandbytes, GPU) that save memory.",
        ("adamw_torch", "adamw_8bit", "paged_adamw_8bit", "adafactor", "sgd"),
    )
    logging_steps: int = opt(1, "Log loss and speed every this many steps.")
    save_strategy: str = opt("steps", "When to save checkpoints.", ("no", "steps", "epoch"))
    save_steps: int = opt(50, "Save a checkpoint every this many steps (save_strategy=steps).")
    eval_strategy: str = opt(
        "steps", "When to evaluate on the validation rows.", ("no", "steps", "epoch")
    )
    eval_steps: int = opt(50, "Evaluate every this many steps (eval_strategy=steps).")
    save_total_limit: int = opt(
        2, "Keep at most this many checkpoints on disk (older ones are deleted; the best is kept)."
    )
    load_best_model_at_end: bool = opt(
        False, "At the end, use the checkpoint with the best validation metric as the result."
    )
    metric_for_best_model: str = opt("eval_loss", "Which metric decides the best checkpoint.")
    greater_is_better: bool = opt(False, "Whether a higher metric is better (false for losses).")
    seed: int = opt(42, "Random seed, for reproducible runs.")
    beta: float = opt(
        0.1,
        "dpo/kto: how far the model may move from where it started (higher = stays closer); "
        "orpo: the weight of the preference term.",
    )
    loss_type: str = opt(
        "auto",
        "dpo/kto: TRL's loss (auto = sigmoid for dpo, kto for kto; ipo/hinge/... are variants).",
        ("auto", *DPO_LOSSES, *KTO_LOSSES),
    )
    precompute_ref_log_probs: bool = opt(
        False,
        "dpo/kto with full fine-tuning: score the data with the starting model once before "
        "training, instead of keeping a second copy of it in memory.",
    )
    desirable_weight: float = opt(
        1.0, "kto: weight of the good answers' loss (raise it when good answers are rarer)."
    )
    undesirable_weight: float = opt(
        1.0, "kto: weight of the bad answers' loss (raise it when bad answers are rarer)."
    )
    report_to: str = opt("none", "Also log to: none or tensorboard.", ("none", "tensorboard"))


@dataclass
class DistributedConfig:
    distributed: str = opt(
        "none",
        "Several GPUs: ddp copies the model to each; fsdp/zero3 shard it; zero2 shards "
        "optimizer and gradients.",
        DISTRIBUTED,
    )
    num_processes: int = opt(
        1, "Total training processes (usually one per GPU, over all machines)."
    )
    num_machines: int = opt(1, "How many machines take part.")
    machine_rank: int = opt(0, "This machine's number, 0 for the main one.")
    main_process_ip: str = opt("", "Address of machine 0, when several machines take part.")
    main_process_port: int = opt(29500, "Port on machine 0 for the processes to meet.")


@dataclass
class RunConfig:
    name: str = opt("", "Name of the run; its folder is runs_dir/name. Empty picks one.")
    runs_dir: str = opt("runs", "Folder that holds all runs.")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    SECTIONS = ("model", "data", "training", "distributed")

    # -- conversion ---------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, where: str = "config") -> RunConfig:
        cfg = cls()
        cfg.update(raw, where=where)
        return cfg

    def update(self, raw: dict[str, Any], *, where: str = "config") -> None:
        """Apply a nested dict (a TOML file, or overrides) onto this config, checking every key."""
        for key, value in raw.items():
            if key in self.SECTIONS:
                if not isinstance(value, dict):
                    raise UserError(f"[{key}] must be a table", where=where)
                section = getattr(self, key)
                for sub, subval in value.items():
                    _set_field(section, sub, subval, where=f"{where}: {key}.{sub}")
            elif key in ("name", "runs_dir"):
                _set_field(self, key, value, where=f"{where}: {key}")
            else:
                raise UserError(
                    f"unknown key `{key}`",
                    where=where,
                    hint=f"top-level keys are name, runs_dir and the tables {', '.join(self.SECTIONS)}",
                )

    def set(self, dotted: str, value: Any) -> None:
        """Set `section.field` (or a bare field name, looked up in every section)."""
        section, name = find_field(dotted)
        target = self if section is None else getattr(self, section)
        _set_field(target, name, value, where=dotted)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        return cls.from_dict(read_toml(path), where=str(path))

    def to_toml(self) -> str:
        """The config as TOML, each option preceded by its help line as a comment."""
        import tomli_w

        lines = [
            "# tunewiz run configuration.",
            "# Reproduce this run with:  tunewiz train <this file>",
            tomli_w.dumps({"name": self.name, "runs_dir": self.runs_dir}).rstrip(),
        ]
        for section in self.SECTIONS:
            lines += ["", f"[{section}]"]
            obj = getattr(self, section)
            for f in dataclasses.fields(obj):
                lines.append(f"# {f.metadata.get('help', '')}")
                value = getattr(obj, f.name)
                if isinstance(value, dict):
                    lines.append(f"{f.name} = " + _inline_table(value))
                else:
                    lines.append(tomli_w.dumps({f.name: value}).rstrip())
        return "\n".join(lines) + "\n"

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_toml(), encoding="utf-8")

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict, or a UserError naming the file (and the line where known):
    missing, a folder, binary, not TOML. The one reader of config, preset and gpus files."""
    path = Path(path)
    try:
        data = path.read_bytes()
        return tomllib.loads(data.decode("utf-8"))
    except FileNotFoundError:
        raise UserError("file not found", where=str(path)) from None
    except OSError as exc:  # a folder, no permission
        raise UserError(f"cannot read it: {exc.strerror or exc}", where=str(path)) from None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(
            "not a text file: bytes that are not UTF-8", where=f"{path}:{line}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"not valid TOML: {visible(str(exc))}", where=str(path)) from None
    except RecursionError:
        raise UserError("not valid TOML: nested too deeply", where=str(path)) from None


def _inline_table(value: dict) -> str:
    import tomli_w

    inner = ", ".join(tomli_w.dumps({k: v}).strip() for k, v in value.items())
    return "{" + (f" {inner} " if inner else "") + "}"


def section_fields(section: str) -> list[dataclasses.Field]:
    """The fields of one section (`model`, `data`, ...), for forms and flags."""
    return list(dataclasses.fields(_SECTION_TYPES[section]))


def field_type(section: str, name: str) -> Any:
    """The declared type of one field (`bool`, `int`, `str | None`, ...), resolved from its annotation."""
    return get_type_hints(_SECTION_TYPES[section])[name]


def find_field(dotted: str) -> tuple[str | None, str]:
    """Resolve `training.learning_rate` or `learning_rate` to (section, field)."""
    if "." in dotted:
        section, name = dotted.split(".", 1)
        if section not in _SECTION_TYPES or name not in _field_names(_SECTION_TYPES[section]):
            raise UserError(f"unknown option `{dotted}`")
        return section, name
    if dotted in ("name", "runs_dir"):
        return None, dotted
    for section, typ in _SECTION_TYPES.items():
        if dotted in _field_names(typ):
            return section, dotted
    raise UserError(f"unknown option `{dotted}`")


def _field_names(typ: type) -> set[str]:
    return {f.name for f in dataclasses.fields(typ)}


_SECTION_TYPES: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "training": TrainingConfig,
    "distributed": DistributedConfig,
}


def _set_field(obj: Any, name: str, value: Any, *, where: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if name not in fields:
        raise UserError(
            f"unknown option `{name}`",
            where=where,
            hint="known options: " + ", ".join(sorted(fields)),
        )
    f = fields[name]
    expected = get_type_hints(type(obj))[name]
    value = coerce(value, expected, where=where)
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise UserError(f"`{value}` is not one of {', '.join(map(str, choices))}", where=where)
    setattr(obj, name, value)


def coerce(value: Any, expected: Any, *, where: str) -> Any:
    """Turn a TOML value or a command-line string into the field's type, or say why not."""
    if get_origin(expected) is Literal:
        # TOML's `true`/`false` for a Literal["auto", "true", "false"] option
        return str(value).lower() if isinstance(value, bool) else value
    expected = get_args(expected)[0] if get_args(expected) else expected
    if expected is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise UserError(f"expected true or false, got {value!r}", where=where)
    if expected is int:
        if isinstance(value, bool):
            raise UserError(f"expected a whole number, got {value!r}", where=where)
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise UserError(f"expected a whole number, got {value!r}", where=where) from None
    if expected is float:
        if isinstance(value, bool):
            raise UserError(f"expected a number, got {value!r}", where=where)
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise UserError(f"expected a number, got {value!r}", where=where) from None
        if not math.isfinite(number):  # NaN slips through every later `<= 0` check
            raise UserError(f"expected a finite number, got {value!r}", where=where)
        return number
    if expected is dict:
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        if isinstance(value, str):
            return parse_mapping(value, where=where)
        raise UserError(
            f"expected a table like {{prompt = 'question'}}, got {value!r}", where=where
        )
    if expected is str:
        if isinstance(value, (dict, list)):
            raise UserError(f"expected text, got {value!r}", where=where)
        return str(value)
    return value


def finite_float(text: str) -> float:
    """An argparse `type` for numbers: like float(), but NaN and inf are refused."""
    import argparse

    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return number


def parse_mapping(text: str, *, where: str) -> dict[str, str]:
    """Parse `prompt=question,response=answer` into a dict."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise UserError(
                f"expected key=value pairs separated by commas, got {part!r}", where=where
            )
        key, val = (s.strip() for s in part.split("=", 1))
        out[key] = val
    return out


SAMPLE_HELDOUT_NAME = "sample-heldout"  # the sample's held-out questions (profiles/datasets)


def validate(cfg: RunConfig) -> None:
    """Checks across fields that a single field's type cannot express."""
    m, d, t, dist = cfg.model, cfg.data, cfg.training, cfg.distributed
    if d.validation_file == SAMPLE_HELDOUT_NAME and d.data != "sample":
        # sample-demo's validation rows are questions about the sample's island: scored against
        # the user's own data they would measure nothing
        raise UserError(
            f'validation_file = "{SAMPLE_HELDOUT_NAME}" holds the sample\'s held-out questions, '
            'which only go with data = "sample"',
            where="data.validation_file",
            hint='give your own validation file, or validation_file = "" with '
            "validation_split = 0.1",
        )
    positive = [
        ("model.lora_r", m.lora_r),
        ("data.max_seq_len", d.max_seq_len),
        ("training.per_device_train_batch_size", t.per_device_train_batch_size),
        ("training.per_device_eval_batch_size", t.per_device_eval_batch_size),
        ("training.gradient_accumulation_steps", t.gradient_accumulation_steps),
        ("training.logging_steps", t.logging_steps),
        ("training.save_steps", t.save_steps),
        ("training.eval_steps", t.eval_steps),
        ("distributed.num_processes", dist.num_processes),
        ("distributed.num_machines", dist.num_machines),
    ]
    for where, value in positive:
        if value <= 0:
            raise UserError(f"must be at least 1, got {value}", where=where)
    if not cfg.name.isprintable():  # it is shown in terminals: no ESC, BEL, newline
        raise UserError(
            f"a run name must be printable characters, got '{visible(cfg.name, newlines=False)}'",
            where="name",
        )
    if t.learning_rate <= 0:
        raise UserError(f"must be positive, got {t.learning_rate}", where="training.learning_rate")
    if not 0 <= t.warmup_ratio < 1:
        raise UserError("must be between 0 and 1", where="training.warmup_ratio")
    if not 0 <= m.lora_dropout < 1:
        raise UserError("must be between 0 and 1", where="model.lora_dropout")
    _validate_preference(cfg)
    nothing_trains = not (m.freeze_train_lm_head or m.freeze_train_embeddings)
    if m.method == "freeze" and (
        m.freeze_trainable_layers < 0 or (m.freeze_trainable_layers == 0 and nothing_trains)
    ):
        raise UserError(
            f"must be 1 or more (or 0 with the LM head or embeddings trained), "
            f"got {m.freeze_trainable_layers}",
            where="model.freeze_trainable_layers",
        )
    if t.max_steps <= 0 and t.max_steps != -1:
        raise UserError(
            "must be a positive number of steps, or -1 for no limit", where="training.max_steps"
        )
    if t.max_steps == -1 and t.num_train_epochs <= 0:
        raise UserError("must be positive when max_steps is -1", where="training.num_train_epochs")
    if d.validation_split < 0:
        raise UserError("must be 0 or more", where="data.validation_split")
    if t.load_best_model_at_end and (t.eval_strategy == "no" or t.save_strategy != t.eval_strategy):
        raise UserError(
            "load_best_model_at_end needs evaluation, and save_strategy equal to eval_strategy",
            where="training.load_best_model_at_end",
        )
    if dist.distributed != "none" and dist.num_processes < 2 and dist.num_machines < 2:
        raise UserError(
            f"distributed = {dist.distributed!r} needs num_processes of 2 or more",
            where="distributed.num_processes",
        )


def _validate_preference(cfg: RunConfig) -> None:
    t = cfg.training
    if t.beta <= 0:
        raise UserError(f"must be positive, got {t.beta}", where="training.beta")
    for name in ("desirable_weight", "undesirable_weight"):
        if getattr(t, name) <= 0:
            raise UserError("must be positive", where=f"training.{name}")
    losses = {"dpo": DPO_LOSSES, "kto": KTO_LOSSES, "orpo": (), "sft": ()}[t.objective]
    if t.loss_type != "auto" and t.loss_type not in losses:
        fits = ", ".join(losses) if losses else "only auto (it has no loss_type)"
        raise UserError(
            f"loss_type {t.loss_type!r} is not a {t.objective} loss",
            where="training.loss_type",
            hint=f"{t.objective} takes: {fits}",
        )
    if t.objective != "sft" and cfg.data.task == "text":
        raise UserError(
            f"objective {t.objective} needs preference data, not the text task",
            where="data.task",
            hint="use --task instruction or chat with prompt/chosen/rejected (or label) rows",
        )
    if t.objective != "sft" and cfg.data.packing == "true":
        raise UserError(
            "preference objectives do not pack rows",
            where="data.packing",
            hint="set packing = auto",
        )
