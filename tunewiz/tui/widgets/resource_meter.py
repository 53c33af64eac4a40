"""GPU (NVML) or CPU/RAM (psutil) load, sampled once a second.

NVML is asked lazily and only once: a machine without a GPU or driver falls
back to psutil for good. torch is never imported here (it would cost seconds
and gigabytes in the UI process). The sampler is injectable so that tests and
snapshots show fixed figures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.text import Text
from textual.widgets import Static

from tunewiz.tui.widgets.run_feed import format_pair


@dataclass(frozen=True)
class ResourceSample:
    kind: str  # "gpu" or "cpu"
    util_pct: float
    mem_used: int
    mem_total: int
    label: str = ""


Sampler = Callable[[], list[ResourceSample]]


class _NvmlSampler:
    def __init__(self):
        import pynvml  # from nvidia-ml-py

        pynvml.nvmlInit()
        self.nvml = pynvml
        self.handles = [
            pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())
        ]
        if not self.handles:
            raise RuntimeError("no GPU")

    def __call__(self) -> list[ResourceSample]:
        out = []
        for i, h in enumerate(self.handles):
            util = self.nvml.nvmlDeviceGetUtilizationRates(h).gpu
            mem = self.nvml.nvmlDeviceGetMemoryInfo(h)
            out.append(ResourceSample("gpu", float(util), int(mem.used), int(mem.total), f"GPU{i}"))
        return out


def _psutil_sampler() -> list[ResourceSample]:
    import psutil

    vm = psutil.virtual_memory()
    # interval=None: the load since the previous call, without sleeping in the UI thread
    cpu = psutil.cpu_percent(interval=None)
    return [ResourceSample("cpu", float(cpu), int(vm.total - vm.available), int(vm.total), "CPU")]


def default_sampler() -> Sampler:
    """NVML when a GPU answers, psutil otherwise."""
    try:
        return _NvmlSampler()
    except Exception:  # no library, no driver, no GPU: all mean "use psutil"
        return _psutil_sampler


def bar(fraction: float, width: int) -> str:
    fraction = min(1.0, max(0.0, fraction))
    full = round(fraction * width)
    return "█" * full + "░" * (width - full)


def render_samples(samples: list[ResourceSample], width: int = 10) -> Text:
    text = Text()
    for i, s in enumerate(samples):
        if i:
            text.append("\n")
        label = "GPU" if s.kind == "gpu" else "CPU"
        name = s.label or label
        text.append(f"{name:<4} ", style="bold")
        text.append(bar(s.util_pct / 100, width), style="green")
        text.append(f" {s.util_pct:3.0f}%\n")
        text.append(f"{'VRAM' if s.kind == 'gpu' else 'RAM':<4} ", style="bold")
        frac = s.mem_used / s.mem_total if s.mem_total else 0
        text.append(bar(frac, width), style="yellow" if frac < 0.9 else "red")
        text.append(f" {format_pair(s.mem_used, s.mem_total)}")
    return text


class ResourceMeter(Static):
    """Machine load; `sampler=None` picks NVML or psutil on mount."""

    DEFAULT_CSS = """
    ResourceMeter {
        height: auto;
    }
    """

    def __init__(self, sampler: Sampler | None = None, interval: float = 1.0, **kw):
        super().__init__("", **kw)
        self._sampler = sampler
        self.interval = interval
        self.samples: list[ResourceSample] = []

    def on_mount(self) -> None:
        if self._sampler is None:
            self._sampler = default_sampler()
        self.sample()
        if self.interval:
            self.set_interval(self.interval, self.sample)

    def sample(self) -> None:
        try:
            samples = self._sampler() if self._sampler else []
        except Exception:  # a flaky driver must not take the panel down
            return
        if samples != self.samples:
            self.samples = samples
            self.update(render_samples(samples))
