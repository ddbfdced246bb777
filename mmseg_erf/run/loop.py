"""The one run loop: a request's session, its batches, the sums of every rank.

Every door goes through here: the CLI and ``compute_erf`` hand over a loader
(:func:`accumulate`), the hook hands over the val loop's batches one at a time
(:func:`feed_batch`); both end in :func:`reduce_session` and ``session.result``.

Geometry, the same through every door: each image is brought to ``S x S`` by the
short side resized to S and a centre crop (:func:`~mmseg_erf.engine.fit_square`; an
image whose short side already is S is only cropped). The CLI and ``compute_erf``
load images through the config's test pipeline with its resize replaced by that
geometry, so each original is resampled once. The hook receives what the val
pipeline made; with ``input_size=None`` (its default) S is the smallest short side of
the snapshot's first batch, so images the val pipeline already sized are cropped, not
resampled again.
"""
from typing import Callable, Iterable, List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, all_reduce, get_dist_info
from torch import nn

from ..engine import ERFSession, TargetError
from ..engine.accumulator import ERFAccumulator
from ..heads import head_runner_for
from ..input_size import MODEL_ERRORS, refused_size
from ..segmentor import batch_inputs
from .data import batch_labels, image_identity
from .request import ERFRequest


def open_session(model: nn.Module, request: ERFRequest) -> ERFSession:
    """The session of a request on a built model (in eval mode)."""
    return ERFSession(model, request.targets, request.num_images, request.points,
                      request.class_index, head_runner_for(model), request.ci_buckets,
                      request.ci_replicates)


def batch_size_of(batch: dict) -> Optional[int]:
    """The side S the hook's default geometry takes from a batch: its smallest short
    side (None for a batch without a readable image)."""
    sides = [min(img.shape[-2:]) for img in batch['inputs'] if img is not None]
    return int(min(sides)) if sides else None


def rank_positions(seen: int, size: int) -> List[int]:
    """Dataset positions of this rank's next ``size`` samples after ``seen`` of them.

    mmengine's ``DefaultSampler`` (no shuffle) gives rank r the samples
    ``r, r + world, r + 2 * world, ...``; its padding repeats get positions at or
    beyond the dataset length.
    """
    rank, world = get_dist_info()
    return [rank + world * (seen + i) for i in range(size)]


def feed_batch(model: nn.Module, session: ERFSession, batch: dict, input_size: int,
               seen: int, dataset_length: Optional[int] = None) -> int:
    """Process one of this rank's data batches; returns how many images it used.

    Padding repeats (positions >= dataset length) and images beyond
    ``num_images`` are never counted, so N processes give the images, and the
    maps, of one. Samples whose ``inputs`` is None (files the dataset could not
    read) are counted as skipped.
    """
    positions = rank_positions(seen, len(batch['inputs']))
    bound = min(session.num_images, dataset_length or session.num_images)
    if positions[0] >= bound:
        return 0
    images = list(batch['inputs'])
    unreadable = [p for p, img in zip(positions, images) if img is None]
    used = session.skip_unreadable(unreadable, limit=dataset_length) if unreadable else 0
    readable = [(p, img) for p, img in zip(positions, images) if img is not None]
    if readable:
        inputs = batch_inputs(model, dict(inputs=[img for _, img in readable]), input_size)
        labels = None
        if session.needs_labels:
            labels = [lb for lb, img in zip(batch_labels(batch, input_size), images)
                      if img is not None]
        used += session.process(inputs, [p for p, _ in readable], limit=dataset_length,
                                labels=labels)
    return used


def accumulate(model: nn.Module, session: ERFSession, batches: Iterable[dict],
               input_size: int, dataset_length: Optional[int] = None,
               on_batch: Optional[Callable[[int, int], None]] = None, start: int = 0) -> None:
    """Feed this rank's data batches through the session until it needs no more.

    The first batch is the input-size check: a size the model refuses is named
    with the sizes that work (no separate blank forward before it).

    Args:
        start: samples of this rank consumed before ``batches`` (a resumed run).
        on_batch: called as ``on_batch(images used, samples consumed)``; a true
            return value stops the loop (the stopping rule).
    """
    seen = start
    for batch in batches:
        if rank_positions(seen, 1)[0] >= min(session.num_images,
                                             dataset_length or session.num_images):
            break
        try:
            used = feed_batch(model, session, batch, input_size, seen, dataset_length)
        except MODEL_ERRORS as error:
            first = session.accumulator is None and not isinstance(error, TargetError)
            refusal = None if not first else refused_size(
                session.taps, input_size, error, device_of(model), getattr(model, 'cfg', None))
            if refusal is None:
                raise
            raise refusal from None
        seen += len(batch['inputs'])
        if on_batch is not None and on_batch(used, seen):
            break


def images_meta(session: ERFSession, dataset, num_images: int, rule=None) -> dict:
    """What a finished run records about its images, through every door: which ones
    (``images``: erf_compare pairs runs on the same images) and, with a stopping rule
    (:class:`.stopping.StopRule`), when and why it stopped (``stopping``)."""
    used = session.next_position if rule is not None else num_images
    info = dict(images=image_identity(dataset, used) if dataset is not None else None)
    if rule is not None:
        acc = session.accumulator
        info['stopping'] = rule.record(acc.images if acc is not None else 0)
    return info


def device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device('cpu')


def reduce_session(session: ERFSession) -> None:
    """Sum every rank's accumulator into each rank's (no-op in one process).

    A rank that had no image (fewer images than processes) joins with zeros, so
    every rank enters the same collective calls; if no rank had one, the
    accumulator stays None everywhere. Groups are the union of every rank's.
    """
    _, world = get_dist_info()
    if world == 1:
        return
    acc = session.accumulator
    opened = all_gather_object(None if acc is None else (acc.shape, acc.groups))
    shapes = [o[0] for o in opened if o is not None]
    if not shapes:
        return
    acc = session.open_accumulator(shapes[0])
    for group in sorted(set().union(*(o[1] for o in opened if o is not None))):
        acc.open_group(group)
    arrays = acc.arrays()
    # the same keys on every rank (the union of groups), in the same order
    summed = sorted(k for k in arrays if k.split('/')[0] in ERFAccumulator.SUMMED)
    for key in summed + ['numbers']:
        total = torch.from_numpy(np.array(arrays[key], copy=True))
        all_reduce(total)
        arrays[key] = total.numpy()
    session.accumulator = ERFAccumulator.from_arrays(arrays)
