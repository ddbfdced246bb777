#!/usr/bin/env python
"""Time the reference ERF recipe against mmseg-erf on the same model and images.

    python tools/benchmark_erf.py [--models vmamba-t r50] [--sizes 512 1024] \
        [--num-images 2] [--repeats 1] [--profile] [--amp bf16] [--device cuda]

(a) reference: batch 1, per target a full forward of the segmentor and a backward
(RepLKNet / VMamba recipe); (b) mmseg-erf: ERFSession, all targets from one
truncated forward. Each variant runs in its own process (separate peak memory);
the script prints seconds per image, images per second, peak resident (and GPU)
memory, the time ratio b/a, the FLOP floor and whether the maps agree.
Models are random-init (no download); configs not present are skipped.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmseg_erf.benchmark import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
