"""Response point sets: where on the image an ERF is asked for, and which group it joins.

A point is an input pixel (y, x) (its anchor: the aligned canvas is centred on it),
an optional class (the logit channel for logit targets) and the groups its map is
averaged into. The feature-map position of a point on a target of size (h, w) is
``(y * h // H, x * w // W)``: the feature cell that contains the pixel.

Kinds:

- ``centre``: one point at the relative position ``point`` (default (0.5, 0.5): the
  classic ERF at ``(h // 2, w // 2)`` of every target), group ``centre``; its feature
  cell is taken at the same relative position on each target (RepLKNet's rule, which
  differs from the containing-cell rule when a side does not divide the input);
- ``grid``: K x K points at relative positions ``(i + 1/2) / K``, groups ``grid_i_j``
  (row i, column j);
- ``per-class``: up to ``cap`` pixels of each class of the label map, drawn without
  replacement with a generator seeded by (seed, dataset position), so an image
  gets the same points in any batch; ignore-index pixels are never drawn; groups
  are the class names;
- ``boundary``: per class, up to ``cap`` boundary pixels (an other-class pixel
  within ``boundary_px``, Euclidean) and ``cap`` interior pixels (none that near);
  groups ``<class>/boundary`` or ``<class>/interior`` and ``boundary`` or
  ``interior``;
- ``predicted``: ``per-class`` on the model's own arg-max prediction (no labels
  needed).
"""
import dataclasses
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

KINDS = ('centre', 'grid', 'per-class', 'boundary', 'predicted')
LABELLED_KINDS = ('per-class', 'boundary')
CLASS_KINDS = ('per-class', 'boundary', 'predicted')


@dataclass(frozen=True)
class PointSpec:
    """How response points are chosen.

    Args:
        kind: one of :data:`KINDS`.
        grid: K of the K x K grid.
        cap: at most this many points per class (per region for ``boundary``) per image.
        seed: seed of the per-class draws.
        boundary_px: a pixel is a boundary pixel when an other-class pixel lies within
            this Euclidean distance (pixels); interior otherwise.
        ignore_index: label value never drawn and never counted as an other class.
        window: side (odd) of the aligned canvas; None: 2S - 1 (every offset).
        class_names: names of the label values (groups are named after them).
        point: relative response position (y, x) in [0, 1) of the ``centre`` kind.
    """
    kind: str = 'centre'
    grid: int = 3
    cap: int = 4
    seed: int = 0
    boundary_px: int = 8
    ignore_index: int = 255
    window: Optional[int] = None
    class_names: Tuple[str, ...] = field(default=())
    point: Tuple[float, float] = (0.5, 0.5)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f'unknown point kind {self.kind!r}; choose one of {KINDS}')
        for name in ('grid', 'cap', 'boundary_px'):
            if int(getattr(self, name)) < 1:
                raise ValueError(f'points {name} must be a positive integer, '
                                 f'got {getattr(self, name)}')
        if self.window is not None and (self.window < 1 or self.window % 2 == 0):
            raise ValueError(f'the aligned window must be a positive odd side, got '
                             f'{self.window}')
        object.__setattr__(self, 'class_names', tuple(str(c) for c in self.class_names))
        point = tuple(float(v) for v in self.point)
        if len(point) != 2 or not all(0 <= v < 1 for v in point):
            raise ValueError(f'the response point {self.point} must be relative (y, x) in '
                             f'[0, 1)')
        object.__setattr__(self, 'point', point)

    @property
    def fixed_anchor(self) -> bool:
        """Whether every image's one point sits at the same place (the centre kind):
        the aligned canvas is then the image frame itself."""
        return self.kind == 'centre'

    @property
    def needs_labels(self) -> bool:
        return self.kind in LABELLED_KINDS

    def class_name(self, value: int) -> str:
        if 0 <= value < len(self.class_names):
            return self.class_names[value]
        return f'class_{value}'

    def backwards_per_image(self, num_classes: Optional[int] = None) -> Tuple[int, bool]:
        """Backward passes per image and target: (count, exact). For the class kinds it
        is the upper bound (every class present with ``cap`` pixels)."""
        if self.kind == 'centre':
            return 1, True
        if self.kind == 'grid':
            return self.grid**2, True
        classes = num_classes or len(self.class_names) or 0
        per_class = self.cap * (2 if self.kind == 'boundary' else 1)
        return classes * per_class, False

    def cost_sentence(self, num_images: int, num_targets: int,
                      num_classes: Optional[int] = None) -> str:
        count, exact = self.backwards_per_image(num_classes)
        if exact:
            return (f'points {self.kind}: {count} backward pass(es) per batch and target, '
                    f'{count * num_images * num_targets} image-backwards for {num_images} '
                    f'images and {num_targets} target(s) (one forward per batch)')
        bound = f'up to {count}' if count else f'{self.cap} per class present'
        return (f'points {self.kind}: {bound} backward passes per batch and target '
                f'(the most points any image of the batch has; cap {self.cap} per class'
                f'{" and region" if self.kind == "boundary" else ""}), one forward per batch')

    def to_json(self) -> dict:
        out = asdict(self)
        out['class_names'] = list(self.class_names)
        out['point'] = list(self.point)
        return out


