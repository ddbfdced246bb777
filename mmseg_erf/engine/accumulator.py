"""Running float64 sums of per-point ERF maps on aligned canvases, per target and group.

A point's (H, W) map is written onto a canvas of offsets from its anchor (y0, x0):
canvas cell (top + dy, left + dx) holds map pixel (y0 + dy, x0 + dx). The canvas spans
the offsets the point set can produce: for points anywhere, ``H - 1`` and ``W - 1`` each
way (2H - 1 x 2W - 1) or a window; for the centre kind, whose one point sits at the
same pixel of every image, exactly the image frame, so the classic ERF is this
accumulator's canvas with every offset seen by every image.

Each cell also counts how many maps covered it (their pixel was inside the image),
so the mean of a cell is its sum over the maps that saw it: a point near the border
adds nothing, not zeros, at the offsets that fall outside its image.

Intervals need the spread over images, and a copy per image would not fit at 1024 x
50 images; so ``buckets`` B > 0 also keeps B partial sums per target x group, image
at dataset position p in bucket ``p % B``: the same bucket in any batch size, rank
split or resume (positions are global), and as exact as the main sum (B x its
memory). The main sum is still added as before, so a run's mean maps do not
depend on B. The support canvas (where any map's raw input gradient was non-zero)
gives the theoretical receptive field.
"""
import os
import tempfile
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

Extents = Tuple[int, int, int, int]  # offsets reached above, left of, below, right of the anchor


