"""CPU and memory of a process group (a root process and all its descendants) from /proc.

CPU: utime + stime + cutime + cstime of every live process of the tree. A child that
exits is reaped by its parent (Postfix's master reaps its daemons), and its CPU moves
into the parent's cutime/cstime: the sum stays complete across short-lived children, so
the difference of two readings is the group's CPU in between.

Memory: VmHWM (peak RSS) summed over the live processes (reset at the start of a cell by
writing 5 to /proc/PID/clear_refs), and a sampler that records the peak of the summed
VmRSS and of the summed PSS (smaps_rollup: shared pages divided among the processes
sharing them — fairer to a many-process design such as Postfix).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable

TICK = os.sysconf("SC_CLK_TCK")


def _ppids() -> dict[int, int]:
    out: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            out[int(name)] = int(fields[1])
        except (OSError, IndexError):
            continue
    return out


def tree(roots: list[int]) -> list[int]:
    ppids = _ppids()
    children: dict[int, list[int]] = {}
    for pid, ppid in ppids.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [r for r in roots if r in ppids]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def _cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / TICK


def _status_kb(pid: int, key: bytes) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Group:
    """A named process group: ``roots()`` gives its root pids (read each time)."""

    def __init__(self, name: str, roots: Callable[[], list[int]]) -> None:
        self.name = name
        self.roots = roots
        self.peak_rss_kb = 0
        self.peak_pss_kb = 0

    def pids(self) -> list[int]:
        return tree(self.roots())

    def cpu(self) -> float:
        return sum(_cpu(p) for p in self.pids())

    def reset_peaks(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(OSError), open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        self.peak_rss_kb = self.peak_pss_kb = 0

    def hwm_kb(self) -> int:
        return sum(_status_kb(p, b"VmHWM:") for p in self.pids())

    def rss_kb(self) -> int:
        return sum(_status_kb(p, b"VmRSS:") for p in self.pids())

    def sample(self) -> None:
        pids = self.pids()
        self.peak_rss_kb = max(self.peak_rss_kb, sum(_status_kb(p, b"VmRSS:") for p in pids))
        self.peak_pss_kb = max(self.peak_pss_kb, sum(_pss_kb(p) for p in pids))

    def count(self) -> int:
        return len(self.pids())


class Sampler:
    """Samples the groups' memory every ``interval`` seconds in a thread while active."""

    def __init__(self, groups: list[Group], interval: float = 0.5) -> None:
        self.groups, self.interval = groups, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        for g in self.groups:
            g.reset_peaks()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for g in self.groups:
            g.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for g in self.groups:
                g.sample()
