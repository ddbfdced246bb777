"""compute_erf: the Python door."""
import os
import os.path as osp
from typing import Callable, Iterable, Optional, Sequence, Union

import torch
from mmengine.dataset import DefaultSampler, pseudo_collate
from mmengine.dist import all_gather_object, all_reduce, get_dist_info
from torch import nn

from .engine import ERFResult, ERFSession, TargetError
from .errors import ERFUsageError
from .heads import head_runner_for
from .segmentor import batch_inputs, config_pipeline, erf_pipeline, unwrap
from .validation import (api_name, build_model_checked, check_image_folder, check_model,
                         check_values, load_config_checked, resolve_device)
from .input_size import MODEL_ERRORS, refused_size

DEFAULT_TARGETS = ('backbone.-1', )


class _PathDataset(torch.utils.data.Dataset):
    """A list of image files run through a pipeline (for ``images=[...]``)."""

    def __init__(self, paths: Sequence[str], pipeline):
        from mmcv.transforms import Compose
        missing = [p for p in paths if not osp.isfile(p)]
        if missing:
            raise FileNotFoundError(f'image {missing[0]} does not exist '
                                    f'({len(missing)} of {len(paths)} missing)')
        self.paths = list(paths)
        self.pipeline = Compose(pipeline)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        from .datasets import unreadable_placeholder
        path = self.paths[index]
        try:
            return self.pipeline(dict(img_path=path, seg_fields=[]))
        except Exception:
            return unreadable_placeholder(path)


def image_dataset(images: Union[str, Sequence[str]], pipeline, recursive: bool = False):
    """A dataset over a folder (``ImageFolderDataset``) or a list of image paths."""
    from .datasets import ImageFolderDataset
    if isinstance(images, (str, os.PathLike)):
        images = str(images)
        if not osp.isdir(images):
            raise FileNotFoundError(f'image folder {images} does not exist; pass a folder '
                                    f'of images, a list of paths or a dataloader')
        return ImageFolderDataset(data_prefix=dict(img_path=images, seg_map_path=''),
                                  pipeline=pipeline, recursive=recursive,
                                  metainfo=dict(classes=('unlabelled', )), test_mode=True)
    return _PathDataset([str(p) for p in images], pipeline)


def rank_positions(seen: int, size: int) -> list:
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
        extra = {}
        if getattr(session, 'needs_labels', False):  # a PointSession on label maps
            from .point_doors import batch_labels
            labels = batch_labels(batch, input_size)
            extra['labels'] = [lb for lb, img in zip(labels, images) if img is not None]
        used += session.process(inputs, [p for p, _ in readable], limit=dataset_length,
                                **extra)
    return used


def accumulate(model: nn.Module, session: ERFSession, batches: Iterable[dict],
               input_size: int, dataset_length: Optional[int] = None,
               on_batch: Optional[Callable[[int, int], None]] = None, start: int = 0) -> None:
    """Feed this rank's data batches through the session until it needs no more.

    Args:
        start: samples of this rank consumed before ``batches`` (a resumed run).
        on_batch: called as ``on_batch(images used, samples consumed)``.
    """
    seen = start
    for batch in batches:
        if rank_positions(seen, 1)[0] >= min(session.num_images,
                                             dataset_length or session.num_images):
            break
        try:
            used = feed_batch(model, session, batch, input_size, seen, dataset_length)
        except MODEL_ERRORS as error:
            # the first batch is the input-size check: name the sizes that work
            first = session.accumulator is None and not isinstance(error, TargetError)
            refusal = None if not first else refused_size(
                session.taps, input_size, error, _device(model), getattr(model, 'cfg', None))
            if refusal is None:
                raise
            raise refusal from None
        seen += len(batch['inputs'])
        if on_batch is not None:
            on_batch(used, seen)


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device('cpu')


def reduce_session(session: ERFSession) -> None:
    """Sum every rank's accumulator into each rank's (no-op in one process).

    A rank that had no image (fewer images than processes) joins with zeros, so
    every rank enters the same collective calls; if no rank had one, the
    accumulator stays None everywhere.
    """
    _, world = get_dist_info()
    if world == 1:
        return
    acc = session.accumulator
    shapes = all_gather_object(None if acc is None else acc.shape)
    shape = next((s for s in shapes if s is not None), None)
    if shape is None:
        return
    acc = session.open_accumulator(shape)
    from .engine import PointSession
    if isinstance(session, PointSession):
        from .point_doors import reduce_point_sums
        return reduce_point_sums(session)
    for name in acc.names:
        total = torch.from_numpy(acc.sums[name])
        all_reduce(total)
        acc.sums[name] = total.numpy()
    counts = torch.tensor([acc.count, acc.skipped], dtype=torch.float64)
    all_reduce(counts)
    acc.count, acc.skipped = int(counts[0]), int(counts[1])


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters(), torch.zeros(0)).device


