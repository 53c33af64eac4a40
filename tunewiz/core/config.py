"""The run configuration: what `config.toml` holds, what the CLI flags set, what the wizard edits.

One dataclass per concern. Each field's `help` metadata is the single source of
the one-line explanation shown in `--help`, in the wizard's forms and in the
comments of a written `config.toml`. Training options keep the names of
transformers' `TrainingArguments` so that users recognise them. A choice is a
`Literal` type; a field's `rule` is what its value must keep on its own.

A run's config is made once, whole: `RunConfig.from_sources` (or `load`) lays the
preset, the file and the flags over the defaults, then validates the result, so
that a flag can fix a file's bad value and nothing invalid is handed out. The
wizard edits a draft with `set`, which checks the one value, and validates the
whole before it starts a run. `options()` describes the options to flags and forms.

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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args, get_origin, get_type_hints

from tunewiz.core.errors import UserError
from tunewiz.core.text import visible

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


# -- choices -------------------------------------------------------------------
# Each choice is a Literal, so that a type checker catches a typo in code that a plain str
# lets through; its tuple (for flags, forms and error messages) is derived from the Literal
# with get_args, never written out a second time. The estimator names some of the same
# things its own way (ESTIMATE_METHODS, its --optimizer names): tunewiz.core.estimate.for_run
# holds the one table from these names to those.

Method = Literal["full", "lora", "qlora", "freeze"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
AttnImplementation = Literal["auto", "sdpa", "flash_attention_2", "eager"]
AutoSwitch = Literal["auto", "true", "false"]  # liger_kernel, packing: auto decides, or forced
QuantType = Literal["nf4", "fp4"]
ComputeDtype = Literal["auto", "bf16", "fp16", "fp32"]
Task = Literal["instruction", "chat", "text"]
DataFormat = Literal["auto", "alpaca", "prompt_completion", "openai", "sharegpt", "text"]
TextSplit = Literal["document", "paragraph"]
OnBadRows = Literal["skip", "stop"]
Objective = Literal["sft", "dpo", "orpo", "kto"]
LrScheduler = Literal["linear", "cosine", "constant", "constant_with_warmup"]
Optim = Literal["adamw_torch", "adamw_8bit", "paged_adamw_8bit", "adafactor", "sgd"]
IntervalStrategy = Literal["no", "steps", "epoch"]  # save_strategy, eval_strategy
# TRL's loss_type values: DPOConfig's pairwise losses, KTOConfig's unpaired ones (ORPO has none).
DpoLoss = Literal[
    "sigmoid", "hinge", "ipo", "robust", "bco_pair", "sppo_hard", "apo_zero", "apo_down"
]
KtoLoss = Literal["kto", "apo_zero_unpaired"]
LossType = Literal["auto", DpoLoss, KtoLoss]
ReportTo = Literal["none", "tensorboard"]
Distributed = Literal["none", "ddp", "fsdp", "zero2", "zero3"]
Section = Literal["model", "data", "training", "distributed"]

METHODS: tuple[Method, ...] = get_args(Method)
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
ATTN_IMPLEMENTATIONS: tuple[AttnImplementation, ...] = get_args(AttnImplementation)
AUTO_SWITCHES: tuple[AutoSwitch, ...] = get_args(AutoSwitch)
QUANT_TYPES: tuple[QuantType, ...] = get_args(QuantType)
COMPUTE_DTYPES: tuple[ComputeDtype, ...] = get_args(ComputeDtype)
TASKS: tuple[Task, ...] = get_args(Task)
DATA_FORMATS: tuple[DataFormat, ...] = get_args(DataFormat)
TEXT_SPLITS: tuple[TextSplit, ...] = get_args(TextSplit)
ON_BAD_ROWS: tuple[OnBadRows, ...] = get_args(OnBadRows)
OBJECTIVES: tuple[Objective, ...] = get_args(Objective)
LR_SCHEDULERS: tuple[LrScheduler, ...] = get_args(LrScheduler)
OPTIMS: tuple[Optim, ...] = get_args(Optim)
INTERVAL_STRATEGIES: tuple[IntervalStrategy, ...] = get_args(IntervalStrategy)
DPO_LOSSES: tuple[DpoLoss, ...] = get_args(DpoLoss)
KTO_LOSSES: tuple[KtoLoss, ...] = get_args(KtoLoss)
LOSS_TYPES: tuple[LossType, ...] = get_args(LossType)
REPORT_TOS: tuple[ReportTo, ...] = get_args(ReportTo)
DISTRIBUTED: tuple[Distributed, ...] = get_args(Distributed)
SECTIONS: tuple[Section, ...] = get_args(Section)


# -- single-field rules ----------------------------------------------------------
# A rule returns what is wrong with a value ("" when nothing): it is checked wherever the
# value is set (a section's __post_init__, set(), a file, a flag) and again by validate().

Rule = Callable[[Any], str]


def _at_least_1(value: int) -> str:
    return "" if value >= 1 else f"must be at least 1, got {value}"


def _positive_showing(value: float) -> str:
    return "" if value > 0 else f"must be positive, got {value}"


def _positive(value: float) -> str:
    return "" if value > 0 else "must be positive"


def _fraction(value: float) -> str:
    return "" if 0 <= value < 1 else "must be between 0 and 1"


def _not_negative(value: float) -> str:
    return "" if value >= 0 else "must be 0 or more"


def _steps_or_no_limit(value: int) -> str:
    if value > 0 or value == -1:
        return ""
    return "must be a positive number of steps, or -1 for no limit"


def _printable_name(value: str) -> str:
    if value.isprintable():  # it is shown in terminals: no ESC, BEL, newline
        return ""
    return f"a run name must be printable characters, got '{visible(value, newlines=False)}'"


def opt(default: Any, help: str, rule: Rule | None = None) -> Any:
    """A config field with its beginner-facing help line (and the rule its value must keep).
    A choice's allowed values come from the field's Literal type."""
    meta: dict[str, Any] = {"help": help}
    if rule is not None:
        meta["rule"] = rule
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


class _Section:
    """A table of config.toml. Built in code (`DataConfig(max_seq_len=0)`), it checks each of
    its values at once, as a file or a flag setting them would."""

    SECTION: ClassVar[Section]

    def __post_init__(self) -> None:
        for spec in _specs(type(self)):
            _check_value(spec, getattr(self, spec.name), where=f"{self.SECTION}.{spec.name}")


@dataclass
class ModelConfig(_Section):
    SECTION: ClassVar[Section] = "model"

    model: str = opt(
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "The model to fine-tune: a Hugging Face hub id, a local model folder, or a .gguf file.",
    )
    method: Method = opt(
        "lora",
        "full trains every weight (most memory); lora trains small adapters; "
        "qlora does that on a 4-bit base (least memory); freeze trains only the last layers.",
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
    precision: Precision = opt(
        "auto",
        "Number format for training: auto picks bf16 on GPUs that support it, else fp16, "
        "and fp32 on a CPU.",
    )
    gradient_checkpointing: bool = opt(
        False,
        "Recompute activations in the backward pass: much less memory for ~30% more time.",
    )
    attn_implementation: AttnImplementation = opt(
        "auto",
        "Attention kernel: auto (flash_attention_2 where flash-attn and an Ampere+ GPU are there, "
        "else sdpa), sdpa, flash_attention_2, or eager (slowest, most memory).",
    )
    liger_kernel: AutoSwitch = opt(
        "auto",
        "Liger's fused GPU kernels (no full logits, leaner RMSNorm/SwiGLU): auto uses them on CUDA "
        "when liger-kernel is installed and supports the model.",
    )
    trust_remote_code: bool = opt(
        False,
        "Run Python code shipped with the model on the hub. Only for models you trust.",
    )
    lora_r: int = opt(
        16, "LoRA rank: the size of the adapters. 8-64 is typical; higher learns more.", _at_least_1
    )
    lora_alpha: int = opt(32, "LoRA scaling; usually twice the rank.")
    lora_dropout: float = opt(
        0.05, "Dropout on the adapters, against overfitting small datasets.", _fraction
    )
    lora_target_modules: str = opt(
        "all-linear",
        "Which weight matrices get adapters: all-linear, or a list such as q_proj,v_proj.",
    )
    bnb_4bit_quant_type: QuantType = opt(
        "nf4", "QLoRA's 4-bit format: nf4 (normal float, the QLoRA paper's) or fp4."
    )
    bnb_4bit_use_double_quant: bool = opt(
        True, "QLoRA: also quantize the quantization constants (saves ~0.4 bits per weight)."
    )
    bnb_4bit_compute_dtype: ComputeDtype = opt(
        "auto",
        "QLoRA: the dtype the 4-bit weights are expanded to for each matmul (auto follows precision).",
    )


@dataclass
class DataConfig(_Section):
    SECTION: ClassVar[Section] = "data"

    data: str = opt(
        "sample",
        "Training data: a file, a folder of files, a hub dataset id, or `sample` for the bundled "
        "demo set.",
    )
    task: Task = opt(
        "instruction",
        "instruction: one prompt and one answer per row; chat: multi-turn conversations; "
        "text: plain text to continue pre-training on.",
    )
    format: DataFormat = opt(
        "auto", "Row format (auto-detected): alpaca, prompt_completion, openai, sharegpt or text."
    )
    columns: dict = opt(
        {},
        "Map your column names onto the format's, e.g. prompt=question, response=answer.",
    )
    data_config_name: str = opt("", "Hub datasets only: the configuration (subset) to load.")
    data_split: str = opt("train", "Hub datasets only: which split to load.")
    text_split: TextSplit = opt(
        "paragraph",
        ".txt files: `document` keeps each file as one document, `paragraph` splits at blank lines.",
    )
    max_seq_len: int = opt(
        512,
        "Longest sequence in tokens; longer rows are truncated. Memory grows with it.",
        _at_least_1,
    )
    packing: AutoSwitch = opt(
        "auto",
        "Pack short rows together into full-length sequences (faster training); auto packs "
        "only for the text task.",
    )
    train_on_inputs: bool = opt(
        False,
        "Compute the loss on prompts too, not only on the responses (rarely what you want).",
    )
    validation_split: float = opt(
        0.1,
        "Held-out rows for evaluation: a fraction (0.1 = 10%) or a count (e.g. 200); 0 for none.",
        _not_negative,
    )
    validation_file: str = opt("", "A separate file to evaluate on, instead of splitting.")
    on_bad_rows: OnBadRows = opt(
        "skip", "What to do with rows that fail validation: skip them (counted and listed) or stop."
    )
    split_seed: int = opt(42, "Seed for the train/validation split, so it is reproducible.")


@dataclass
class TrainingConfig(_Section):
    SECTION: ClassVar[Section] = "training"

    objective: Objective = opt(
        "sft",
        "What to learn: sft copies the answers; dpo/orpo learn which of two answers is better "
        "(chosen over rejected); kto learns from answers marked good or bad.",
    )
    num_train_epochs: float = opt(3.0, "How many times to go through the training data.")
    max_steps: int = opt(
        -1,
        "Stop after this many optimizer steps (overrides epochs); -1 for no limit.",
        _steps_or_no_limit,
    )
    per_device_train_batch_size: int = opt(
        4, "Rows per step on each GPU. Bigger is faster but needs more memory.", _at_least_1
    )
    per_device_eval_batch_size: int = opt(4, "Rows per step when evaluating.", _at_least_1)
    gradient_accumulation_steps: int = opt(
        1,
        "Add up gradients over this many steps before updating: a bigger batch at no memory cost.",
        _at_least_1,
    )
    learning_rate: float = opt(
        2e-4,
        "Step size of the optimizer. ~2e-4 for LoRA, ~1e-5 for full fine-tuning.",
        _positive_showing,
    )
    lr_scheduler_type: LrScheduler = opt("cosine", "How the learning rate changes over the run.")
    warmup_ratio: float = opt(
        0.03, "Fraction of the run spent ramping the learning rate up from 0.", _fraction
    )
    weight_decay: float = opt(0.0, "Pull weights gently towards zero, against overfitting.")
    max_grad_norm: float = opt(
        1.0, "Clip gradients to this norm so one bad batch cannot derail training."
    )
    optim: Optim = opt(
        "adamw_torch",
        "Optimizer: adamw_torch, or the 8-bit / paged ones (bitsandbytes, GPU) that save memory.",
    )
    logging_steps: int = opt(1, "Log loss and speed every this many steps.", _at_least_1)
    save_strategy: IntervalStrategy = opt("steps", "When to save checkpoints.")
    save_steps: int = opt(
        50, "Save a checkpoint every this many steps (save_strategy=steps).", _at_least_1
    )
    eval_strategy: IntervalStrategy = opt("steps", "When to evaluate on the validation rows.")
    eval_steps: int = opt(50, "Evaluate every this many steps (eval_strategy=steps).", _at_least_1)
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
        _positive_showing,
    )
    loss_type: LossType = opt(
        "auto",
        "dpo/kto: TRL's loss (auto = sigmoid for dpo, kto for kto; ipo/hinge/... are variants).",
    )
    precompute_ref_log_probs: bool = opt(
        False,
        "dpo/kto with full fine-tuning: score the data with the starting model once before "
        "training, instead of keeping a second copy of it in memory.",
    )
    desirable_weight: float = opt(
        1.0,
        "kto: weight of the good answers' loss (raise it when good answers are rarer).",
        _positive,
    )
    undesirable_weight: float = opt(
        1.0,
        "kto: weight of the bad answers' loss (raise it when bad answers are rarer).",
        _positive,
    )
    report_to: ReportTo = opt("none", "Also log to: none or tensorboard.")


@dataclass
class DistributedConfig(_Section):
    SECTION: ClassVar[Section] = "distributed"

    distributed: Distributed = opt(
        "none",
        "Several GPUs: ddp copies the model to each; fsdp/zero3 shard it; zero2 shards "
        "optimizer and gradients.",
    )
    num_processes: int = opt(
        1, "Total training processes (usually one per GPU, over all machines).", _at_least_1
    )
    num_machines: int = opt(1, "How many machines take part.", _at_least_1)
    machine_rank: int = opt(0, "This machine's number, 0 for the main one.")
    main_process_ip: str = opt("", "Address of machine 0, when several machines take part.")
    main_process_port: int = opt(29500, "Port on machine 0 for the processes to meet.")


@dataclass(frozen=True)
class Source:
    """One layer of a run's settings (a preset, a file, the flags); a later layer wins."""

    name: str  # how errors name it: "preset quick-test", "run.toml", "flags"
    values: Mapping[str, Any]  # nested as config.toml is: {"training": {"max_steps": 3}}
    flags: bool = False  # the command line: an option is named by its flag (--max-steps)

    def where(self, dotted: str) -> str:
        """How an error names an option set here: `run.toml: training.max_steps`, `--max-steps`."""
        return flag_name(dotted.rsplit(".", 1)[-1]) if self.flags else f"{self.name}: {dotted}"


