"""Running float64 sums of per-image ERF maps, one per target."""
import os
import tempfile
from typing import Dict, Mapping, Optional, Sequence

import numpy as np


class ERFAccumulator:
    """Sum and count of finite per-image maps for several targets.

    An image whose map is non-finite for ANY target is skipped for all of them,
    so every target averages the same images and one ``num_images`` describes
    the whole run.

    Args:
        names (Sequence[str]): target names, in report order.
        shape (tuple): (H, W) of every map.
    """

    def __init__(self, names: Sequence[str], shape):
        self.names = tuple(names)
        self.shape = tuple(int(s) for s in shape)
        self.sums: Dict[str, np.ndarray] = {
            n: np.zeros(self.shape, dtype=np.float64) for n in self.names}
        self.count = 0
        self.skipped = 0

    def add(self, maps: Mapping[str, np.ndarray]) -> np.ndarray:
        """Add a batch of per-image maps ``{name: (B, H, W)}``.

        Returns:
            np.ndarray: bool (B,), True where the image was counted.
        """
        missing = set(self.names) - set(maps)
        if missing:
            raise KeyError(f'maps for targets {sorted(missing)} are missing')
        batch = [np.asarray(maps[n], dtype=np.float64) for n in self.names]
        for arr in batch:
            if arr.shape[1:] != self.shape:
                raise ValueError(f'map of shape {arr.shape[1:]} does not match the '
                                 f'accumulator shape {self.shape}; every image must '
                                 f'have the same input size')
        finite = np.ones(batch[0].shape[0], dtype=bool)
        for arr in batch:
            finite &= np.isfinite(arr).all(axis=(1, 2))
        for name, arr in zip(self.names, batch):
            self.sums[name] += arr[finite].sum(axis=0)
        self.count += int(finite.sum())
        self.skipped += int((~finite).sum())
        return finite

    def mean(self, name: str) -> np.ndarray:
        """The mean map of one target (zeros when no image was counted)."""
        if self.count == 0:
            return np.zeros(self.shape, dtype=np.float64)
        return self.sums[name] / self.count

    def state_dict(self) -> dict:
        return {
            'names': list(self.names), 'shape': list(self.shape), 'count': self.count,
            'skipped': self.skipped, 'sums': {n: s.copy() for n, s in self.sums.items()}
        }

    @classmethod
    def from_state_dict(cls, state: Mapping) -> 'ERFAccumulator':
        acc = cls(state['names'], state['shape'])
        for name in acc.names:
            acc.sums[name] = np.asarray(state['sums'][name], dtype=np.float64).copy()
        acc.count = int(state['count'])
        acc.skipped = int(state['skipped'])
        return acc

    def save(self, path: str, extra: Optional[Mapping[str, object]] = None) -> None:
        """Write the running sums atomically (``.npz``): a crash never leaves half a file."""
        arrays = {f'sum/{n}': s for n, s in self.sums.items()}
        arrays['names'] = np.array(self.names)
        arrays['shape'] = np.array(self.shape)
        arrays['counts'] = np.array([self.count, self.skipped])
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
            acc = cls([str(n) for n in data['names']], data['shape'].tolist())
            for name in acc.names:
                acc.sums[name] = data[f'sum/{name}'].astype(np.float64)
            acc.count, acc.skipped = (int(v) for v in data['counts'])
            extra = {k[len('extra/'):]: data[k] for k in data.files
                     if k.startswith('extra/')}
        return acc, extra
