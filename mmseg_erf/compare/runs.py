"""Run directories as the comparison reads them: loaded, labelled, checked, resampled."""
import os
import re
import warnings
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..engine import ERFResult
from ..engine.files import METRICS_FILE
from ..errors import ERFUsageError
from .tables import size_text

# run-directory names that say nothing about the run: the default output folder
# of erf_seg.py and the hook, and the hook's snapshot names
_GENERIC_NAME = re.compile(r'^(erf|out|output|outputs|results?|val|test|iter_\d+)$')
_SNAPSHOT = re.compile(r'^iter_(\d+)$')


class ResampleWarning(UserWarning):
    """Maps of another input size were resampled to the first run's size."""


@dataclass(frozen=True)
class Run:
    """One run directory as it is drawn.

    Attributes:
        label: row label and table key.
        path: the run directory.
        result: its maps and metrics (resampled ones when ``resampled_from`` is set).
        resampled_from: the run's own input size when its maps were resampled.
    """
    label: str
    path: str
    result: ERFResult
    resampled_from: Optional[Tuple[int, int]] = None


# ---- loading and checking ---------------------------------------------------------
def read_run(path: str) -> ERFResult:
    """:meth:`ERFResult.read`, with a message that says which argument was wrong."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f'run directory {path} does not exist; pass folders '
                                f'written by tools/erf_seg.py or by ERFHook')
    if not os.path.isfile(os.path.join(path, METRICS_FILE)):
        return ERFResult.read(path)  # its FileNotFoundError says what the folder lacks
    try:
        return ERFResult.read(path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        # a metrics.json cut short or edited, a map file missing or not a .npy
        detail = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise ERFUsageError(f'run directory {path} is damaged ({type(error).__name__}: '
                            f'{" ".join(str(detail).split())}); compute it again with '
                            f'tools/erf_seg.py, or leave it out') from None


def run_kind(path: str) -> str:
    """'points' or 'classic', from the run's ``metrics.json`` alone; a missing or
    damaged one is refused as :func:`read_run` refuses it."""
    import json
    if not os.path.isdir(path):
        raise FileNotFoundError(f'run directory {path} does not exist; pass folders '
                                f'written by tools/erf_seg.py or by ERFHook')
    metrics = os.path.join(path, METRICS_FILE)
    if not os.path.isfile(metrics):
        return 'classic'  # read_run names what the folder lacks
    try:
        with open(metrics) as f:
            info = json.load(f)
        return 'points' if info.get('kind') == 'points' else 'classic'
    except (OSError, ValueError, AttributeError) as error:
        raise ERFUsageError(f'run directory {path} is damaged ({type(error).__name__}: '
                            f'{" ".join(str(error).split())}); compute it again with '
                            f'tools/erf_seg.py, or leave it out') from None


def run_kinds(paths: Sequence[str]) -> str:
    """The one kind of every run (each read, none skipped); runs of both kinds are
    refused, naming one of each."""
    kinds = {path: run_kind(path) for path in paths}
    if len(set(kinds.values())) > 1:
        point = next(p for p, k in kinds.items() if k == 'points')
        classic = next(p for p, k in kinds.items() if k == 'classic')
        raise ERFUsageError(f'{point} is a point run (--points) and {classic} a centre run; '
                            f'compare runs of one kind')
    return next(iter(kinds.values()), 'classic')


def default_label(path: str, result: ERFResult) -> str:
    """The directory name, or the model name where the name says nothing (``erf``, ``iter_N``)."""
    name = os.path.basename(os.path.normpath(os.path.abspath(path)))
    if not _GENERIC_NAME.match(name):
        return name
    if result.model_name:
        # 'erf' adds nothing to the model name; a snapshot name does ('iter_400')
        return result.model_name if name == 'erf' else f'{result.model_name} {name}'
    parent = os.path.basename(os.path.dirname(os.path.normpath(os.path.abspath(path))))
    return f'{parent}/{name}' if parent else name


def make_labels(paths: Sequence[str], results: Sequence[ERFResult],
                labels: Optional[Sequence[str]] = None) -> List[str]:
    """Given labels (one per run), or default ones made unique with ``#k``."""
    if labels:
        if len(labels) != len(paths):
            raise ERFUsageError(f'--labels has {len(labels)} label(s) for {len(paths)} run '
                                f'directories; pass one label per run, in the same order')
        return list(labels)
    names = [default_label(p, r) for p, r in zip(paths, results)]
    # numbering keeps two runs of one config apart without guessing
    return [f'{name} #{i + 1}' if names.count(name) > 1 else name
            for i, name in enumerate(names)]


def load_runs(paths: Sequence[str], labels: Optional[Sequence[str]] = None) -> List[Run]:
    if not paths:
        raise ERFUsageError('no run directory given; pass one or more folders written by '
                            'tools/erf_seg.py (or --evolution with the hook\'s erf folder)')
    results = [read_run(p) for p in paths]
    for path, result in zip(paths, results):
        if result.meta.get('partial'):
            warnings.warn(f'{path} holds the partial result of an interrupted run '
                          f'({result.num_images} images); finish it with erf_seg.py --resume',
                          UserWarning, stacklevel=2)
    return [Run(label, path, result) for label, path, result in
            zip(make_labels(paths, results, labels), paths, results)]