def flag_name(field_name: str) -> str:
    """The command-line flag of an option: max_steps -> --max-steps."""
    return "--" + field_name.replace("_", "-")


@dataclass
class RunConfig:
    """A whole run's options. Made by `load` or `from_sources`, it is checked whole (an invalid
    one is never handed out); the wizard edits a draft with `set`/`update`, which check each
    value on its own, and checks the whole with `validate` before it starts a run."""

    name: str = opt(
        "", "Name of the run; its folder is runs_dir/name. Empty picks one.", _printable_name
    )
    runs_dir: str = opt("runs", "Folder that holds all runs.")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    SECTIONS: ClassVar[tuple[Section, ...]] = SECTIONS

    # -- made whole, checked whole --------------------------------------------

    @classmethod
    def from_sources(cls, *sources: Source) -> RunConfig:
        """The defaults with each source laid over the ones before it, then checked once, whole.

        A value is read only when no later source replaces it, so a flag fixes a file's bad
        value (`tunewiz train run.toml --learning-rate 1e-4`); what is still wrong is refused
        naming the source that set it (the file and the option, or the flag)."""
        chosen: dict[str, tuple[Any, Source]] = {}
        for source in sources:
            for dotted, value in _flatten(source.values, where=source.name):
                chosen[dotted] = (value, source)
        cfg = cls()
        for dotted, (value, source) in chosen.items():
            cfg._set(dotted, value, where=source.where(dotted))
        try:
            validate(cfg)
        except UserError as exc:
            where = _origin(exc.where, chosen, sources)
            raise UserError(exc.message, where=where, hint=exc.hint) from None
        return cfg

    @classmethod
    def load(cls, path: str | Path, *overrides: Source) -> RunConfig:
        """A config file, with `overrides` (flags) laid over it, checked whole."""
        path = Path(path)
        return cls.from_sources(Source(str(path), read_toml(path)), *overrides)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, where: str = "config") -> RunConfig:
        return cls.from_sources(Source(where, raw))

    # -- a draft, edited one value at a time -----------------------------------

    def update(self, raw: Mapping[str, Any], *, where: str = "config") -> None:
        """Lay a nested dict (a preset, a saved wizard state) over this draft, each value checked
        on its own. Rules across options are left to validate(): a draft being edited passes
        through states they refuse (distributed = ddp before num_processes = 2)."""
        for dotted, value in list(_flatten(raw, where=where)):
            self._set(dotted, value, where=f"{where}: {dotted}")

    def set(self, dotted: str, value: Any) -> None:
        """Set `section.field` (or a bare field name, looked up in every section), checked."""
        self._set(dotted, value, where=dotted)

    def _set(self, dotted: str, value: Any, *, where: str) -> None:
        section, name = find_field(dotted)
        _set_field(self if section is None else getattr(self, section), name, value, where=where)

    # -- conversion ---------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """The config as TOML, each option preceded by its help line as a comment."""
        import tomli_w

        lines = [
            "# tunewiz run configuration.",
            "# Reproduce this run with:  tunewiz train <this file>",
            tomli_w.dumps({"name": self.name, "runs_dir": self.runs_dir}).rstrip(),
        ]
        for section in SECTIONS:
            lines += ["", f"[{section}]"]
            obj = getattr(self, section)
            for spec in options(section):
                lines.append(f"# {spec.help}")
                value = getattr(obj, spec.name)
                if isinstance(value, dict):
                    lines.append(f"{spec.name} = " + _inline_table(value))
                else:
                    lines.append(tomli_w.dumps({spec.name: value}).rstrip())
        return "\n".join(lines) + "\n"

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_toml(), encoding="utf-8")

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


