"""EnergyMeter: joules per window, measured with Zeus where the hardware allows, else an estimate
that says it is one.

Zeus measures GPU energy through NVML and CPU/DRAM energy through RAPL. Where neither is readable
(CPU machines without RAPL, such as most VMs) the meter estimates:

    joules = watts * seconds,   watts = [energy].watts, or [energy].cpu_watts_per_core * torch threads

so every figure carries a source: "measured: gpu", "measured: cpu" or "estimate".

Known trap: zeus-ml 0.11 crashes creating a monitor when the `amdsmi` package is installed but its
shared library is absent (KeyError: 'libamd_smi.so'). We mark amdsmi unavailable before Zeus looks.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass

from greencode.config import EnergyConfig

MEASURED_GPU, MEASURED_CPU, ESTIMATE = "measured: gpu", "measured: cpu", "estimate"


@dataclass(frozen=True)
class Measurement:
    seconds: float
    joules: float
    source: str


def _guard_amdsmi() -> None:
    if "amdsmi" in sys.modules:
        return
    import contextlib
    import io

    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            import amdsmi  # noqa: F401  (it prints its own complaints on a broken install)
    except Exception:  # broken install: importing it raises KeyError, OSError...
        sys.modules["amdsmi"] = None  # makes `import amdsmi` raise ImportError, which Zeus handles


def _zeus_monitor():
    """A ZeusMonitor over every readable GPU and CPU, or None when nothing is readable."""
    _guard_amdsmi()
    try:
        from zeus.monitor import ZeusMonitor

        for name in list(logging.root.manager.loggerDict):  # Zeus logs every probe at INFO
            if name.startswith("zeus"):
                logging.getLogger(name).setLevel(logging.ERROR)

        monitor = ZeusMonitor(approx_instant_energy=True)
    except Exception:  # Zeus not installed, no devices, driver mismatch: fall back to the estimate
        return None
    if not monitor.gpu_indices and not monitor.cpu_indices:
        return None
    return monitor


def estimate_watts(config: EnergyConfig) -> float:
    if config.watts > 0:
        return config.watts
    import torch

    return config.cpu_watts_per_core * torch.get_num_threads()


class EnergyMeter:
    """Named windows like Zeus's: begin_window(key) ... end_window(key) -> Measurement."""

    def __init__(self, config: EnergyConfig | None = None):
        self.config = config or EnergyConfig()
        self._monitor = None if self.config.source == "estimate" else _zeus_monitor()
        if self._monitor is None and self.config.source == "zeus":
            from greencode.errors import GreencodeError

            raise GreencodeError("[energy].source = 'zeus' but Zeus can read no GPU (NVML) or CPU (RAPL) "
                                 "counter here; use 'auto' or 'estimate'")
        self._watts = estimate_watts(self.config)
        self._starts: dict[str, float] = {}

    @property
    def source(self) -> str:
        if self._monitor is None:
            return ESTIMATE
        return MEASURED_GPU if self._monitor.gpu_indices else MEASURED_CPU

    @property
    def watts(self) -> float:
        """The power the estimate assumes (W)."""
        return self._watts

    def begin_window(self, key: str) -> None:
        self._starts[key] = time.perf_counter()
        if self._monitor is not None:
            self._monitor.begin_window(key, sync_execution=False)

    def end_window(self, key: str) -> Measurement:
        seconds = time.perf_counter() - self._starts.pop(key)
        if self._monitor is None:
            return Measurement(seconds, self._watts * seconds, ESTIMATE)
        result = self._monitor.end_window(key, sync_execution=False)
        joules = result.total_energy
        return Measurement(seconds, float(joules), self.source)


def describe_meter(meter: EnergyMeter) -> str:
    """Where a meter's joules come from, in one line ('estimate (40 W x seconds; ...)' or 'measured: gpu')."""
    if meter.source == ESTIMATE:
        return f"{ESTIMATE} ({meter.watts:g} W x seconds; no NVML or RAPL readable)"
    return meter.source
