"""The loop every door shares: batches in, accumulated maps out."""
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .accumulator import ERFAccumulator
from .gradients import input_gradient_maps
from .result import ERFResult
from .targets import FeatureTaps, HeadRunner


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


class ERFSession:
    """Accumulate ERF maps of several targets over batches of model inputs.

    Images are identified by their position in the dataset; only positions below
    ``num_images`` are used. Positions make a distributed run exact: each rank
    passes the global positions of its samples, padding repeats of a distributed
    sampler (positions >= dataset length) are dropped, and the merged sums equal
    those of one process.

    Args:
        model (nn.Module): in eval mode.
        targets (Sequence[str]): target names (see :mod:`.targets`).
        num_images (int): how many images (positions) to use.
        point (tuple): relative response point (y, x), default the centre.
        class_index (int, optional): one class for logit targets.
        head_runner (HeadRunner, optional): how the segmentor's decode head
            predicts (see :data:`.targets.HeadRunner`).
    """

    def __init__(self, model: nn.Module, targets: Sequence[str], num_images: int = 50,
                 point: Sequence[float] = (0.5, 0.5), class_index: Optional[int] = None,
                 head_runner: Optional[HeadRunner] = None):
        if num_images < 1:
            raise ValueError(f'num_images must be at least 1, got {num_images}')
        self.model = model
        self.taps = FeatureTaps(model, targets, head_runner)
        self.num_images = num_images
        self.point = tuple(point)
        self.class_index = class_index
        self.accumulator: Optional[ERFAccumulator] = None
        self.next_position = 0
        self._unreadable = 0  # skipped before the accumulator (and its names) existed

    @property
    def done(self) -> bool:
        return self.next_position >= self.num_images

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

    def process(self, inputs: torch.Tensor, positions: Optional[Sequence[int]] = None,
                limit: Optional[int] = None) -> int:
        """Add the ERF maps of one batch of preprocessed inputs (B, 3, H, W).

        Args:
            positions: dataset position of each sample; default: consecutive from
                the last call's end.
            limit: dataset length, when positions beyond it are padding repeats.

        Returns:
            int: how many of the batch's images were used (finite or not).
        """
        batch, _, kept = self.select(inputs, positions, limit)
        if not kept:
            return 0
        batch = batch.requires_grad_(True)
        with torch.enable_grad(), frozen_parameters(self.model):
            features = self.taps(batch, kept)
            maps = input_gradient_maps(features, batch, self.point, self.class_index)
        self.open_accumulator(batch.shape[-2:]).add({n: m.numpy() for n, m in maps.items()})
        return len(kept)

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

    def open_accumulator(self, shape: Sequence[int]) -> ERFAccumulator:
        """The accumulator, created empty for (H, W) maps if there is none yet: on the
        first processed batch, or for a rank that had no image to contribute zeros to
        a distributed sum."""
        if self.accumulator is None:
            self.accumulator = ERFAccumulator(self.taps.names, shape)
            self.accumulator.skipped, self._unreadable = self._unreadable, 0
        return self.accumulator

    def result(self, model_name: str = '', meta: Optional[Dict] = None) -> ERFResult:
        if self.accumulator is None:
            raise NoImagesError(f'no usable image: {self._unreadable} could not be read '
                                f'and none other was given')
        acc = self.accumulator
        info = {'point': list(self.point), 'class_index': self.class_index}
        info.update(meta or {})
        return ERFResult(maps={n: acc.mean(n) for n in acc.names}, num_images=acc.count,
                         skipped=acc.skipped, input_size=acc.shape, model_name=model_name,
                         meta=info)