def _origin(
    dotted: str | None, chosen: dict[str, tuple[Any, Source]], sources: tuple[Source, ...]
) -> str | None:
    """Where an option that broke a rule was set; an option left at its default that does not go
    with what was set is named in the last file (or else the flags): that is where to fix it."""
    if dotted is None:
        return None
    if dotted in chosen:
        return chosen[dotted][1].where(dotted)
    files = [s for s in sources if not s.flags]
    last = files[-1] if files else (sources[-1] if sources else None)
    return last.where(dotted) if last else dotted


def load_run_config(run_dir: str | Path) -> RunConfig:
    """A run folder's config.toml, checked whole. The folder may come from another version or
    be edited by hand: a bad file is "this run is damaged: <why>", never a traceback."""
    from tunewiz.core.runs import CONFIG_FILE

    try:
        return RunConfig.load(Path(run_dir) / CONFIG_FILE)
    except UserError as exc:
        raise UserError(
            f"this run is damaged: {exc.message}", where=exc.where, hint=exc.hint
        ) from None


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


# -- the options, for flags and forms ------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One option as the flags, the wizard's forms and config.toml show it."""

    section: Section | None  # None for the top-level name and runs_dir
    name: str
    help: str
    kind: type  # bool, int, float, str or dict: how a typed-in value is read
    choices: tuple[str, ...]  # a choice's allowed values in the order shown; () when free
    rule: Rule | None  # what else its value must keep (at least 1, between 0 and 1, ...)

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}" if self.section else self.name


