"""ERFHook: effective receptive fields inside a Runner's val and test loops."""
import os.path as osp
from typing import Optional, Sequence, Union

import torch
from mmengine.dist import all_gather_object, get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.runner import BaseLoop
from mmseg.registry import HOOKS

from .. import validation
from ..engine import ERFSession, FeatureTaps
from ..errors import ERFUsageError
from ..heads import head_runner_for
from ..run import DEFAULT_TARGETS, ERFRequest, feed_batch, open_session, reduce_session
from ..run.data import dataset_classes
from ..run.loop import batch_size_of, images_meta
from ..run.summary import log_line, scalars
from ..segmentor import unwrap


def _iteration(runner) -> int:
    """The training iteration, or 0 outside training.

    ``runner.iter`` would build the train loop, and with it the training
    dataloader, in a val- or test-only run: a user holding only the test data
    (the usual case for a released checkpoint) would get a FileNotFoundError.
    """
    loop = getattr(runner, '_train_loop', None)
    return loop.iter if isinstance(loop, BaseLoop) else 0


@HOOKS.register_module()
class ERFHook(Hook):
    """Compute ERF maps on the batches the val/test loop already loads.

    During training every ``interval``-th validation writes a snapshot to
    ``<out_dir>/iter_<iteration>/``: the ERF's evolution over training. A test
    run writes ``<out_dir>/test/``. Each snapshot holds the run-directory files
    (``erf_<target>.npy``/``.png``, ``metrics.json``, as the CLI writes them); the
    numbers of the CLI's summary table go to the message hub as
    ``<mode>/erf/<target>/area_<t>_pct`` (percent), ``.../radius_px``... (so the log
    line and every visualizer backend receive them) and each heatmap to
    ``runner.visualizer.add_image`` as ``erf_<target>``.

    Geometry: the hook takes the val batches as the val pipeline made them. With
    ``input_size=None`` (default) S is the smallest short side of the snapshot's
    first batch, and every image is centre-cropped to S x S (resized only when its
    short side differs from S): what the val pipeline already sized is not
    resampled again. With ``input_size=S`` each image's short side is resized to S
    first, as the CLI does; on images the val pipeline leaves at short side S (or
    does not resize) the hook's maps equal the CLI's and ``compute_erf``'s.

    The hook never changes training: it takes gradients with respect to the
    inputs only (parameter ``.grad`` stays untouched), uses the model in the
    eval mode the loop set, and draws no random numbers.

    Wrong arguments stop the run before its first iteration: values are checked
    here, targets, class index and input size against the real model in
    ``before_run``. A failure that only shows up later (out of memory at the ERF
    size, a disk error while writing) is logged as an error and that snapshot is
    skipped, so training goes on; ``strict=True`` makes it fatal.

    Args:
        targets (Sequence[str]): target names, default the last backbone stage.
            See :mod:`mmseg_erf.engine.targets`.
        num_images (int): images averaged per snapshot. Default 50.
        input_size (int, optional): side S of the square input (short side
            resized to S, centre crop). Default None: the val batches' own short
            side (see Geometry above).
        interval (int): compute on every ``interval``-th validation. Default 1.
        out_dir (str, optional): default ``<work_dir>/erf``.
        point (Sequence[float]): relative response point (y, x). Default centre.
        class_index (int, optional): one class channel for logit targets.
        on_val (bool): compute during validation. Default True.
        on_test (bool): compute during test. Default True.
        strict (bool): raise a failure inside the hook instead of logging it
            and skipping the snapshot. Default False.
        points (str | dict, optional): response points other than the centre,
            aligned and grouped per class, boundary/interior or grid cell
            (``'per-class'``, ``'boundary'``, ``'predicted'``, ``'grid 3'`` or a
            dict of :class:`~mmseg_erf.engine.PointSpec` fields); labels come from
            the val batches' ``gt_sem_seg``, class names from the val dataset.
            Scalars: ``<mode>/erf/<target>/<group>/area_0.5_pct`` and ``.../radius_px``.
    """
    priority = 'NORMAL'

    def __init__(self, targets: Union[str, Sequence[str]] = DEFAULT_TARGETS,
                 num_images: int = 50, input_size: Optional[int] = None, interval: int = 1,
                 out_dir: Optional[str] = None, point: Sequence[float] = (0.5, 0.5),
                 class_index: Optional[int] = None, on_val: bool = True,
                 on_test: bool = True, strict: bool = False, points=None):
        self.request = ERFRequest.create(
            validation.hook_name, points=points, point=point, targets=targets,
            num_images=num_images, input_size=input_size, class_index=class_index)
        if not validation.is_integer(interval) or interval < 1:
            raise ERFUsageError(f'ERFHook interval must be an integer >= 1, got {interval!r}')
        if out_dir is not None and not isinstance(out_dir, str):
            raise ERFUsageError(f'ERFHook out_dir must be a folder path, got {out_dir!r}')
        self.interval = interval
        self.out_dir = out_dir
        self.on_val, self.on_test = on_val, on_test
        self.strict = bool(strict)
        self._val_count = 0
        self._session: Optional[ERFSession] = None
        self._failure: Optional[str] = None

    # ---- loop events -------------------------------------------------------------
    def before_run(self, runner) -> None:
        """Check targets, class index and input size against the model, before any
        iteration (a wrong hook must not cost a training run)."""
        if not (self.on_val or self.on_test):
            return
        model = unwrap(runner.model)
        request = self.request
        taps = FeatureTaps(model, request.targets, head_runner_for(model))
        device = next(model.parameters(), torch.zeros(0)).device
        size = request.input_size or _probe_size(runner)
        validation.check_model(model, taps, request.targets, request.class_index, size,
                               device, validation.hook_name)

    def before_val_epoch(self, runner) -> None:
        self._val_count += 1
        if self.on_val and self._val_count % self.interval == 0:
            self._guarded(runner, self._start, runner, runner.val_dataloader)

    def before_test_epoch(self, runner) -> None:
        if self.on_test:
            self._guarded(runner, self._start, runner, runner.test_dataloader)

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._guarded(runner, self._feed, runner, data_batch, runner.val_dataloader)

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._guarded(runner, self._feed, runner, data_batch, runner.test_dataloader)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._close(runner, 'val', f'iter_{_iteration(runner)}')

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._close(runner, 'test', 'test')

    # ---- failures ----------------------------------------------------------------
    def _guarded(self, runner, work, *args) -> None:
        """Run one step of the snapshot; a failure ends the snapshot, not the run."""
        if self._failure is not None:
            return
        try:
            work(*args)
        except Exception as error:
            if self.strict:
                raise
            self._session = None
            self._failure = f'{type(error).__name__}: {" ".join(str(error).split())}'

    def _close(self, runner, mode: str, snapshot: str) -> None:
        """Finish the snapshot, unless any process failed on it: then all skip it
        together (a process leaving the sums alone would block the others)."""
        failures = [self._failure]
        if get_world_size() > 1:
            failures = all_gather_object(self._failure)
        failed = [f for f in failures if f is not None]
        self._failure = None
        if not failed:
            self._guarded(runner, self._finish, runner, mode, snapshot)
            failed = [self._failure] if self._failure is not None else []
            self._failure = None
        if failed:
            self._session = None
            runner.logger.error(f'ERFHook: the {mode} snapshot {snapshot} is skipped '
                                f'({failed[0]}); training and evaluation go on (strict=True '
                                f'makes this fatal)')

    # ---- work --------------------------------------------------------------------
    def _start(self, runner, dataloader=None) -> None:
        model = unwrap(runner.model)
        classes = dataset_classes(getattr(dataloader, 'dataset', None)) or \
            (getattr(model, 'dataset_meta', None) or {}).get('classes')
        self._session = open_session(model, self.request.with_class_names(classes))
        self._dataset = getattr(dataloader, 'dataset', None)
        self._size = self.request.input_size
        self._seen = 0

    def _feed(self, runner, data_batch, dataloader) -> None:
        if self._session is None or data_batch is None:
            return
        self._size = self._size or batch_size_of(data_batch)
        if self._size is not None:
            feed_batch(unwrap(runner.model), self._session, data_batch, self._size,
                       self._seen, len(dataloader.dataset))
        self._seen += len(data_batch['inputs'])

    def _finish(self, runner, mode: str, snapshot: str) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        reduce_session(session)
        if session.accumulator is None:
            runner.logger.warning('ERFHook: no image reached the hook; nothing written')
            return
        model_name = osp.splitext(osp.basename(runner.cfg.filename or ''))[0] \
            if getattr(runner, 'cfg', None) is not None else ''
        result = session.result(model_name, meta=dict(
            mode=mode, iteration=_iteration(runner), world_size=get_world_size(),
            **images_meta(session, self._dataset, self.request.num_images)))
        out_dir = osp.join(self.out_dir or osp.join(runner.work_dir, 'erf'), snapshot)
        if is_main_process():
            heatmaps = result.write(out_dir)
            for target, rgb in heatmaps.items():
                # no '/' in the name: LocalVisBackend writes <name>_<step>.png into one folder
                runner.visualizer.add_image(f'erf_{target}', rgb, step=_iteration(runner))
        for key, value in scalars(result, mode).items():
            runner.message_hub.update_scalar(key, value)
        runner.logger.info(log_line(result, out_dir))


def _probe_size(runner) -> int:
    """The size ``before_run`` checks when the hook takes the val batches' own: the
    config's test/val crop or scale, else 512 (the real size is known at the first
    batch, which diagnoses a refusal itself)."""
    from ..input_size import config_sizes
    sizes = config_sizes(getattr(runner, 'cfg', None))
    return sizes[0] if sizes else 512
