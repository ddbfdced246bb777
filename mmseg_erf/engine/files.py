"""File names of a run directory and the one way every file gets there (atomically)."""
import os
from contextlib import contextmanager
from typing import Iterator

METRICS_FILE = 'metrics.json'


def target_filename(target: str, suffix: str) -> str:
    """``erf_<target><suffix>``: the classic (centre) run's map and heatmap names."""
    safe = ''.join(c if c.isalnum() or c in '._-' else '_' for c in target)
    return f'erf_{safe}{suffix}'


def safe_name(name: str) -> str:
    return ''.join(c if c.isalnum() or c in '.-' else '_' for c in name.replace('/', '~'))


def aligned_filename(target: str, group: str) -> str:
    return f'aligned_{safe_name(target)}__{safe_name(group)}.npy'


def coverage_filename(group: str) -> str:
    return f'coverage__{safe_name(group)}.npy'


@contextmanager
def replacing(path: str) -> Iterator[str]:
    """A temporary path beside ``path`` (same suffix, so writers infer the format),
    renamed onto ``path`` when the block succeeds and removed when it fails: a crash
    leaves the old file or the new one, never half of one."""
    stem, suffix = os.path.splitext(path)
    tmp = f'{stem}.tmp{os.getpid()}{suffix}'
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