def options(section: Section | None = None) -> tuple[Option, ...]:
    """The options of one section (`model`, `data`, ...), or the top-level ones for None."""
    return _specs(RunConfig if section is None else _SECTION_TYPES[section])


def _specs(cls: type) -> tuple[Option, ...]:
    """The options of a section's class (or RunConfig's own), worked out once per class."""
    if cls in _SPECS:
        return _SPECS[cls]
    section = getattr(cls, "SECTION", None)
    hints = _hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if isinstance(hint, type) and issubclass(hint, _Section):
            continue  # RunConfig's tables: their own options are listed under their names
        literal = get_origin(hint) is Literal
        out.append(
            Option(
                section=section,
                name=f.name,
                help=f.metadata.get("help", ""),
                kind=str if literal else hint,
                choices=get_args(hint) if literal else (),
                rule=f.metadata.get("rule"),
            )
        )
    _SPECS[cls] = tuple(out)
    return _SPECS[cls]


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = get_type_hints(cls)  # slow: the wizard sets a value on each keystroke
    return _HINTS[cls]


_SPECS: dict[type, tuple[Option, ...]] = {}
_HINTS: dict[type, dict[str, Any]] = {}


def find_field(dotted: str) -> tuple[Section | None, str]:
    """Resolve `training.learning_rate` or `learning_rate` to (section, field)."""
    if "." in dotted:
        section, name = dotted.split(".", 1)
        if section not in _SECTION_TYPES or name not in _names(section):
            raise UserError(f"unknown option `{dotted}`")
        return section, name
    if dotted in _names(None):
        return None, dotted
    for known in SECTIONS:
        if dotted in _names(known):
            return known, dotted
    raise UserError(f"unknown option `{dotted}`")


