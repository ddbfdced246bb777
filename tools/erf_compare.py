#!/usr/bin/env python
"""Compare effective receptive fields of several runs.

    python tools/erf_compare.py RUN_DIR [RUN_DIR ...] --out FIG.png [--labels ...]
    python tools/erf_compare.py RUN_DIR ... --overlay IMAGE --out FIG.png
    python tools/erf_compare.py --evolution WORK_DIR/erf --out FIG.png

See ``python tools/erf_compare.py --help`` and the README.
"""
import sys

from mmseg_erf.compare import main

if __name__ == '__main__':
    sys.exit(main())
