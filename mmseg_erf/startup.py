"""Process start-up: the OpenMP wait policy, and where start-up time goes.

This module imports nothing heavy: ``mmseg_erf/__init__.py`` runs it before
anything imports torch, so every entry point (``tools/*.py``, ``python -m
mmseg_erf``, console scripts) gets the policy and a clock started at import.

OpenMP reads ``OMP_WAIT_POLICY`` once, when its library loads (with ``import
torch``); setting it later changes nothing. By default its threads spin at each
barrier before they sleep; when another process keeps a core busy, a spinning
thread takes the time slices the working one needs (an ERF then took twice as
long as with ``PASSIVE``, whose threads sleep at once; on an idle machine PASSIVE
cost up to about 1.5x: ``tools/benchmark_omp.py``, README).
"""
import os
import sys
import time
from typing import List, Optional, Tuple

PREFERRED_WAIT_POLICY = 'PASSIVE'
# when `import mmseg_erf` began: the start of the imports --verbose reports
IMPORT_STARTED = time.perf_counter()


def prefer_passive_wait() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it or torch is loaded.

    Returns:
        bool: whether the variable was set here. A user's own value always wins;
        once torch is imported the runtime has read the variable already, so it is
        left alone rather than set to a value nothing in this process obeys.
    """
    if 'OMP_WAIT_POLICY' in os.environ or 'torch' in sys.modules:
        return False
    os.environ['OMP_WAIT_POLICY'] = PREFERRED_WAIT_POLICY
    return True


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