def _names(section: Section | None) -> set[str]:
    return {spec.name for spec in options(section)}


_SECTION_TYPES: dict[Section, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "training": TrainingConfig,
    "distributed": DistributedConfig,
}


def _flatten(raw: Mapping[str, Any], *, where: str) -> Iterator[tuple[str, Any]]:
    """(`section.option`, value) for each value of a nested dict; unknown keys are refused."""
    for key, value in raw.items():
        if key in _SECTION_TYPES:
            if not isinstance(value, dict):
                raise UserError(f"[{key}] must be a table", where=where)
            known = _names(key)
            for sub, subval in value.items():
                if sub not in known:
                    raise UserError(
                        f"unknown option `{sub}`",
                        where=f"{where}: {key}.{sub}",
                        hint="known options: " + ", ".join(sorted(known)),
                    )
                yield f"{key}.{sub}", subval
        elif key in _names(None):
            yield key, value
        else:
            raise UserError(
                f"unknown key `{key}`",
                where=where,
                hint=f"top-level keys are name, runs_dir and the tables {', '.join(SECTIONS)}",
            )


def _set_field(obj: Any, name: str, value: Any, *, where: str) -> None:
    specs = {spec.name: spec for spec in _specs(type(obj))}
    if name not in specs:
        raise UserError(
            f"unknown option `{name}`",
            where=where,
            hint="known options: " + ", ".join(sorted(specs)),
        )
    value = coerce(value, _hints(type(obj))[name], where=where)
    _check_value(specs[name], value, where=where)
    setattr(obj, name, value)


