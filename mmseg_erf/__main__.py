"""``python -m mmseg_erf CONFIG [CHECKPOINT] ...``: the command line of ``tools/erf_seg.py``."""
import sys

from .cli import main

if __name__ == '__main__':
    sys.exit(main())
