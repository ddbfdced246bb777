"""The loop every door shares: batches in, accumulated maps out.

A run is targets x a point set x images. One forward per batch captures every
target; then one backward per point index k over the whole batch: the k-th point of
every image that has one responds at once (images are independent in eval mode, so
each image's gradient is its own point's), and the maps go onto the aligned canvases
of the groups the points belong to. The classic ERF is the point set of one point,
the centre: one backward per target and batch.
"""
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .accumulator import ERFAccumulator
from .gradients import response_maps
from .points import CLASS_KINDS, ImagePoints, PointSpec, feature_cell, sample_points
from .result import ERFResult
from .stats import REPLICATES
from .targets import FeatureTaps, HeadRunner, is_segmentor


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Parameters stop requiring grad inside the block, and get it back exactly after.

    An ERF needs gradients with respect to the input only. With weights that
    require grad, autograd also keeps what weight gradients would need (every
    ``nn.Linear`` input, for one): a larger graph for nothing. The flags are
    restored even on error, since the hook runs inside training.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        for param in params:
            param.requires_grad_(False)
        yield
    finally:
        for param in params:
            param.requires_grad_(True)


class NoImagesError(RuntimeError):
    """No image produced a map (none readable, or none below ``num_images``)."""


class MissingLabelsError(ValueError):
    """Points that need label maps were asked for images that have none."""


def missing_labels_message(kind: str) -> str:
    return (f"points {kind!r} need label maps and these images have none (no labels "
            f"folder, no gt_sem_seg); --points predicted (points='predicted') samples the "
            f"model's own predicted classes and works without them")


def predicted_labels(taps: FeatureTaps, inputs: torch.Tensor) -> torch.Tensor:
    """Arg-max classes (B, H, W) of the logits ``taps`` captures, at the input size."""
    with torch.no_grad():
        logits = next(iter(taps(inputs).values()))
    if logits.shape[-2:] != inputs.shape[-2:]:
        logits = F.interpolate(logits, size=inputs.shape[-2:], mode='bilinear',
                               align_corners=False)
    return logits.argmax(dim=1)