def _check_value(spec: Option, value: Any, *, where: str) -> None:
    if spec.choices and value not in spec.choices:
        raise UserError(f"`{value}` is not one of {', '.join(spec.choices)}", where=where)
    problem = spec.rule(value) if spec.rule else ""
    if problem:
        raise UserError(problem, where=where)


def coerce(value: Any, expected: Any, *, where: str) -> Any:
    """Turn a TOML value or a command-line string into the field's type, or say why not."""
    if get_origin(expected) is Literal:
        # TOML's `true`/`false` for a Literal["auto", "true", "false"] option
        return str(value).lower() if isinstance(value, bool) else value
    expected = get_args(expected)[0] if get_args(expected) else expected
    convert = _CONVERTERS.get(expected)
    return convert(value, where) if convert else value


def _to_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
        return False
    raise UserError(f"expected true or false, got {value!r}", where=where)


def _to_int(value: Any, where: str) -> int:
    wrong = UserError(f"expected a whole number, got {value!r}", where=where)
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise wrong
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise wrong from None


def _to_float(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise UserError(f"expected a number, got {value!r}", where=where)
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"expected a number, got {value!r}", where=where) from None
    if not math.isfinite(number):  # NaN slips through every later `<= 0` check
        raise UserError(f"expected a finite number, got {value!r}", where=where)
    return number


def _to_mapping(value: Any, where: str) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, str):
        return parse_mapping(value, where=where)
    raise UserError(f"expected a table like {{prompt = 'question'}}, got {value!r}", where=where)


def _to_str(value: Any, where: str) -> str:
    if isinstance(value, (dict, list)):
        raise UserError(f"expected text, got {value!r}", where=where)
    return str(value)


# The field types a config option can have, each with its converter (coerce uses them).
_CONVERTERS: dict[Any, Callable[[Any, str], Any]] = {
    bool: _to_bool,
    int: _to_int,
    float: _to_float,
    dict: _to_mapping,
    str: _to_str,
}


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
    """Every option's own rule, then the rules across options: the first one broken raises,
    naming its option. The constructors call it; a draft edited in place is checked with it."""
    for spec in options(None):
        _check_value(spec, getattr(cfg, spec.name), where=spec.dotted)
    for section in SECTIONS:
        values = getattr(cfg, section)
        for spec in options(section):
            _check_value(spec, getattr(values, spec.name), where=spec.dotted)
    _validate_across(cfg)


def _validate_across(cfg: RunConfig) -> None:
    """Checks across options that no single option's rule can express."""
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
    if t.max_steps == -1 and t.num_train_epochs <= 0:
        raise UserError("must be positive when max_steps is -1", where="training.num_train_epochs")
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


# The loss_type values each objective takes (ORPO and SFT have none but auto).
_OBJECTIVE_LOSSES: dict[Objective, tuple[LossType, ...]] = {
    "sft": (),
    "dpo": DPO_LOSSES,
    "orpo": (),
    "kto": KTO_LOSSES,
}


def _validate_preference(cfg: RunConfig) -> None:
    t = cfg.training
    losses = _OBJECTIVE_LOSSES[t.objective]
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
