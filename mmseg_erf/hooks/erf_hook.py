"""ERFHook: effective receptive fields inside a Runner's val and test loops."""
import os.path as osp
from typing import Optional, Sequence, Union

from mmengine.dist import get_world_size, is_main_process
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from ..api import DEFAULT_TARGETS, feed_batch, reduce_session
from ..engine import ERFSession
from ..segmentor import unwrap


@HOOKS.register_module()
class ERFHook(Hook):
    """Compute ERF maps on the batches the val/test loop already loads.

    During training every ``interval``-th validation writes a snapshot to
    ``<out_dir>/iter_<iteration>/``: the ERF's evolution over training. A test
    run writes ``<out_dir>/test/``. Each snapshot holds the run-directory files
    (``erf_<target>.npy``/``.png``, ``metrics.json``); the area ratios go to the
    message hub as ``<mode>/erf/<target>/area_<t>`` (so the log line and every
    visualizer backend receive them) and each heatmap to
    ``runner.visualizer.add_image``.

    The hook never changes training: it takes gradients with respect to the
    inputs only (parameter ``.grad`` stays untouched), uses the model in the
    eval mode the loop set, and draws no random numbers.

    Args:
        targets (Sequence[str]): target names, default the last backbone stage.
            See :mod:`mmseg_erf.engine.targets`.
        num_images (int): images averaged per snapshot. Default 50.
        input_size (int): side S of the square input (short side resized to S,
            centre crop). Default 1024.
        interval (int): compute on every ``interval``-th validation. Default 1.
        out_dir (str, optional): default ``<work_dir>/erf``.
        point (Sequence[float]): relative response point (y, x). Default centre.
        class_index (int, optional): one class channel for logit targets.
        on_val (bool): compute during validation. Default True.
        on_test (bool): compute during test. Default True.
    """
    priority = 'NORMAL'

    def __init__(self, targets: Union[str, Sequence[str]] = DEFAULT_TARGETS,
                 num_images: int = 50, input_size: int = 1024, interval: int = 1,
                 out_dir: Optional[str] = None, point: Sequence[float] = (0.5, 0.5),
                 class_index: Optional[int] = None, on_val: bool = True,
                 on_test: bool = True):
        if interval < 1:
            raise ValueError(f'ERFHook interval must be >= 1, got {interval}')
        if num_images < 1:
            raise ValueError(f'ERFHook num_images must be >= 1, got {num_images}')
        self.targets = [targets] if isinstance(targets, str) else list(targets)
        self.num_images = num_images
        self.input_size = int(input_size)
        self.interval = interval
        self.out_dir = out_dir
        self.point = tuple(point)
        self.class_index = class_index
        self.on_val, self.on_test = on_val, on_test
        self._val_count = 0
        self._session: Optional[ERFSession] = None

    # ---- loop events -------------------------------------------------------------
    def before_val_epoch(self, runner) -> None:
        self._val_count += 1
        if self.on_val and self._val_count % self.interval == 0:
            self._start(runner)

    def before_test_epoch(self, runner) -> None:
        if self.on_test:
            self._start(runner)

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._feed(runner, data_batch, runner.val_dataloader)

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._feed(runner, data_batch, runner.test_dataloader)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._finish(runner, 'val', f'iter_{runner.iter}')

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._finish(runner, 'test', 'test')

    # ---- work --------------------------------------------------------------------
    def _start(self, runner) -> None:
        self._session = ERFSession(unwrap(runner.model), self.targets, self.num_images,
                                   self.point, self.class_index)
        self._seen = 0

    def _feed(self, runner, data_batch, dataloader) -> None:
        if self._session is None or data_batch is None:
            return
        feed_batch(unwrap(runner.model), self._session, data_batch, self.input_size,
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
        result = session.result(model_name, meta=dict(mode=mode, iteration=runner.iter,
                                                      world_size=get_world_size()))
        out_dir = osp.join(self.out_dir or osp.join(runner.work_dir, 'erf'), snapshot)
        if is_main_process():
            heatmaps = result.write(out_dir)
            for target, rgb in heatmaps.items():
                # no '/' in the name: LocalVisBackend writes <name>_<step>.png into one folder
                runner.visualizer.add_image(f'erf_{target}', rgb, step=runner.iter)
        for target, metrics in result.metrics.items():
            for threshold, ratio in metrics['area_ratio'].items():
                if ratio is not None:
                    runner.message_hub.update_scalar(f'{mode}/erf/{target}/area_{threshold}',
                                                     ratio)
        summary = ', '.join(f'{t}: area@0.5={m["area_ratio"]["0.5"]}'
                            for t, m in result.metrics.items())
        runner.logger.info(f'ERF of {result.num_images} images ({result.skipped} skipped) '
                           f'at {self.input_size}x{self.input_size} -> {out_dir}; {summary}')

