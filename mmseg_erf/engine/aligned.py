"""Aligned canvases: per-point maps placed around their response point, with coverage.

A point's (H, W) map is written onto a canvas of offsets from its anchor (y0, x0):
canvas cell (ry + dy, rx + dx) holds map pixel (y0 + dy, x0 + dx). With the default
radii (H - 1, W - 1) every offset of every point fits: the canvas is (2H - 1, 2W - 1).
Each cell also counts how many maps covered it (their pixel was inside the image),
so the mean of a cell is its sum over the maps that saw it: a point near the border
adds nothing, not zeros, at the offsets that fall outside its image.
"""
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np


def canvas_radii(shape: Sequence[int], window: Optional[int] = None) -> Tuple[int, int]:
    """(ry, rx) of the canvas: (H - 1, W - 1), or ``window // 2`` each (capped at those)."""
    h, w = int(shape[0]), int(shape[1])
    if window is None:
        return h - 1, w - 1
    return min(window // 2, h - 1), min(window // 2, w - 1)


def placement(shape: Sequence[int], anchor: Sequence[int],
              radii: Sequence[int]) -> Tuple[Tuple[slice, slice], Tuple[slice, slice]]:
    """(canvas slices, map slices) that put a map of ``shape`` around ``anchor``."""
    (h, w), (ay, ax), (ry, rx) = shape, anchor, radii
    y0, y1 = max(0, ay - ry), min(h, ay + ry + 1)
    x0, x1 = max(0, ax - rx), min(w, ax + rx + 1)
    canvas = (slice(y0 - ay + ry, y1 - ay + ry), slice(x0 - ax + rx, x1 - ax + rx))
    return canvas, (slice(y0, y1), slice(x0, x1))


class AlignedAccumulator:
    """Float64 sums of aligned maps per (target, group), coverage and counts per group.

    A point joins every group it names. A point whose map is non-finite for ANY
    target is skipped for all of them (counted in ``skipped_points``), so every
    target of a group averages the same points and shares one coverage canvas.

    Args:
        targets (Sequence[str]): target names.
        shape (tuple): (H, W) of the input (and of every per-point map).
        window (int, optional): odd canvas side; default 2H - 1 (x 2W - 1).
    """

    def __init__(self, targets: Sequence[str], shape: Sequence[int],
                 window: Optional[int] = None):
        self.targets = tuple(targets)
        self.shape = (int(shape[0]), int(shape[1]))
        self.window = window
        self.radii = canvas_radii(self.shape, window)
        self.canvas_shape = (2 * self.radii[0] + 1, 2 * self.radii[1] + 1)
        self.sums: Dict[str, Dict[str, np.ndarray]] = {t: {} for t in self.targets}
        self.coverage: Dict[str, np.ndarray] = {}
        self.counts: Dict[str, int] = {}
        self.zero_maps: Dict[str, Dict[str, int]] = {t: {} for t in self.targets}
        self.images = 0
        self.skipped = 0          # images (unreadable), as ERFAccumulator counts them
        self.skipped_points = 0   # points with a non-finite map

    @property
    def groups(self) -> List[str]:
        return list(self.counts)

    def _open_group(self, group: str) -> None:
        if group in self.counts:
            return
        self.counts[group] = 0
        self.coverage[group] = np.zeros(self.canvas_shape, dtype=np.int64)
        for target in self.targets:
            self.sums[target][group] = np.zeros(self.canvas_shape, dtype=np.float64)
            self.zero_maps[target][group] = 0

    def add(self, maps: Mapping[str, np.ndarray], anchors: Sequence[Sequence[int]],
            groups: Sequence[Sequence[str]]) -> np.ndarray:
        """Add one map per point: ``maps[target]`` (P, H, W), ``anchors`` (P, 2) pixels.

        Returns:
            np.ndarray: bool (P,), True where the point was counted.
        """
        batch = [np.asarray(maps[t], dtype=np.float64) for t in self.targets]
        for arr in batch:
            if arr.shape[1:] != self.shape:
                raise ValueError(f'map of shape {arr.shape[1:]} does not match the input '
                                 f'shape {self.shape}')
        finite = np.ones(len(anchors), dtype=bool)
        for arr in batch:
            finite &= np.isfinite(arr).all(axis=(1, 2))
        for p, (anchor, names) in enumerate(zip(anchors, groups)):
            if not finite[p]:
                self.skipped_points += 1
                continue
            canvas_idx, map_idx = placement(self.shape, (int(anchor[0]), int(anchor[1])),
                                            self.radii)
            for group in names:
                self._open_group(group)
                self.counts[group] += 1
                self.coverage[group][canvas_idx] += 1
                for target, arr in zip(self.targets, batch):
                    self.sums[target][group][canvas_idx] += arr[p][map_idx]
                    if not arr[p].any():
                        self.zero_maps[target][group] += 1
        return finite

    def mean(self, target: str, group: str) -> np.ndarray:
        """Sum over coverage; NaN where no map covered the offset."""
        cover = self.coverage[group]
        return np.divide(self.sums[target][group], cover,
                         out=np.full(self.canvas_shape, np.nan), where=cover > 0)

    def merge(self, other: 'AlignedAccumulator') -> None:
        """Add another accumulator's sums, coverage and counts (another rank's)."""
        if (other.targets, other.shape, other.radii) != (self.targets, self.shape,
                                                         self.radii):
            raise ValueError('cannot merge aligned accumulators of different targets, '
                             'input sizes or windows')
        for group in other.groups:
            self._open_group(group)
            self.counts[group] += other.counts[group]
            self.coverage[group] += other.coverage[group]
            for target in self.targets:
                self.sums[target][group] += other.sums[target][group]
                self.zero_maps[target][group] += other.zero_maps[target][group]
        self.images += other.images
        self.skipped += other.skipped
        self.skipped_points += other.skipped_points
