"""How busy the machine is: benchmarks on a shared machine report the CPU other processes used."""

from __future__ import annotations

import os
import time


class CpuMeter:
    """How much CPU other processes used since creation, from ``/proc/stat`` (Linux only); our
    own process and its worker subprocesses count as ours."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.busy = _machine_busy_s()
        self.own = _own_cpu_s()

    def other_cores(self) -> float | None:
        busy = _machine_busy_s()
        if busy is None or self.busy is None:
            return None
        wall = time.perf_counter() - self.wall
        others = (busy - self.busy) - (_own_cpu_s() - self.own)
        return max(0.0, others / wall)


def _machine_busy_s() -> float | None:
    """CPU seconds all processes have used since boot (user, nice, system, irq, softirq,
    steal)."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(value) for value in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(fields[:3]) + sum(fields[5:8])) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system