def compute_erf(model: Union[nn.Module, str], images, targets: Sequence[str] = DEFAULT_TARGETS,
                num_images: int = 50, input_size: int = 1024, batch_size: int = 1,
                checkpoint: Optional[str] = None, device: Optional[str] = None,
                point: Sequence[float] = (0.5, 0.5), class_index: Optional[int] = None,
                recursive: bool = False, num_workers: int = 0,
                trust_checkpoint: bool = False, allow_partial: bool = False,
                seed: int = 0, model_name: Optional[str] = None, points=None,
                labels: Optional[str] = None,
                class_names: Optional[Sequence[str]] = None) -> ERFResult:
    """Effective receptive fields of a segmentor.

    Args:
        model: a built mmseg segmentor, or the path of an mmseg config (with
            ``checkpoint`` optional: without it, random initial weights).
        images: a folder, a list of image paths, or an iterable of mmseg data
            batches (``{'inputs': [...], 'data_samples': [...]}``, e.g. a runner's
            dataloader). Folders and paths run through the model config's test
            pipeline with its resize replaced by the fixed ERF geometry.
        targets: target names (``backbone.i``, ``neck.i``, ``decode_head``,
            ``seg_logits``, ``all`` or a module path); default the last backbone stage.
        num_images: images averaged (the first ones, in dataset order).
        input_size: side S of the square input.
        batch_size: images per forward pass.
        point, class_index: response point (relative y, x) and logit class.
        seed: seed of the random initial weights when a config has no checkpoint.
        points: response points other than the centre, aligned and grouped:
            ``'grid 3'``, ``'per-class'``, ``'boundary'``, ``'predicted'``, ``'centre'``,
            a dict of :class:`~mmseg_erf.engine.PointSpec` fields or a PointSpec.
        labels: with ``images`` a folder, the folder of its label maps (same stems,
            ``.png``), needed by 'per-class' and 'boundary' (batches bring
            ``gt_sem_seg`` themselves).
        class_names: names of the label values (default: the dataset's classes).

    Returns:
        ERFResult: ``.maps``, ``.num_images``, ``.skipped``, ``.metrics``; with
        ``points``, a PointResult (``.maps[target][group]``, ``.counts``,
        ``.coverage``, ``.metrics[target][group]``).

    Raises:
        FileNotFoundError: a config, checkpoint, image folder or image that does not exist.
        mmseg_erf.errors.ERFUsageError: a value out of range (``num_images``, ``point``,
            ``class_index`` against the head's classes, an input size the model cannot
            take, a ``device`` this torch lacks). Its subclasses say more:
            ``ConfigError`` (a config that cannot be read or built) and
            ``NotACheckpointError`` (a file torch cannot read as a checkpoint).
        mmseg_erf.engine.TargetError: a target the model does not have.
        mmseg_erf.checkpoint.CheckpointMismatchError / UntrustedCheckpointError: weights
            that do not fit, or a pickle outside the allow-list.
        mmseg_erf.engine.NoImagesError: no image could be read.

        Every one is a ``ValueError`` except the first and the last, and every one is
        raised before the first image is processed; the config and the checkpoint file
        are checked before the model is built.
    """
    check_values(api_name, num_images=num_images, input_size=input_size,
                 batch_size=batch_size, num_workers=num_workers, point=point,
                 class_index=class_index, targets=targets)
    device = resolve_device(device) if device is not None else None
    if isinstance(images, (str, os.PathLike)):
        check_image_folder(str(images), 'images')
    if isinstance(model, (str, os.PathLike)):
        from .checkpoint import check_checkpoint_file
        model_name = model_name or osp.splitext(osp.basename(str(model)))[0]
        cfg = load_config_checked(str(model))
        if checkpoint:
            check_checkpoint_file(checkpoint)
        model, _, _ = build_model_checked(cfg, None, api_name, checkpoint=checkpoint,
                                          device=device or 'cpu',
                                          trust_checkpoint=trust_checkpoint,
                                          allow_partial=allow_partial, seed=seed)
    elif checkpoint:
        raise ERFUsageError('checkpoint is only used with a config path; load weights into a '
                            'built model yourself (mmseg_erf.checkpoint.load_model_weights)')
    elif not isinstance(model, nn.Module):
        raise ERFUsageError(f'model must be an mmseg config path or a built segmentor '
                            f'(nn.Module), got {type(model).__name__}')
    model = unwrap(model)
    if device is not None:
        model = model.to(device)
    model.eval()
    from .engine import PointSession
    from .point_doors import dataset_classes, parse_points, with_class_names
    spec = parse_points(points)
    session = ERFSession(model, targets, num_images, point, class_index,
                         head_runner_for(model)) if spec is None \
        else PointSession(model, targets, num_images, with_class_names(spec, class_names),
                          class_index, head_runner_for(model))
    check_model(model, session.taps, [targets] if isinstance(targets, str) else targets,
                class_index, input_size, _device_of(model), api_name)
    length = None
    if isinstance(images, (str, os.PathLike, list, tuple)):
        cfg = getattr(model, 'cfg', None)
        pipeline = erf_pipeline(config_pipeline(cfg) if cfg is not None else None,
                                input_size)
        if labels is not None:
            from .point_doors import labelled_folder
            dataset = labelled_folder(images, labels, pipeline, class_names, recursive)
        else:
            dataset = image_dataset(images, pipeline, recursive)
        length = len(dataset)
        images = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, num_workers=num_workers,
            sampler=DefaultSampler(dataset, shuffle=False), collate_fn=pseudo_collate)
    if spec is not None:
        # a label folder named by the caller has no class names of its own
        names = None if labels is not None else dataset_classes(getattr(images, 'dataset',
                                                                        None))
        meta = getattr(model, 'dataset_meta', None) or {}
        session.points = with_class_names(session.points, names or meta.get('classes'))
    accumulate(model, session, images, input_size, dataset_length=length)
    reduce_session(session)
    return session.result(model_name or type(model).__name__)