@dataclass(frozen=True)
class ImagePoints:
    """The response points of one image (arrays of equal length).

    ``relative`` (the centre kind) gives each point's feature cell as a relative
    position on every target; otherwise the cell is the one containing the pixel.
    """
    ys: np.ndarray
    xs: np.ndarray
    classes: np.ndarray  # label value, -1 when the point has none
    groups: Tuple[Tuple[str, ...], ...]
    relative: Optional[Tuple[float, float]] = None

    def __len__(self) -> int:
        return len(self.ys)


def response_index(h: int, w: int, point: Sequence[float]) -> Tuple[int, int]:
    """Cell of a relative position (y, x) in [0, 1) on an (h, w) map; (0.5, 0.5)
    gives ``(h // 2, w // 2)``, the centre used by RepLKNet and VMamba."""
    ry, rx = point
    if not (0 <= ry < 1 and 0 <= rx < 1):
        raise ValueError(f'response point {tuple(point)} must be relative (y, x) in [0, 1)')
    return min(int(ry * h), h - 1), min(int(rx * w), w - 1)


def feature_cell(points: ImagePoints, k: int, input_hw: Sequence[int],
                 feature_hw: Sequence[int]) -> Tuple[int, int]:
    """The feature cell where point ``k`` responds on a map of ``feature_hw``."""
    h, w = int(feature_hw[0]), int(feature_hw[1])
    if points.relative is not None:
        return response_index(h, w, points.relative)
    return int(points.ys[k]) * h // int(input_hw[0]), int(points.xs[k]) * w // int(input_hw[1])


def _points(entries: List[Tuple[int, int, int, Tuple[str, ...]]]) -> ImagePoints:
    if not entries:
        empty = np.zeros(0, dtype=np.int64)
        return ImagePoints(empty, empty.copy(), empty.copy(), ())
    ys, xs, cs, gs = zip(*entries)
    return ImagePoints(np.asarray(ys, np.int64), np.asarray(xs, np.int64),
                       np.asarray(cs, np.int64), tuple(gs))


def grid_anchors(size: int, k: int) -> List[int]:
    """Pixel of relative position (i + 1/2) / k on a side of ``size``: ((2i+1) size) // 2k."""
    return [(2 * i + 1) * size // (2 * k) for i in range(k)]


def near_other_class(label: np.ndarray, radius: int, ignore_index: int = 255) -> np.ndarray:
    """Bool mask: pixels with a pixel of another class within Euclidean ``radius``.

    Ignore-index pixels are neither boundary pixels nor the other class of one;
    outside the image there is nothing.
    """
    label = np.asarray(label)
    h, w = label.shape
    valid = label != ignore_index
    near = np.zeros((h, w), dtype=bool)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if (dy, dx) == (0, 0) or dy * dy + dx * dx > radius * radius:
                continue
            # pixel (y, x) against its neighbour (y + dy, x + dx), both inside
            ys, yn = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h + min(0, dy))
            xs, xn = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w + min(0, dx))
            differs = (label[ys, xs] != label[yn, xn]) & valid[yn, xn]
            near[ys, xs] |= differs
    return near & valid


def _draw(rng: np.random.Generator, mask: np.ndarray, cap: int) -> np.ndarray:
    """Up to ``cap`` flat indices of True pixels, without replacement."""
    candidates = np.flatnonzero(mask)
    if candidates.size <= cap:
        return candidates
    return candidates[rng.choice(candidates.size, size=cap, replace=False)]


def sample_points(spec: PointSpec, shape: Sequence[int], label: Optional[np.ndarray] = None,
                  position: int = 0) -> ImagePoints:
    """The response points of one image of size ``shape`` (H, W).

    Args:
        label: (H, W) integer label map, needed by the class kinds (for
            ``predicted``, the predicted classes).
        position: the image's dataset position (seeds its draws).
    """
    h, w = int(shape[0]), int(shape[1])
    if spec.kind == 'centre':
        y, x = response_index(h, w, spec.point)
        return dataclasses.replace(_points([(y, x, -1, ('centre', ))]), relative=spec.point)
    if spec.kind == 'grid':
        return _points([(y, x, -1, (f'grid_{i}_{j}', ))
                        for i, y in enumerate(grid_anchors(h, spec.grid))
                        for j, x in enumerate(grid_anchors(w, spec.grid))])
    if label is None:
        raise ValueError(f'points {spec.kind!r} need a label map')
    label = np.asarray(label)
    if label.shape != (h, w):
        raise ValueError(f'label map of shape {label.shape} for an input of {(h, w)}')
    rng = np.random.default_rng([int(spec.seed), int(position)])
    values = [int(v) for v in np.unique(label) if v != spec.ignore_index]
    entries = []
    near = near_other_class(label, spec.boundary_px, spec.ignore_index) \
        if spec.kind == 'boundary' else None
    for value in values:
        name, of_class = spec.class_name(value), label == value
        regions = [(of_class, (name, ))] if near is None else [
            (of_class & near, (f'{name}/boundary', 'boundary')),
            (of_class & ~near, (f'{name}/interior', 'interior'))]
        for mask, groups in regions:
            for flat in _draw(rng, mask, spec.cap):
                entries.append((int(flat) // w, int(flat) % w, value, groups))
    return _points(entries)
