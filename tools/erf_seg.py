#!/usr/bin/env python
"""Effective receptive fields of an mmseg segmentor.

    python tools/erf_seg.py CONFIG [CHECKPOINT] [--img-dir DIR] [--targets all] ...

See ``python tools/erf_seg.py --help`` and the README.
"""
import sys

from mmseg_erf.cli import main

if __name__ == '__main__':
    sys.exit(main())
