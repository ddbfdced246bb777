"""ERFResult and the run directory it is written to.

Every artefact a run writes comes from here, so the hook, the CLI and the API
cannot drift apart. Layout of a run directory::

    erf_<target>.npy   raw mean map (S x S, float64), never post-processed
    erf_<target>.png   heatmap (RepLKNet normalisation) with a colour bar
    metrics.json       {"num_images", "skipped", "input_size", "targets": {T: metrics}, ...}
"""
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, Iterator, Mapping, Tuple

import numpy as np

from .metrics import erf_metrics
from .plotting import render_heatmap, save_heatmap

METRICS_FILE = 'metrics.json'


def target_filename(target: str, suffix: str) -> str:
    safe = ''.join(c if c.isalnum() or c in '._-' else '_' for c in target)
    return f'erf_{safe}{suffix}'


@contextmanager
def _replacing(path: str) -> Iterator[str]:
    """A temporary path beside ``path`` (same suffix, so writers infer the format),
    renamed onto ``path`` when the block succeeds and removed when it fails."""
    stem, suffix = os.path.splitext(path)
    tmp = f'{stem}.tmp{os.getpid()}{suffix}'
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@dataclass(frozen=True)
class ERFResult:
    """The mean ERF maps of one run.

    Attributes:
        maps: target -> raw mean map (H, W) float64.
        num_images: images averaged (finite maps).
        skipped: images whose map was non-finite, or that could not be read.
        input_size: (H, W) of every input.
        model_name: shown in titles.
        meta: anything else worth keeping (response point, class index, checkpoint...).
        metrics: target -> :func:`erf_metrics`, computed from ``maps``.
    """
    maps: Mapping[str, np.ndarray]
    num_images: int
    skipped: int
    input_size: Tuple[int, int]
    model_name: str = ''
    meta: Mapping[str, object] = field(default_factory=dict)
    metrics: Mapping[str, Dict] = field(default=None)

    def __post_init__(self):
        object.__setattr__(self, 'input_size', tuple(int(s) for s in self.input_size))
        if self.metrics is None:
            object.__setattr__(self, 'metrics',
                               {t: erf_metrics(m) for t, m in self.maps.items()})

    @property
    def targets(self):
        return list(self.maps)

    def title(self, target: str) -> str:
        h, w = self.input_size
        model = f'{self.model_name}  ' if self.model_name else ''
        return f'{model}{target}\nN={self.num_images} images, {h}x{w}'

    def heatmap(self, target: str, normalization: str = 'replknet') -> np.ndarray:
        """RGB uint8 heatmap of one target, as written to ``erf_<target>.png``."""
        return render_heatmap(self.maps[target], self.title(target), normalization)

    def to_json(self) -> dict:
        return {
            'num_images': self.num_images,
            'skipped': self.skipped,
            'input_size': list(self.input_size),
            'model': self.model_name,
            'meta': dict(self.meta),
            'targets': {t: self.metrics[t] for t in self.maps},
        }

    def write(self, out_dir: str, images: bool = True) -> Dict[str, np.ndarray]:
        """Write the run directory; returns ``{target: heatmap RGB}`` (empty without images).

        Each file is written beside its final name and renamed into place, so a
        crash leaves every file whole (the old one or the new one); ``metrics.json``
        comes last.
        """
        os.makedirs(out_dir, exist_ok=True)
        heatmaps = {}
        for target, erf_map in self.maps.items():
            with _replacing(os.path.join(out_dir, target_filename(target, '.npy'))) as tmp:
                with open(tmp, 'wb') as f:
                    np.save(f, erf_map)
            if images:
                heatmaps[target] = self.heatmap(target)
                with _replacing(os.path.join(out_dir, target_filename(target, '.png'))) as tmp:
                    save_heatmap(erf_map, tmp, rgb=heatmaps[target])
        with _replacing(os.path.join(out_dir, METRICS_FILE)) as tmp:
            with open(tmp, 'w') as f:
                json.dump(self.to_json(), f, indent=2)
        return heatmaps

    @classmethod
    def read(cls, out_dir: str) -> 'ERFResult':
        """Read a run directory written by :meth:`write` (by any of the three doors)."""
        path = os.path.join(out_dir, METRICS_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f'{path} not found: {out_dir} is not an ERF run '
                                    f'directory (run tools/erf_seg.py first)')
        with open(path) as f:
            info = json.load(f)
        maps = {t: np.load(os.path.join(out_dir, target_filename(t, '.npy')))
                for t in info['targets']}
        return cls(maps=maps, num_images=info['num_images'], skipped=info['skipped'],
                   input_size=tuple(info['input_size']), model_name=info.get('model', ''),
                   meta=info.get('meta', {}), metrics=info['targets'])