def canvas_extents(shape: Sequence[int], window: Optional[int] = None,
                   anchor: Optional[Sequence[int]] = None) -> Extents:
    """(top, left, bottom, right) of the canvas around the anchor.

    ``anchor`` (a point set whose one point is at the same pixel of every image):
    the image frame around it. Otherwise every offset a point can produce,
    ``H - 1`` and ``W - 1`` each way. ``window`` (odd side) caps every extent at
    ``window // 2``.
    """
    h, w = int(shape[0]), int(shape[1])
    if anchor is not None:
        ay, ax = int(anchor[0]), int(anchor[1])
        reach = (ay, ax, h - 1 - ay, w - 1 - ax)
    else:
        reach = (h - 1, w - 1, h - 1, w - 1)
    if window is None:
        return reach
    return tuple(min(r, window // 2) for r in reach)


def placement(shape: Sequence[int], anchor: Sequence[int],
              extents: Extents) -> Tuple[Tuple[slice, slice], Tuple[slice, slice]]:
    """(canvas slices, map slices) that put a map of ``shape`` around ``anchor``."""
    (h, w), (ay, ax), (top, left, bottom, right) = shape, anchor, extents
    y0, y1 = max(0, ay - top), min(h, ay + bottom + 1)
    x0, x1 = max(0, ax - left), min(w, ax + right + 1)
    canvas = (slice(y0 - ay + top, y1 - ay + top), slice(x0 - ax + left, x1 - ax + left))
    return canvas, (slice(y0, y1), slice(x0, x1))


class ERFAccumulator:
    """Float64 sums of aligned maps per (target, group), coverage and counts per group.

    A point joins every group it names. A point whose map is non-finite for ANY
    target is skipped for all of them (counted in ``skipped_points``), so every
    target of a group averages the same points and shares one coverage canvas. An
    image counts as used when it had no point or at least one finite one, and as
    skipped when every point it had was non-finite (or, through :attr:`skipped`,
    when it could not be read): with one point per image, as the classic ERF has,
    these are the image counts of Luo et al.'s average.

    Args:
        targets (Sequence[str]): target names, in report order.
        shape (tuple): (H, W) of the input (and of every per-point map).
        window (int, optional): odd canvas side cap (see :func:`canvas_extents`).
        anchor (tuple, optional): the pixel every image's one point sits at.
        buckets (int): B partial sums for intervals (0: none).
    """

    def __init__(self, targets: Sequence[str], shape: Sequence[int],
                 window: Optional[int] = None, anchor: Optional[Sequence[int]] = None,
                 buckets: int = 0):
        self.targets = tuple(targets)
        self.shape = (int(shape[0]), int(shape[1]))
        self.window = window
        self.anchor = None if anchor is None else (int(anchor[0]), int(anchor[1]))
        self.extents = canvas_extents(self.shape, window, self.anchor)
        top, left, bottom, right = self.extents
        self.canvas_shape = (top + bottom + 1, left + right + 1)
        self.sums: Dict[str, Dict[str, np.ndarray]] = {t: {} for t in self.targets}
        self.coverage: Dict[str, np.ndarray] = {}
        self.counts: Dict[str, int] = {}
        self.zero_maps: Dict[str, Dict[str, int]] = {t: {} for t in self.targets}
        self.buckets = int(buckets)
        self.bucket_sums: Dict[str, Dict[str, np.ndarray]] = {t: {} for t in self.targets}
        self.bucket_counts: Dict[str, np.ndarray] = {}
        # with a fixed anchor every map covers the whole canvas: a bucket's coverage is
        # its count, so only the other point sets keep (B, canvas) coverage
        self.bucket_coverage: Dict[str, np.ndarray] = {}
        self.support: Dict[str, Dict[str, np.ndarray]] = {t: {} for t in self.targets}
        self.images = 0           # images used
        self.skipped = 0          # images unreadable, or with only non-finite maps
        self.skipped_points = 0   # points with a non-finite map
        self.backwards = 0        # backward passes per target
        self.points = 0           # points whose maps were computed

    @property
    def groups(self) -> List[str]:
        return list(self.counts)

    def open_group(self, group: str) -> None:
        if group in self.counts:
            return
        self.counts[group] = 0
        self.coverage[group] = np.zeros(self.canvas_shape, dtype=np.int64)
        for target in self.targets:
            self.sums[target][group] = np.zeros(self.canvas_shape, dtype=np.float64)
            self.zero_maps[target][group] = 0
            self.support[target][group] = np.zeros(self.canvas_shape, dtype=bool)
        if self.buckets:
            stack = (self.buckets, ) + self.canvas_shape
            self.bucket_counts[group] = np.zeros(self.buckets, dtype=np.int64)
            if self.anchor is None:
                self.bucket_coverage[group] = np.zeros(stack, dtype=np.int64)
            for target in self.targets:
                self.bucket_sums[target][group] = np.zeros(stack, dtype=np.float64)

    def add(self, maps: Mapping[str, np.ndarray], anchors: Sequence[Sequence[int]],
            groups: Sequence[Sequence[str]], positions: Optional[Sequence[int]] = None,
            supports: Optional[Mapping[str, np.ndarray]] = None) -> np.ndarray:
        """Add one map per point: ``maps[target]`` (P, H, W), ``anchors`` (P, 2) pixels.

        Points that share an anchor and groups are summed first and added once
        (the centre kind: a whole batch in one addition). ``positions`` (P,): each
        point's image position, for its bucket (default: points in arrival order);
        ``supports[target]`` (P, H, W) bool: where its raw gradient was non-zero.

        Returns:
            np.ndarray: bool (P,), True where the point was counted.
        """
        missing = set(self.targets) - set(maps)
        if missing:
            raise KeyError(f'maps for targets {sorted(missing)} are missing')
        batch = [np.asarray(maps[t], dtype=np.float64) for t in self.targets]
        for arr in batch:
            if arr.shape[1:] != self.shape:
                raise ValueError(f'map of shape {arr.shape[1:]} does not match the input '
                                 f'shape {self.shape}; every image must have the same input size')
        finite = np.ones(len(anchors), dtype=bool)
        for arr in batch:
            finite &= np.isfinite(arr).all(axis=(1, 2))
        self.skipped_points += int((~finite).sum())
        self.points += len(anchors)
        together: Dict[Tuple, List[int]] = {}
        for p, (anchor, names) in enumerate(zip(anchors, groups)):
            if finite[p]:
                key = (int(anchor[0]), int(anchor[1]), tuple(names))
                together.setdefault(key, []).append(p)
        for (ay, ax, names), points in together.items():
            canvas_idx, map_idx = placement(self.shape, (ay, ax), self.extents)
            parts = [arr[points] for arr in batch]
            for group in names:
                self.open_group(group)
                self.counts[group] += len(points)
                self.coverage[group][canvas_idx] += len(points)
                for target, part in zip(self.targets, parts):
                    self.sums[target][group][canvas_idx] += part.sum(axis=0)[map_idx]
                    self.zero_maps[target][group] += int((~part.any(axis=(1, 2))).sum())
                    if supports is not None:
                        seen = np.asarray(supports[target])[points].any(axis=0)
                        self.support[target][group][canvas_idx] |= seen[map_idx]
        if self.buckets:
            if positions is None:
                positions = range(self.points - len(anchors), self.points)
            self._add_buckets(batch, anchors, groups, positions, finite)
        return finite

    def _add_buckets(self, batch, anchors, groups, positions, finite) -> None:
        """The bucket sums: a second, separate addition, so the main sums keep their
        float summation order (a centre run's maps are those of a run without)."""
        together: Dict[Tuple, List[int]] = {}
        for p, (anchor, names, position) in enumerate(zip(anchors, groups, positions)):
            if finite[p]:
                key = (int(anchor[0]), int(anchor[1]), tuple(names),
                       int(position) % self.buckets)
                together.setdefault(key, []).append(p)
        for (ay, ax, names, bucket), points in together.items():
            canvas_idx, map_idx = placement(self.shape, (ay, ax), self.extents)
            for group in names:
                self.bucket_counts[group][bucket] += len(points)
                if self.anchor is None:
                    self.bucket_coverage[group][bucket][canvas_idx] += len(points)
                for target, arr in zip(self.targets, batch):
                    self.bucket_sums[target][group][bucket][canvas_idx] += \
                        arr[points].sum(axis=0)[map_idx]

    def bucket_cover(self, group: str) -> np.ndarray:
        """(B, canvas) coverage of each bucket (B x 1 x 1 counts for a fixed anchor)."""
        if self.anchor is not None:
            return self.bucket_counts[group][:, None, None]
        return self.bucket_coverage[group]

    def mean(self, target: str, group: str) -> np.ndarray:
        """Sum over coverage; NaN where no map covered the offset."""
        cover = self.coverage[group]
        return np.divide(self.sums[target][group], cover,
                         out=np.full(self.canvas_shape, np.nan), where=cover > 0)

    # ---- saved state (resume) --------------------------------------------------------
    _NUMBERS = ('images', 'skipped', 'skipped_points', 'backwards', 'points')
    # keys that ranks add up (reduce_session), by their first component
    SUMMED = ('count', 'coverage', 'sum', 'zero', 'support', 'bcount', 'bcover', 'bsum')

    def arrays(self) -> Dict[str, np.ndarray]:
        """Everything as named arrays (the saved state, and what ranks sum)."""
        out = {'targets': np.array(self.targets, dtype=str), 'shape': np.array(self.shape),
               'window': np.array(-1 if self.window is None else self.window),
               'anchor': np.array(self.anchor if self.anchor is not None else (-1, -1)),
               'groups': np.array(self.groups, dtype=str),
               'numbers': np.array([getattr(self, n) for n in self._NUMBERS]),
               'buckets': np.array(self.buckets)}
        for group in self.groups:
            out[f'count/{group}'] = np.array(self.counts[group], dtype=np.int64)
            out[f'coverage/{group}'] = self.coverage[group]
            if self.buckets:
                out[f'bcount/{group}'] = self.bucket_counts[group]
                if self.anchor is None:
                    out[f'bcover/{group}'] = self.bucket_coverage[group]
            for target in self.targets:
                out[f'sum/{target}/{group}'] = self.sums[target][group]
                out[f'zero/{target}/{group}'] = np.array(self.zero_maps[target][group])
                # a count, not a flag, so that ranks can add it up
                out[f'support/{target}/{group}'] = self.support[target][group].astype(np.int32)
                if self.buckets:
                    out[f'bsum/{target}/{group}'] = self.bucket_sums[target][group]
        return out

    @classmethod
    def from_arrays(cls, data: Mapping[str, np.ndarray]) -> 'ERFAccumulator':
        window, anchor = int(data['window']), [int(v) for v in data['anchor']]
        # states saved before intervals have no buckets (and no support)
        buckets = int(data['buckets']) if 'buckets' in data else 0
        acc = cls([str(t) for t in data['targets']], data['shape'].tolist(),
                  None if window < 0 else window, None if anchor[0] < 0 else anchor, buckets)
        for name, value in zip(cls._NUMBERS, data['numbers'].tolist()):
            setattr(acc, name, int(value))
        for group in (str(g) for g in data['groups']):
            acc.open_group(group)
            acc.counts[group] = int(data[f'count/{group}'])
            acc.coverage[group] = np.asarray(data[f'coverage/{group}'], np.int64).copy()
            if buckets:
                acc.bucket_counts[group] = np.asarray(data[f'bcount/{group}'], np.int64).copy()
                if acc.anchor is None:
                    acc.bucket_coverage[group] = np.asarray(data[f'bcover/{group}'],
                                                            np.int64).copy()
            for target in acc.targets:
                acc.sums[target][group] = np.asarray(data[f'sum/{target}/{group}'],
                                                     np.float64).copy()
                acc.zero_maps[target][group] = int(data[f'zero/{target}/{group}'])
                if f'support/{target}/{group}' in data:
                    acc.support[target][group] = np.asarray(
                        data[f'support/{target}/{group}']) > 0
                if buckets:
                    acc.bucket_sums[target][group] = np.asarray(
                        data[f'bsum/{target}/{group}'], np.float64).copy()
        return acc

    def save(self, path: str, extra: Optional[Mapping[str, object]] = None) -> None:
        """Write the running sums atomically (``.npz``): a crash never leaves half a file."""
        arrays = self.arrays()
        for key, value in (extra or {}).items():
            arrays[f'extra/{key}'] = np.asarray(value)
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, suffix='.npz.tmp')
        try:
            with os.fdopen(fd, 'wb') as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())  # on disk before the rename makes it the state
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    @classmethod
    def load(cls, path: str):
        """Read what :meth:`save` wrote. Returns ``(accumulator, extra)``."""
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        extra = {k[len('extra/'):]: v for k, v in arrays.items() if k.startswith('extra/')}
        return cls.from_arrays(arrays), extra
