"""This machine's NVIDIA GPUs through NVML (nvidia-ml-py): no torch, no CUDA context.

The estimate command and the wizard both preselect the GPU found here; the
live panel's utilisation sampler (tui/widgets/resource_meter.py) polls NVML
on its own, since it keeps the library open between samples.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LocalGpu:
    name: str
    memory_gib: float


def local_gpus() -> list[LocalGpu]:
    """The GPUs NVML reports, in index order; [] without the library, a driver or a GPU."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver, no GPU: the common laptop case
        return []
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else name
            out.append(LocalGpu(name, pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**30))
        return out
    except Exception:  # noqa: BLE001 - a driver that answers init but not queries: none here
        return []
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - shutting down is best effort
            pass
