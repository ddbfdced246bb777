"""Process start-up: the OpenMP wait policy, and where start-up time goes.

This module imports nothing heavy: ``mmseg_erf/__init__.py`` runs it before
anything imports torch, so every entry point (``tools/*.py``, ``python -m
mmseg_erf``, console scripts) gets the policy and a clock started at import.

OpenMP reads ``OMP_WAIT_POLICY`` once, when its library loads (with ``import
torch``); setting it later changes nothing. By default its threads spin at each
barrier before they sleep: the fastest on an idle machine, but when another
process keeps a core busy a spinning thread takes the time slices the working
one needs (an ERF then took twice as long as with ``PASSIVE``, whose threads
sleep at once; on an idle machine PASSIVE cost up to about 1.5x). Neither is
best in both cases, so :func:`choose_wait_policy` looks at the machine first:
the CPU time the other processes use over a short sample. ``tools/benchmark_omp.py``
measures the choice against each fixed policy, idle and busy (README).
"""
import os
import sys
import time
from typing import List, Optional, Tuple

#: The policy set on a busy machine.
BUSY_WAIT_POLICY = 'PASSIVE'
#: Cores' worth of CPU time used by other processes above which the machine counts as busy.
BUSY_CORES = 0.5
#: Seconds of the sample of the machine's load (10 ticks of the kernel's 100 Hz clock).
SAMPLE_SECONDS = 0.1
# when `import mmseg_erf` began: the start of the imports --verbose reports
IMPORT_STARTED = time.perf_counter()
#: What :func:`choose_wait_policy` decided, for --verbose: (policy or None, cores or None).
WAIT_POLICY_CHOICE: Tuple[Optional[str], Optional[float]] = (None, None)


def _cpu_ticks() -> Tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat's first line.

    Steal time (the hypervisor running another guest) counts in neither: a spinning
    thread competes with this machine's processes, not with other guests.
    """
    with open('/proc/stat') as f:
        user, nice, system, idle, iowait, irq, softirq = (
            int(v) for v in f.readline().split()[1:8])
    busy = user + nice + system + irq + softirq
    return busy, busy + idle + iowait


def other_processes_cores(seconds: float = SAMPLE_SECONDS) -> Optional[float]:
    """Cores' worth of CPU time the rest of the machine used over ``seconds``.

    This process sleeps meanwhile, so all the busy time is somebody else's.

    Returns:
        float | None: e.g. 1.0 while one other process keeps a core busy; None
        where /proc/stat cannot be read (not Linux).
    """
    try:
        busy0, total0 = _cpu_ticks()
        time.sleep(seconds)
        busy1, total1 = _cpu_ticks()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1)


def choose_wait_policy() -> Optional[str]:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` when other processes keep the CPUs busy.

    Leaves the variable alone when the user set it (their value always wins), when
    torch is imported already (the runtime has read the variable: setting it now
    would be a value nothing in this process obeys) and on an idle machine
    (OpenMP's default is the fastest there). Where the load cannot be read, sets
    PASSIVE: its worst case (about 1.5x on an idle machine) is milder than the
    default's on a busy one (about 2x). A load must last two samples (0.2 s) to
    count. The choice holds for the whole run: a load that starts later is not seen.

    Returns:
        str | None: the policy set here, or None.
    """
    global WAIT_POLICY_CHOICE
    if 'OMP_WAIT_POLICY' in os.environ or 'torch' in sys.modules:
        return None
    cores = other_processes_cores()
    if cores is not None and cores >= BUSY_CORES:
        # a second sample: a blip (the kernel reclaiming memory, a short-lived process)
        # must not make a whole run PASSIVE
        again = other_processes_cores()
        cores = None if again is None else min(cores, again)
    policy = None if cores is not None and cores < BUSY_CORES else BUSY_WAIT_POLICY
    if policy is not None:
        os.environ['OMP_WAIT_POLICY'] = policy
    WAIT_POLICY_CHOICE = (policy, cores)
    return policy


def wait_policy_summary() -> str:
    """One line for --verbose: the policy in force and why."""
    policy, cores = WAIT_POLICY_CHOICE
    load = 'unknown' if cores is None else f'{cores:.1f} cores'
    if policy is not None:
        return f'OpenMP wait policy: {policy} (other processes\' load at start-up: {load})'
    if 'OMP_WAIT_POLICY' in os.environ:
        return f'OpenMP wait policy: {os.environ["OMP_WAIT_POLICY"]} (from the environment)'
    if cores is None:
        return 'OpenMP wait policy: OpenMP\'s default (torch was imported before mmseg_erf)'
    return f'OpenMP wait policy: OpenMP\'s default (other processes\' load at start-up: {load})'


class PhaseTimer:
    """Wall-clock seconds of consecutive start-up phases (``--verbose``).

    Args:
        start (float, optional): ``time.perf_counter()`` value where the first
            phase began; default now.
    """

    def __init__(self, start: Optional[float] = None):
        self._last = time.perf_counter() if start is None else start
        self.phases: List[Tuple[str, float]] = []

    def mark(self, label: str) -> None:
        """End the running phase under ``label``; the next one starts now."""
        now = time.perf_counter()
        self.phases.append((label, now - self._last))
        self._last = now

    def mark_once(self, label: str) -> None:
        """:meth:`mark`, unless a phase named ``label`` has ended already."""
        if all(done != label for done, _ in self.phases):
            self.mark(label)

    def summary(self) -> str:
        parts = ', '.join(f'{label} {seconds:.2f} s' for label, seconds in self.phases)
        total = sum(seconds for _, seconds in self.phases)
        return f'start-up: {parts} ({total:.2f} s in all)'
