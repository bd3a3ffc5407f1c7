"""How much of the machine other processes used while a benchmark phase ran.

Speeds measured while another job shares the cores understate the machine (on 2 cores a second torch job slows both
several times), so benchmarks record, per phase, the share of all CPUs' time that went to other processes: the busy
time of ``/proc/stat`` (everything but idle and iowait; steal counts, as the hypervisor took the CPU) less this
process's own CPU time, over the phase's wall time times the CPU count. Linux only; elsewhere the share is None.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

#: Above this share of the CPUs used by other processes, a phase's figures are flagged as contended.
CONTENDED = 0.10
_STAT = Path("/proc/stat")


def busy_cpu_s() -> float | None:
    """CPU seconds all processes have spent busy since boot (None where ``/proc/stat`` is missing)."""
    try:
        fields = _STAT.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds this process (all its threads) has used."""
    t = os.times()
    return t.user + t.system


class Contention:
    """Marks the start of a phase; :meth:`share` gives the share of the CPUs other processes used since."""

    def __init__(self, cpus: int | None = None):
        self.cpus = cpus or os.cpu_count() or 1
        self.mark()

    def mark(self) -> None:
        """Starts a new phase."""
        self._wall, self._busy, self._own = time.perf_counter(), busy_cpu_s(), own_cpu_s()

    def share(self) -> float | None:
        """Other processes' share of all CPUs since :meth:`mark` (0-1), or None when it cannot be measured."""
        busy = busy_cpu_s()
        wall = time.perf_counter() - self._wall
        if busy is None or self._busy is None or wall <= 0:
            return None
        other = (busy - self._busy) - (own_cpu_s() - self._own)
        return round(min(1.0, max(0.0, other / (wall * self.cpus))), 3)


def contended(shares: dict[str, float | None], limit: float = CONTENDED) -> dict[str, float]:
    """The phases whose share of other processes is above ``limit``."""
    return {phase: share for phase, share in shares.items() if share is not None and share > limit}
