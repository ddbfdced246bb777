"""compute_erf: the Python door (keywords -> request -> the one run loop)."""
import os
import os.path as osp
from typing import Dict, Optional, Sequence, Union

from torch import nn

from .engine import ERFResult
from .errors import ERFUsageError
from .run import DEFAULT_TARGETS, ERFRequest, accumulate, open_session, reduce_session
from .engine.stats import REPLICATES
from .run.data import build_dataset, dataset_classes, image_dataset, loader_for  # noqa: F401
from .run.loop import device_of, images_meta
from .run.request import DEFAULT_CI_METRICS
from .run.stopping import StopRule
from .segmentor import unwrap
from .validation import (api_name, build_model_checked, check_image_folder, check_model,
                         load_config_checked, resolve_device)


def compute_erf(model: Union[nn.Module, str], images, targets: Sequence[str] = DEFAULT_TARGETS,
                num_images: int = 50, input_size: int = 1024, batch_size: int = 1,
                checkpoint: Optional[str] = None, device: Optional[str] = None,
                point: Sequence[float] = (0.5, 0.5), class_index: Optional[int] = None,
                recursive: bool = False, num_workers: int = 0,
                trust_checkpoint: bool = False, allow_partial: bool = False,
                seed: int = 0, model_name: Optional[str] = None, points=None,
                labels: Optional[str] = None,
                class_names: Optional[Sequence[str]] = None, ci_buckets: Optional[int] = None,
                ci_replicates: int = REPLICATES, ci_width: Optional[float] = None,
                ci_metrics: Sequence[str] = DEFAULT_CI_METRICS) -> ERFResult:
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
        ci_buckets, ci_replicates: 95 % intervals (``metrics[t][g]['ci95']``) from a
            bootstrap over ``ci_buckets`` buckets of images (0: none; default 10 for
            the centre ERF, 0 for point runs, whose groups keep B (2S-1)^2 canvases).
        ci_width, ci_metrics: stop before ``num_images`` once every interval of
            ``ci_metrics`` is narrower than ``ci_width`` times its value
            (``meta['stopping']`` says why it stopped).

    Returns:
        ERFResult: ``.maps[target][group]`` (the classic ERF: group ``'centre'``, also
        ``.map(target)``), ``.metrics[target][group]``, ``.counts``, ``.coverage``,
        ``.num_images``, ``.skipped``.

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
    request = ERFRequest.create(
        api_name, points=points, point=point, class_names=class_names, targets=targets,
        num_images=num_images, input_size=input_size, batch_size=batch_size,
        num_workers=num_workers, class_index=class_index,
        images=images if isinstance(images, (str, os.PathLike, list, tuple)) else None,
        labels=labels, recursive=recursive, seed=seed, checkpoint=checkpoint,
        trust_checkpoint=trust_checkpoint, allow_partial=allow_partial, ci_buckets=ci_buckets,
        ci_replicates=ci_replicates, ci_width=ci_width, ci_metrics=tuple(ci_metrics))
    device = resolve_device(device) if device is not None else None
    if isinstance(images, (str, os.PathLike)):
        check_image_folder(str(images), 'images')
    model, model_name = _model(model, request, device, model_name)
    session = open_session(model, request)
    # the first batch checks the input size (accumulate names the sizes that work)
    check_model(model, session.taps, request.targets, class_index, input_size,
                device_of(model), api_name, probe_forward=False)
    length, dataset = None, getattr(images, 'dataset', None)
    if request.images is not None:
        dataset = build_dataset(request, getattr(model, 'cfg', None))
        length = len(dataset)
        images = loader_for(dataset, request)
    # a label folder named by the caller has no class names of its own
    names = None if labels is not None else dataset_classes(getattr(images, 'dataset', None))
    meta = getattr(model, 'dataset_meta', None) or {}
    session.points = request.with_class_names(names or meta.get('classes')).points
    rule = StopRule(ci_width, request.ci_metrics, num_images, out=None) if ci_width else None
    accumulate(model, session, images, input_size, dataset_length=length,
               on_batch=None if rule is None else lambda *_: rule.check(session.accumulator))
    reduce_session(session)
    return session.result(model_name or type(model).__name__,
                          images_meta(session, dataset, num_images, rule))


def compute_erf_sizes(model, images, input_sizes: Sequence[int],
                      out_dir: Optional[str] = None, **options) -> Dict[int, ERFResult]:
    """:func:`compute_erf` at each input size (``options`` as there), one model.

    With ``out_dir``, each result is written to ``out_dir/size_<S>`` and the sweep's
    ``sizes.md``, ``sizes.csv`` and ``sizes.png`` (each metric against the size) to
    ``out_dir``. Returns ``{size: result}``.
    """
    from .run.sweep import check_sizes, size_dir, write_sweep
    sizes = check_sizes(input_sizes, 'input_sizes')
    if isinstance(model, (str, os.PathLike)):
        request = ERFRequest.create(
            api_name, checkpoint=options.pop('checkpoint', None), seed=options.get('seed', 0),
            trust_checkpoint=options.get('trust_checkpoint', False),
            allow_partial=options.get('allow_partial', False))
        model_name = options.pop('model_name', None)
        model, model_name = _model(model, request, options.pop('device', None), model_name)
        options['model_name'] = model_name
    results = {s: compute_erf(model, images, input_size=s, **options) for s in sizes}
    if out_dir is not None:
        for size, result in results.items():
            result.write(size_dir(out_dir, size))
        write_sweep(out_dir, results)
    return results


def _model(model, request: ERFRequest, device: Optional[str], model_name: Optional[str]):
    """The built segmentor in eval mode (from a config path, or as given), and its name."""
    if isinstance(model, (str, os.PathLike)):
        from .checkpoint import check_checkpoint_file
        model_name = model_name or osp.splitext(osp.basename(str(model)))[0]
        cfg = load_config_checked(str(model))
        if request.checkpoint:
            check_checkpoint_file(request.checkpoint)
        model, _, _ = build_model_checked(cfg, None, api_name, checkpoint=request.checkpoint,
                                          device=device or 'cpu',
                                          trust_checkpoint=request.trust_checkpoint,
                                          allow_partial=request.allow_partial,
                                          seed=request.seed)
    elif request.checkpoint:
        raise ERFUsageError('checkpoint is only used with a config path; load weights into a '
                            'built model yourself (mmseg_erf.checkpoint.load_model_weights)')
    elif not isinstance(model, nn.Module):
        raise ERFUsageError(f'model must be an mmseg config path or a built segmentor '
                            f'(nn.Module), got {type(model).__name__}')
    model = unwrap(model)
    if device is not None:
        model = model.to(device)
    model.eval()
    return model, model_name

