"""Benchmarks through EleutherAI's lm-evaluation-harness, on a model we already loaded.

`prepare_tasks` runs before any model is loaded: it checks that lm-eval is
installed, that every name is a task lm-eval knows (else the closest names), and
builds the tasks, which reads their data, so a hub task without network fails
here with a message instead of after minutes of loading. `run_bench` wraps our
model object (adapters included) in lm-eval's `HFLM` and calls
`lm_eval.simple_evaluate` with the prepared tasks.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunewiz.core.errors import UserError

if TYPE_CHECKING:
    from tunewiz.core.loading import LoadedModel

log = logging.getLogger(__name__)
INSTALL_HINT = "pip install 'tunewiz[eval]' (or: pip install lm-eval)"


@dataclass
class PreparedTasks:
    names: list[str]  # as the user gave them
    task_names: list[str]  # lm-eval's names (a YAML path becomes its `task:`)
    tasks: dict[str, Any]  # task name -> lm-eval Task object
    manager: Any  # lm_eval.tasks.TaskManager


@dataclass(frozen=True)
class Score:
    task: str
    metric: str
    value: float
    stderr: float | None

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "metric": self.metric,
            "value": self.value,
            "stderr": self.stderr,
        }


def require_lm_eval() -> None:
    if importlib.util.find_spec("lm_eval") is None:
        raise UserError("benchmarks need the `lm-eval` package", where="--bench", hint=INSTALL_HINT)


def _yaml_task_name(path: Path) -> str:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read the task YAML: {exc}", where=str(path)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("task"), str):
        raise UserError("a task YAML needs a `task:` name", where=str(path))
    return doc["task"]


def _quiet_lm_eval() -> None:
    for name in ("lm_eval", "lm-eval", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)


def prepare_tasks(specs: list[str]) -> PreparedTasks:
    """Check and build the tasks named (lm-eval names or task YAML paths); UserError otherwise."""
    require_lm_eval()
    _quiet_lm_eval()
    from lm_eval.tasks import TaskManager, get_task_dict

    includes, names = [], []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.suffix in (".yaml", ".yml"):
            if not path.is_file():
                raise UserError("task YAML not found", where=str(path))
            includes.append(str(path.resolve().parent))
            names.append(_yaml_task_name(path))
        else:
            names.append(spec)
    manager = TaskManager(include_path=includes or None)
    known = set(manager.all_tasks)
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=5, cutoff=0.5)
            raise UserError(
                f"lm-eval knows no benchmark {name!r}",
                where="--bench",
                hint=("closest: " + ", ".join(close)) if close else "see `lm-eval ls tasks`",
            )
    try:
        with warnings.catch_warnings():  # get_task_dict's deprecation: it still builds groups right
            warnings.simplefilter("ignore", DeprecationWarning)
            tasks = get_task_dict(names, manager)
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds when data is not local
        raise UserError(
            f"could not load the data of {', '.join(names)}: {type(exc).__name__}: {exc}",
            where="--bench",
            hint="hub tasks download their data: connect to the network once, or use a task "
            "YAML over local files",
        ) from None
    return PreparedTasks(list(specs), names, tasks, manager)


def run_bench(
    loaded: LoadedModel, prepared: PreparedTasks, *, limit: int | None, batch_size: int
) -> list[Score]:
    """Scores of the loaded model (with their standard errors) on the prepared tasks."""
    import lm_eval
    from lm_eval.api.task import Task
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size)
    built = list(prepared.tasks.values())
    # Built tasks are reused (their data is read once); a group (mmlu) is passed by name so
    # that lm-eval aggregates it as it would on its own.
    tasks = built if all(isinstance(t, Task) for t in built) else prepared.task_names
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=tasks,
        limit=limit,
        task_manager=prepared.manager,
        log_samples=False,
    )
    return scores_from(results or {})


def scores_from(results: dict) -> list[Score]:
    """`results["results"]` of lm-eval ({task: {"acc,none": .., "acc_stderr,none": ..}}) as Scores."""
    out = []
    for task, metrics in (results.get("results") or {}).items():
        for key, value in metrics.items():
            metric, comma, flt = key.partition(",")
            # scores are "metric,filter"; "sample_len", "alias" and stderr entries are not
            if not comma or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            stderr = metrics.get(f"{metric}_stderr,{flt}")
            out.append(
                Score(
                    task,
                    metric,
                    float(value),
                    float(stderr) if isinstance(stderr, (int, float)) else None,
                )
            )
    return out
