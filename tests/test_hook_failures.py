"""ERFHook fails fast on a wrong hook, and never kills training late."""
import json

import pytest
from mmengine.hooks import Hook
from mmengine.runner import Runner

import mmseg_erf.hooks.erf_hook as erf_hook
from mmseg_erf.hooks import ERFHook
from mmseg_erf.engine import ERFResult, TargetError
from mmseg_erf.errors import ERFUsageError

from test_hook import hook_cfg


class IterationProbe(Hook):
    """Records every training iteration that starts."""

    def __init__(self):
        self.started = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.started.append(runner.iter)


@pytest.mark.parametrize('hook, error, word', [
    (dict(targets=['neck.0']), TargetError, 'no neck'),
    (dict(targets=['decode_head'], class_index=999), ERFUsageError, '4 classes'),
])
def test_wrong_hook_stops_train_before_the_first_iteration(tmp_path, voc_tree, hook, error,
                                                           word):
    """Mutation: ERFHook.before_run emptied -> training runs and fails at validation."""
    cfg = hook_cfg(tmp_path, voc_tree)
    cfg.custom_hooks = [dict(type='ERFHook', num_images=2, input_size=64, **hook)]
    runner = Runner.from_cfg(cfg)
    probe = IterationProbe()
    runner.register_hook(probe)
    with pytest.raises(error, match=word):
        runner.train()
    assert probe.started == []
    assert not list((tmp_path / 'work').rglob('*.pth'))


@pytest.mark.parametrize('kwargs, word', [
    (dict(num_images=0), 'num_images'), (dict(input_size=-3), 'input_size'),
    (dict(interval=0), 'interval'), (dict(point=(1.5, 0.5)), 'point'),
    (dict(class_index=-2), 'class_index'), (dict(targets=[]), 'targets'),
    (dict(class_index=1, targets=['backbone.3']), 'class_index selects'), (dict(out_dir=3), 'out_dir'),
])
def test_bad_hook_arguments_refused_when_the_hook_is_built(kwargs, word):
    with pytest.raises(ERFUsageError, match=f'ERFHook {word}'):
        ERFHook(**kwargs)


def _fail_feed(*args, **kwargs):
    raise RuntimeError('CUDA out of memory. Tried to allocate 8.00 GiB')


def _fail_write(self, out_dir, images=True):
    raise OSError(28, 'No space left on device', out_dir)


def test_failure_inside_the_hook_leaves_training_finishing(tmp_path, voc_tree, monkeypatch):
    """Out of memory while feeding at the first validation, a full disk while writing at
    the second: each snapshot is skipped with an error in the log, and training ends
    with its checkpoints. Mutation: ERFHook._guarded re-raising always -> train() raises."""
    real_feed = erf_hook.feed_batch

    def feed(model, session, batch, *args, **kwargs):
        if runner.iter == 2:
            _fail_feed()
        return real_feed(model, session, batch, *args, **kwargs)

    monkeypatch.setattr(erf_hook, 'feed_batch', feed)
    monkeypatch.setattr(ERFResult, 'write', _fail_write)
    runner = Runner.from_cfg(hook_cfg(tmp_path, voc_tree))
    runner.train()
    work = tmp_path / 'work'
    assert runner.iter == 4
    assert (work / 'iter_2.pth').is_file() and (work / 'iter_4.pth').is_file()
    assert not (work / 'erf').exists()
    log = ''.join(p.read_text() for p in work.rglob('*.log'))
    for snapshot, reason in (('iter_2', 'RuntimeError: CUDA out of memory'),
                             ('iter_4', 'OSError: [Errno 28] No space left on device')):
        assert f'ERFHook: the val snapshot {snapshot} is skipped ({reason}' in log
    # the scalars of a skipped snapshot are not logged
    assert not any('erf/' in key for key in runner.message_hub.log_scalars)


def test_strict_makes_a_failure_fatal(tmp_path, voc_tree, monkeypatch):
    monkeypatch.setattr(erf_hook, 'feed_batch', _fail_feed)
    runner = Runner.from_cfg(hook_cfg(tmp_path, voc_tree, strict=True))
    with pytest.raises(RuntimeError, match='CUDA out of memory'):
        runner.train()
    assert runner.iter == 2  # it ended at the first validation


def test_test_and_val_runs_never_touch_the_training_data(tmp_path, voc_tree):
    """A user with the val/test data only (a released checkpoint): the training set of
    the config does not exist. Mutation: ERFHook reading runner.iter -> mmengine builds
    the train loop and its dataloader -> FileNotFoundError .../images/train."""
    cfg = hook_cfg(tmp_path, voc_tree)
    cfg.train_dataloader.dataset.data_root = str(tmp_path / 'no_training_data')
    runner = Runner.from_cfg(cfg)
    runner.test()
    runner.val()
    for snapshot in ('test', 'iter_0'):
        info = json.loads((tmp_path / 'work' / 'erf' / snapshot / 'metrics.json').read_text())
        assert info['num_images'] == 3 and info['meta']['iteration'] == 0
    assert not isinstance(runner._train_loop, erf_hook.BaseLoop)
