"""ERFs at many response points per image, batched, aligned and grouped.

One forward per batch; then one backward per point index k over the whole batch:
the k-th point of every image that has one responds at once (images are
independent in eval mode, so each image's gradient is its own point's), and the
maps go onto aligned canvases of the groups the points belong to. The cost is
``max points per image in the batch`` backward passes per target and batch, never
one per image.
"""
from contextlib import nullcontext
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .aligned import AlignedAccumulator
from .gradients import WindowedConvGrads, windowed_by_default
from .point_result import PointResult
from .points import CLASS_KINDS, ImagePoints, PointSpec, sample_points
from .session import ERFSession, NoImagesError, frozen_parameters
from .targets import LOGIT_TARGETS, FeatureTaps, HeadRunner, TargetError, is_segmentor


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


def point_index_maps(features: Dict[str, torch.Tensor], inputs: torch.Tensor,
                     rows: Sequence[int], ys: Sequence[int], xs: Sequence[int],
                     classes: Sequence[int], class_index: Optional[int] = None,
                     retain_last: bool = False) -> Dict[str, torch.Tensor]:
    """Maps of one point per listed image: ``rows[i]`` responds at input pixel
    ``(ys[i], xs[i])``, on logit targets with class ``classes[i]`` (``class_index``
    when it is -1; all channels when both are absent).

    Returns:
        ``{name: (len(rows), H, W) float64 on the CPU}``.
    """
    height, width = inputs.shape[-2:]
    rows_t = torch.as_tensor(list(rows), dtype=torch.long, device=inputs.device)
    names = list(features)
    maps = {}
    for n, name in enumerate(names):
        feat = features[name]
        h, w = feat.shape[-2:]
        fy = torch.as_tensor([y * h // height for y in ys], device=feat.device)
        fx = torch.as_tensor([x * w // width for x in xs], device=feat.device)
        response = feat[rows_t, :, fy, fx]  # (P, C)
        if name in LOGIT_TARGETS:
            chosen = [c if c >= 0 else (class_index if class_index is not None else -1)
                      for c in classes]
            if any(c >= response.shape[1] for c in chosen):
                raise ValueError(f'class {max(chosen)} is out of range for target {name!r} '
                                 f'with {response.shape[1]} classes')
            if all(c >= 0 for c in chosen):
                index = torch.as_tensor(chosen, device=feat.device)[:, None]
                response = response.gather(1, index)
        score = F.relu(response).sum()
        if not score.requires_grad:
            raise TargetError(f'target {name!r} does not depend on the input')
        window = windowed_by_default(name)
        with WindowedConvGrads() if window else nullcontext():
            (grad, ) = torch.autograd.grad(score, inputs,
                                           retain_graph=retain_last or n < len(names) - 1,
                                           allow_unused=True)
        if grad is None:
            raise TargetError(f'target {name!r} does not depend on the input')
        maps[name] = F.relu(grad[rows_t]).to(torch.float64).sum(dim=1).cpu()
    return maps


class PointSession(ERFSession):
    """An :class:`ERFSession` over a :class:`PointSpec`'s response points.

    Args:
        model, targets, num_images, class_index: as for :class:`ERFSession`
            (``class_index`` is the logit class of centre and grid points).
        points (PointSpec): how points are chosen, the canvas window, class names.
        head_runner (HeadRunner, optional): how the segmentor's decode head
            predicts, as for :class:`ERFSession`.
    """

    def __init__(self, model: nn.Module, targets: Sequence[str], num_images: int = 50,
                 points: PointSpec = PointSpec(), class_index: Optional[int] = None,
                 head_runner: Optional[HeadRunner] = None):
        super().__init__(model, targets, num_images, class_index=class_index,
                         head_runner=head_runner)
        self.head_runner = head_runner
        self.points = points
        self.accumulator: Optional[AlignedAccumulator] = None
        self.backwards = 0        # backward passes per target, summed over batches
        self.point_count = 0      # points whose maps were computed
        self._prediction_taps: Optional[FeatureTaps] = None

    @property
    def needs_labels(self) -> bool:
        return self.points.needs_labels

    def _predictions(self, batch: torch.Tensor) -> torch.Tensor:
        if self._prediction_taps is None:
            name = 'seg_logits' if is_segmentor(self.model) else 'output'
            self._prediction_taps = FeatureTaps(self.model, [name], self.head_runner)
        return predicted_labels(self._prediction_taps, batch)

    def image_points(self, batch: torch.Tensor, positions: Sequence[int],
                     labels) -> List[ImagePoints]:
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
            labels: per-image (H, W) label maps (needed by 'per-class' and 'boundary').
        """
        batch, rows, kept = self.select(inputs, positions, limit)
        if not rows:
            return 0
        if labels is not None:
            labels = [labels[i] for i in rows]
        points = self.image_points(batch, kept, labels)
        acc = self.open_accumulator(batch.shape[-2:])
        acc.images += len(rows)
        depth = max((len(p) for p in points), default=0)
        if depth == 0:
            return len(rows)
        batch = batch.requires_grad_(True)
        with torch.enable_grad(), frozen_parameters(self.model):
            features = self.taps(batch, kept)
            for k in range(depth):
                rows = [b for b, p in enumerate(points) if len(p) > k]
                maps = point_index_maps(
                    features, batch, rows, [int(points[b].ys[k]) for b in rows],
                    [int(points[b].xs[k]) for b in rows],
                    [int(points[b].classes[k]) for b in rows], self.class_index,
                    retain_last=k < depth - 1)
                acc.add({n: m.numpy() for n, m in maps.items()},
                        [(points[b].ys[k], points[b].xs[k]) for b in rows],
                        [points[b].groups[k] for b in rows])
                self.backwards += 1
                self.point_count += len(rows)
        return len(rows)

    def open_accumulator(self, shape: Sequence[int]) -> AlignedAccumulator:
        if self.accumulator is None:
            self.accumulator = AlignedAccumulator(self.taps.names, shape, self.points.window)
            self.accumulator.skipped, self._unreadable = self._unreadable, 0
        return self.accumulator

    def result(self, model_name: str = '', meta: Optional[Dict] = None) -> PointResult:
        if self.accumulator is None:
            raise NoImagesError(f'no usable image: {self._unreadable} could not be read '
                                f'and none other was given')
        info = {'class_index': self.class_index, 'backwards': self.backwards,
                'points_computed': self.point_count}
        info.update(meta or {})
        return PointResult.from_accumulator(self.accumulator, self.points, model_name, info)