def select_targets(runs: Sequence[Run], targets: Optional[Sequence[str]] = None) -> List[str]:
    """The requested targets (each present in every run), or those common to all runs.

    The default keeps the first run's order, so the columns read as that run was computed.
    """
    if targets:
        for run in runs:
            missing = [t for t in targets if t not in run.result.maps]
            if missing:
                raise ERFUsageError(
                    f'target {", ".join(missing)} is not in run {run.label} ({run.path}), '
                    f'which has {", ".join(run.result.targets)}; pass --targets with '
                    f'targets every run has')
        return list(targets)
    common = [t for t in runs[0].result.targets
              if all(t in run.result.maps for run in runs[1:])]
    if not common:
        have = '; '.join(f'{r.label}: {", ".join(r.result.targets)}' for r in runs)
        raise ERFUsageError(f'no target is common to all runs ({have}); compare runs '
                            f'computed for at least one shared target')
    return common


def _linear_weights(src: int, dst: int) -> np.ndarray:
    """(dst, src) bilinear weights along one axis, centre pixel onto centre pixel.

    The metrics measure from pixel ``n // 2``; aligning corners instead would move
    the ERF's peak half a pixel off that centre at even sizes. Shrinking widens the
    triangle kernel to the source spacing (antialiasing), so a narrow ERF is not
    lost between samples.
    """
    step = src / dst
    pos = (np.arange(dst) - dst // 2) * step + src // 2
    pos = np.clip(pos, 0, src - 1)  # the last half pixel repeats the edge
    width = max(1.0, step)
    weights = np.clip(1 - np.abs(np.arange(src)[None, :] - pos[:, None]) / width, 0, None)
    return weights / weights.sum(1, keepdims=True)


def resample_map(erf_map: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Bilinear resampling to ``size`` that keeps the map's sum (its total gradient mass)."""
    erf_map = np.asarray(erf_map, dtype=np.float64)
    if tuple(erf_map.shape) == tuple(size):
        return erf_map.copy()
    rows = _linear_weights(erf_map.shape[0], int(size[0]))
    cols = _linear_weights(erf_map.shape[1], int(size[1]))
    out = rows @ erf_map @ cols.T
    total = out.sum()
    return out * (erf_map.sum() / total) if total > 0 else out


def resample_result(result: ERFResult, size: Tuple[int, int]) -> ERFResult:
    """The result at another input size; metrics are recomputed on the resampled maps."""
    return ERFResult.classic({t: resample_map(result.map(t), size) for t in result.targets},
                             result.num_images, result.skipped, size, result.model_name,
                             dict(result.meta, resampled_from=list(result.input_size)))


def match_sizes(runs: Sequence[Run], resample: bool = False) -> List[Run]:
    """Refuse runs of different input sizes, or resample them to the first run's size.

    Maps of different sizes are never drawn or tabulated side by side silently: a
    pixel, an area ratio and a radius all mean something else at another size.
    """
    size = runs[0].result.input_size
    other = [r for r in runs if r.result.input_size != size]
    if not other:
        return list(runs)
    sizes = ', '.join(f'{r.label} ({r.path}) is {size_text(r.result.input_size)}' for r in runs)
    if not resample:
        raise ERFUsageError(f'runs have different input sizes: {sizes}; pass --resample to '
                            f'resample every map to {size_text(size)} (the first run\'s size), '
                            f'or compare runs of one size')
    warnings.warn(f'resampling {", ".join(r.label for r in other)} to {size_text(size)} '
                  f'(bilinear, sum preserved; metrics recomputed): {sizes}', ResampleWarning,
                  stacklevel=2)
    return [Run(r.label, r.path, resample_result(r.result, size), r.result.input_size)
            if r.result.input_size != size else r for r in runs]


def iteration_snapshots(erf_dir: str) -> List[Tuple[int, str]]:
    """``(n, path)`` of the ``iter_<n>/`` run directories in ``erf_dir``, by number."""
    if not os.path.isdir(erf_dir):
        raise FileNotFoundError(f'--evolution folder {erf_dir} does not exist; pass the '
                                f"hook's folder of snapshots (<work_dir>/erf)")
    found = []
    for name in os.listdir(erf_dir):
        match = _SNAPSHOT.match(name)
        path = os.path.join(erf_dir, name)
        if match and os.path.isfile(os.path.join(path, 'metrics.json')):
            found.append((int(match.group(1)), path))
    if not found:
        raise ERFUsageError(f'{erf_dir} holds no iter_<n>/ snapshot with a metrics.json; '
                            f"pass the hook's folder of snapshots (<work_dir>/erf), not one "
                            f'run directory')
    # numeric, not lexical: iter_10 comes after iter_2
    return sorted(found)


