"""The CPUs a study may use, and how its processes share them (pinning one worker per core group)."""

from __future__ import annotations

import os

from hpsearch.errors import ConfigError


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity where the OS has one, else all of the machine's)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def share_of_cores(processes: int) -> int:
    """TensorFlow threads for each of ``processes`` processes training at once on this machine."""
    return max(1, len(usable_cpus()) // processes)


def cpu_groups(processes: int) -> list[list[int]] | None:
    """The usable CPUs in ``processes`` disjoint groups of equal size, one per worker process; None where the OS
    cannot pin a process to CPUs or there are fewer CPUs than processes.

    Two unpinned TensorFlow processes on two cores trained about 1.5x as fast as one; pinned, one to each core,
    about 1.9x: a small model's fit hands work back and forth between Python's thread and TensorFlow's, and
    unpinned, each hand-over can wait for the core the other process is using.
    """
    cpus = usable_cpus()
    size = len(cpus) // processes
    if not hasattr(os, "sched_setaffinity") or size == 0:
        return None
    return [cpus[k * size:(k + 1) * size] for k in range(processes)]


def pin_to_cpus(cpus: list[int]) -> None:
    """Run this process (and the threads and processes it starts from now on) on ``cpus`` only."""
    try:
        os.sched_setaffinity(0, cpus)
    except (AttributeError, OSError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "this system cannot pin processes"
        raise ConfigError(f"cannot run on CPUs {','.join(map(str, cpus))} ({why}); usable here: "
                          f"{','.join(map(str, usable_cpus()))}", field="--cpus") from None