class ERFSession:
    """Accumulate ERF maps of several targets at a point set over batches of inputs.

    Images are identified by their position in the dataset; only positions below
    ``num_images`` are used. Positions make a distributed run exact: each rank
    passes the global positions of its samples, padding repeats of a distributed
    sampler (positions >= dataset length) are dropped, and the merged sums equal
    those of one process; they also seed the per-class draws.

    Args:
        model (nn.Module): in eval mode.
        targets (Sequence[str]): target names (see :mod:`.targets`).
        num_images (int): how many images (positions) to use.
        points (PointSpec): where the responses are (default the centre), the
            canvas window, class names.
        class_index (int, optional): the logit class of points that have none
            (centre and grid points).
        head_runner (HeadRunner, optional): how the segmentor's decode head
            predicts (see :data:`.targets.HeadRunner`).
        buckets (int): image buckets kept for 95 % intervals (0: no intervals).
        replicates (int): bootstrap replicates of the intervals.
    """

    def __init__(self, model: nn.Module, targets: Sequence[str], num_images: int = 50,
                 points: PointSpec = PointSpec(), class_index: Optional[int] = None,
                 head_runner: Optional[HeadRunner] = None, buckets: int = 0,
                 replicates: int = REPLICATES):
        if num_images < 1:
            raise ValueError(f'num_images must be at least 1, got {num_images}')
        self.model = model
        self.taps = FeatureTaps(model, targets, head_runner)
        self.head_runner = head_runner
        self.num_images = num_images
        self.points = points
        self.class_index = class_index
        self.buckets, self.replicates = int(buckets), int(replicates)
        self.accumulator: Optional[ERFAccumulator] = None
        self.next_position = 0
        self._unreadable = 0  # skipped before the accumulator (and its names) existed
        self._prediction_taps: Optional[FeatureTaps] = None

    @property
    def done(self) -> bool:
        return self.next_position >= self.num_images

    @property
    def needs_labels(self) -> bool:
        return self.points.needs_labels

    def wanted(self, positions: Sequence[int], limit: Optional[int] = None) -> np.ndarray:
        """Mask of the positions that still count (below ``num_images`` and ``limit``)."""
        bound = self.num_images if limit is None else min(limit, self.num_images)
        return np.asarray([0 <= p < bound for p in positions], dtype=bool)

    def skip_unreadable(self, positions: Sequence[int], limit: Optional[int] = None) -> int:
        """Count images at ``positions`` that could not be read as skipped."""
        count = int(self.wanted(positions, limit).sum())
        if positions:
            self.next_position = max(self.next_position, max(positions) + 1)
        if self.accumulator is not None:
            self.accumulator.skipped += count
        else:
            self._unreadable += count
        return count

    def select(self, inputs: torch.Tensor, positions: Optional[Sequence[int]] = None,
               limit: Optional[int] = None) -> Tuple[torch.Tensor, List[int], List[int]]:
        """The detached part of a batch that still counts, its rows in the batch and
        their dataset positions.

        Advances :attr:`next_position` past the batch; positions default to
        consecutive ones from the last call's end.
        """
        if self.model.training:
            raise RuntimeError('the model is in training mode: BatchNorm would mix the '
                               'images of a batch; call model.eval() first')
        if positions is None:
            positions = range(self.next_position, self.next_position + inputs.shape[0])
        positions = list(positions)
        if len(positions) != inputs.shape[0]:
            raise ValueError(f'{len(positions)} positions for a batch of {inputs.shape[0]}')
        keep = self.wanted(positions, limit)
        if positions:
            self.next_position = max(self.next_position, max(positions) + 1)
        rows = np.flatnonzero(keep).tolist()
        batch = inputs if keep.all() else inputs[torch.as_tensor(rows, dtype=torch.long,
                                                                 device=inputs.device)]
        return batch.detach(), rows, [positions[i] for i in rows]

    def _predictions(self, batch: torch.Tensor) -> torch.Tensor:
        if self._prediction_taps is None:
            name = 'seg_logits' if is_segmentor(self.model) else 'output'
            self._prediction_taps = FeatureTaps(self.model, [name], self.head_runner)
        return predicted_labels(self._prediction_taps, batch)

    def image_points(self, batch: torch.Tensor, positions: Sequence[int],
                     labels=None) -> List[ImagePoints]:
        spec, shape = self.points, tuple(batch.shape[-2:])
        if spec.kind == 'predicted':
            labels = self._predictions(batch).cpu().numpy()
        elif spec.needs_labels and (labels is None or any(lb is None for lb in labels)):
            raise MissingLabelsError(missing_labels_message(spec.kind))
        out = []
        for b, position in enumerate(positions):
            label = None if spec.kind not in CLASS_KINDS else np.asarray(labels[b])
            if label is not None and label.ndim == 3:
                label = label[0]  # (1, H, W) as mmseg packs gt_sem_seg
            out.append(sample_points(spec, shape, label, position))
        return out

    def process(self, inputs: torch.Tensor, positions: Optional[Sequence[int]] = None,
                limit: Optional[int] = None, labels=None) -> int:
        """Add the maps of every response point of one batch (B, 3, H, W).

        Args:
            positions: dataset position of each sample; default: consecutive from
                the last call's end.
            limit: dataset length, when positions beyond it are padding repeats.
            labels: per-image (H, W) label maps (needed by 'per-class' and 'boundary').

        Returns:
            int: how many of the batch's images were used (finite or not).
        """
        batch, rows, kept = self.select(inputs, positions, limit)
        if not rows:
            return 0
        if labels is not None:
            labels = [labels[i] for i in rows]
        points = self.image_points(batch, kept, labels)
        depth = max((len(p) for p in points), default=0)
        finite_any = np.array([len(p) == 0 for p in points])
        if depth:
            batch = batch.requires_grad_(True)
            with torch.enable_grad(), frozen_parameters(self.model):
                features = self.taps(batch, kept)  # resolves 'all' and negative indices
                acc = self.open_accumulator(batch.shape[-2:])
                for k in range(depth):
                    finite_any[self._add_point_index(acc, features, batch, points, k,
                                                     k < depth - 1, kept)] = True
        acc = self.open_accumulator(batch.shape[-2:])
        acc.images += int(finite_any.sum())
        acc.skipped += int((~finite_any).sum())
        return len(rows)

    def _add_point_index(self, acc: ERFAccumulator, features, batch: torch.Tensor,
                         points: Sequence[ImagePoints], k: int, retain: bool,
                         positions: Sequence[int]) -> List[int]:
        """One backward for the k-th point of every image that has one; returns the
        images whose k-th map was finite."""
        rows = [b for b, p in enumerate(points) if len(p) > k]
        size = tuple(batch.shape[-2:])
        classes = [int(points[b].classes[k]) for b in rows]
        if self.class_index is not None:
            classes = [c if c >= 0 else self.class_index for c in classes]
        supports: Dict[str, torch.Tensor] = {}
        maps = response_maps(features, batch, rows,
                             lambda i, hw: feature_cell(points[rows[i]], k, size, hw),
                             classes, retain_graph=retain, supports=supports)
        finite = acc.add({n: m.numpy() for n, m in maps.items()},
                         [(points[b].ys[k], points[b].xs[k]) for b in rows],
                         [points[b].groups[k] for b in rows],
                         positions=[positions[b] for b in rows],
                         supports={n: s.numpy() for n, s in supports.items()})
        acc.backwards += 1
        return [b for b, ok in zip(rows, finite) if ok]

    def open_accumulator(self, shape: Sequence[int]) -> ERFAccumulator:
        """The accumulator, created empty for (H, W) inputs if there is none yet: on the
        first processed batch, or for a rank that had no image to contribute zeros to
        a distributed sum."""
        if self.accumulator is None:
            anchor = None
            if self.points.fixed_anchor:
                only = sample_points(self.points, shape)
                anchor = (int(only.ys[0]), int(only.xs[0]))
            self.accumulator = ERFAccumulator(self.taps.names, shape, self.points.window,
                                              anchor, self.buckets)
            self.accumulator.skipped, self._unreadable = self._unreadable, 0
        return self.accumulator

    def result(self, model_name: str = '', meta: Optional[Dict] = None) -> ERFResult:
        if self.accumulator is None:
            raise NoImagesError(f'no usable image: {self._unreadable} could not be read '
                                f'and none other was given')
        info = {'class_index': self.class_index}
        info.update(meta or {})
        return ERFResult.from_accumulator(self.accumulator, self.points, model_name, info,
                                          self.replicates)
