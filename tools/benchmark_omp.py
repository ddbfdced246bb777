#!/usr/bin/env python
"""ERF time under each OpenMP wait policy, idle and with one core busy, side by side.

    python tools/benchmark_omp.py [--model vmamba-t] [--size 384] [--num-images 3] \
        [--targets backbone.2] [--repeats 2] [--conditions idle busy]

Policies: default (mmseg-erf's choice from the load at start-up), unset (OpenMP's
default), PASSIVE, ACTIVE; each run in a fresh process. "busy": a busy-loop process
started by this script keeps one core busy. Prints best and median seconds per image
and their ratios to the best policy, and whether the default is within --limit (1.2x)
of it.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmseg_erf.benchmark.omp_policy import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
