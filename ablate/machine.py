"""What this machine offers a study: its free memory and the CPU cores this process may use.
The data's, the checks' and the counter's memory checks and the cluster's thread counts ask
here. Nothing here imports torch.
"""

from __future__ import annotations

import os


def cpu_cores() -> int:
    """The CPU cores this process may run on: its affinity mask (what a container, taskset or
    SLURM allots), else every core of the machine."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def available_memory() -> int | None:
    """Bytes of memory available: Linux's MemAvailable, else the free pages; None if unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
