"""Comparing ERF runs: the logic and the command line of ``tools/erf_compare.py``.

Four modes, all reading run directories written by :meth:`ERFResult.write`
(``tools/erf_seg.py``, :func:`compute_erf` and ``ERFHook`` snapshots):

* grid: one row per run, one column per target, heatmaps on one colour bar;
* ``--overlay IMAGE``: ERF contours drawn over one image at each run's geometry;
* ``--evolution ERF_DIR``: the hook's ``iter_<n>/`` snapshots of one target in
  iteration order, with the area ratios plotted against the iteration;
* point runs (``--points``): one row per group, one column per run.

Every mode writes the figure and, next to it, a Markdown and a CSV table
(``FIG.md``, ``FIG.csv``). Rooms: :mod:`.runs` (reading and checking run
directories), :mod:`.modes` (the figures' logic), :mod:`.plots` (drawing),
:mod:`.tables`, :mod:`.points` (point runs), :mod:`.cli`.
"""
from .cli import PROG, build_parser, main, run
from .modes import Outcome, compare, evolution, load_overlay_image
from .runs import (ResampleWarning, Run, default_label, iteration_snapshots, load_runs,
                   match_sizes, read_run, resample_map, resample_result, select_targets)

__all__ = [
    'Outcome', 'PROG', 'ResampleWarning', 'Run', 'build_parser', 'compare', 'default_label',
    'evolution', 'iteration_snapshots', 'load_overlay_image', 'load_runs', 'main',
    'match_sizes', 'read_run', 'resample_map', 'resample_result', 'run', 'select_targets'
]
