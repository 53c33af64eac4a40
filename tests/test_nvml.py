"""tunewiz.core.nvml: the GPUs this machine has, as the estimate command and the wizard see them."""

from __future__ import annotations

import sys
import types

from tunewiz.cli import estimate as cli_estimate
from tunewiz.core.nvml import LocalGpu, local_gpus
from tunewiz.tui import backend


def fake_nvml(names, shutdowns: list) -> types.SimpleNamespace:
    return types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: shutdowns.append(True),
        nvmlDeviceGetCount=lambda: len(names),
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: names[h],
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(total=(h + 1) * 24 * 2**30),
    )


def test_every_gpu_with_its_memory_and_nvml_is_shut_down(monkeypatch):
    shutdowns: list = []
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([b"RTX 4090", "RTX 6000"], shutdowns))
    gpus = [LocalGpu("RTX 4090", 24.0), LocalGpu("RTX 6000", 48.0)]
    assert local_gpus() == gpus
    assert backend.detect_gpus() == gpus
    assert cli_estimate.detect_gpu() == ("RTX 4090", 24.0, 2)
    assert len(shutdowns) == 3


def test_no_library_no_driver_or_a_failing_query_mean_no_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    assert local_gpus() == [] and cli_estimate.detect_gpu() is None

    def no_driver():
        raise RuntimeError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlInit=no_driver))
    assert local_gpus() == []

    shutdowns: list = []
    broken = fake_nvml(["X"], shutdowns)
    broken.nvmlDeviceGetCount = lambda: 1 / 0
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    assert local_gpus() == [] and shutdowns == [True]
