"""ERFHook inside real Runners, and inside mmseg's own tools/train.py and tools/test.py."""
import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

import mmseg_erf  # noqa: F401
from mmseg_erf import compute_erf

from conftest import REPO, TINY_CONFIG


def hook_cfg(tmp_path, voc_tree, **hook):
    cfg = Config.fromfile(TINY_CONFIG)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader]['dataset']['data_root'] = voc_tree
    cfg.work_dir = str(tmp_path / 'work')
    cfg.custom_hooks = [dict(type='ERFHook', targets=['backbone.1', 'decode_head'],
                             num_images=3, input_size=64, **hook)]
    cfg.launcher = 'none'
    cfg.randomness = dict(seed=0)
    # a visualizer of its own: mmengine hands a Runner the existing instance of a name,
    # and an earlier test's instance would write into that test's work_dir
    cfg.visualizer.name = f'visualizer_{tmp_path.name}'
    return cfg


def test_hook_in_val_and_test(tmp_path, voc_tree):
    runner = Runner.from_cfg(hook_cfg(tmp_path, voc_tree))
    runner.val()
    runner.test()
    val_dir = tmp_path / 'work' / 'erf' / 'iter_0'
    test_dir = tmp_path / 'work' / 'erf' / 'test'
    for out in (val_dir, test_dir):
        info = json.loads((out / 'metrics.json').read_text())
        assert (info['num_images'], info['input_size']) == (3, [64, 64])
        assert (out / 'erf_decode_head.png').is_file()
    # the hook's maps are the API's maps on the same batches (val pipeline, then S x S)
    model = runner.model.eval()
    api = compute_erf(model, runner.test_dataloader, ['backbone.1', 'decode_head'],
                      num_images=3, input_size=64)
    np.testing.assert_allclose(np.load(test_dir / 'erf_backbone.1.npy'),
                               api.map('backbone.1'), rtol=1e-5)
    scalars = runner.message_hub.log_scalars
    assert 'test/erf/decode_head/area_0.5_pct' in scalars
    assert 'val/erf/backbone.1/area_0.2_pct' in scalars
    vis = list((tmp_path / 'work').rglob('vis_image/erf*'))
    assert vis, 'heatmaps were not sent to the visualizer'


def test_hook_snapshots_during_training_and_leaves_training_unchanged(tmp_path, voc_tree):
    def train(with_hook, where):
        cfg = hook_cfg(where, voc_tree, interval=1)
        if not with_hook:
            cfg.custom_hooks = []
        runner = Runner.from_cfg(cfg)
        runner.train()
        return runner

    plain = train(False, tmp_path / 'plain')
    hooked = train(True, tmp_path / 'hooked')
    for (name, a), (_, b) in zip(plain.model.state_dict().items(),
                                 hooked.model.state_dict().items()):
        assert torch.equal(a, b), f'{name} differs after training with ERFHook'
    snapshots = sorted(p.name for p in (tmp_path / 'hooked' / 'work' / 'erf').iterdir())
    assert snapshots == ['iter_2', 'iter_4']


def test_interval_skips_validations(tmp_path, voc_tree):
    cfg = hook_cfg(tmp_path, voc_tree, interval=2)
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert sorted(p.name for p in (tmp_path / 'work' / 'erf').iterdir()) == ['iter_4']


def mmseg_tool(name):
    import mmseg
    return os.path.join(os.path.dirname(mmseg.__file__), '.mim', 'tools', name)


def test_mmseg_own_train_and_test_tools(tmp_path, voc_tree):
    """A user's config that only adds custom_imports and custom_hooks to theirs."""
    config = tmp_path / 'user_config.py'
    config.write_text(
        f"_base_ = [{TINY_CONFIG!r}]\n"
        f"data_root = {voc_tree!r}\n"
        "train_dataloader = dict(dataset=dict(data_root=data_root))\n"
        "val_dataloader = dict(dataset=dict(data_root=data_root))\n"
        "test_dataloader = val_dataloader\n"
        "custom_imports = dict(imports=['mmseg_erf'], allow_failed_imports=False)\n"
        "custom_hooks = [dict(type='ERFHook', targets=['backbone.3'], num_images=2,\n"
        "                     input_size=64)]\n")
    work = tmp_path / 'work'
    env = dict(os.environ, PYTHONPATH='')
    train = subprocess.run([sys.executable, mmseg_tool('train.py'), str(config), '--work-dir',
                            str(work)], capture_output=True, text=True, timeout=600, env=env)
    assert train.returncode == 0, train.stderr[-3000:]
    assert (work / 'erf' / 'iter_2' / 'erf_backbone.3.npy').is_file()
    assert (work / 'erf' / 'iter_4' / 'metrics.json').is_file()
    checkpoint = work / 'iter_4.pth'
    test = subprocess.run([sys.executable, mmseg_tool('test.py'), str(config), str(checkpoint),
                           '--work-dir', str(work)], capture_output=True, text=True,
                          timeout=600, env=env)
    assert test.returncode == 0, test.stderr[-3000:]
    info = json.loads((work / 'erf' / 'test' / 'metrics.json').read_text())
    assert info['num_images'] == 2 and 'backbone.3' in info['targets']
    # our CLI loads the same runner-written checkpoint, strictly, without full pickle trust
    cli = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'erf_seg.py'),
                          str(config), str(checkpoint), '--img-dir',
                          os.path.join(voc_tree, 'images', 'val'), '--num-images', '2', '--input-size',
                          '64', '--num-workers', '0', '--out-dir', str(tmp_path / 'cli')],
                         capture_output=True, text=True, timeout=600, env=env)
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert 'RANDOM' not in cli.stdout + cli.stderr
    # the trained weights: the same maps as a model loaded by mmengine's own
    # load_checkpoint (through the loader mmseg_erf installs), fed the same pipeline
    from mmengine.runner import load_checkpoint

    from mmseg_erf.segmentor import build_segmentor
    model = build_segmentor(str(config))[0]
    load_checkpoint(model, str(checkpoint), map_location='cpu', strict=True)
    val_images = os.path.join(voc_tree, 'images', 'val')
    api = compute_erf(model, val_images, ['backbone.3'], num_images=2, input_size=64)
    np.testing.assert_allclose(np.load(tmp_path / 'cli' / 'erf_backbone.3.npy'),
                               api.map('backbone.3'), rtol=1e-5)


class _StateProbe:
    """Two hooks around ERFHook (priorities above and below NORMAL) on the events
    where it works: the first one plants parameter gradients and records model
    mode, gradients, RNG states and optimizer state; the second checks them."""

    def __init__(self):
        self.checked = []

    def snapshot(self, runner):
        import random
        model = runner.model
        for i, p in enumerate(model.parameters()):
            if i % 2 == 0:  # some parameters with a gradient, some without
                p.grad = torch.full_like(p, float(i + 1))
            else:
                p.grad = None
        self.state = dict(
            modes=[m.training for m in model.modules()],
            grads=[None if p.grad is None else p.grad.clone() for p in model.parameters()],
            torch_rng=torch.get_rng_state(), numpy_rng=np.random.get_state(),
            python_rng=random.getstate(),
            optimizer=copy.deepcopy(runner.optim_wrapper.state_dict()))

    def check(self, runner, event):
        import random
        model, state = runner.model, self.state
        assert [m.training for m in model.modules()] == state['modes'], event
        for p, before in zip(model.parameters(), state['grads']):
            assert (p.grad is None) == (before is None), event
            if before is not None:
                assert torch.equal(p.grad, before), event
        assert torch.equal(torch.get_rng_state(), state['torch_rng']), event
        numpy_now, numpy_before = np.random.get_state(), state['numpy_rng']
        assert numpy_now[0] == numpy_before[0] and np.array_equal(numpy_now[1], numpy_before[1])
        assert numpy_now[2:] == numpy_before[2:], event
        assert random.getstate() == state['python_rng'], event
        after = runner.optim_wrapper.state_dict()
        assert repr(after) == repr(state['optimizer']), event
        for p in model.parameters():
            p.grad = None
        self.checked.append(event)


def test_hook_leaves_mode_grads_rng_and_optimizer_as_they_were(tmp_path, voc_tree):
    from mmengine.hooks import Hook
    probe = _StateProbe()

    class Before(Hook):
        priority = 'VERY_HIGH'

        def after_val_iter(self, runner, *args, **kwargs):
            probe.snapshot(runner)

        def after_val_epoch(self, runner, *args, **kwargs):
            probe.snapshot(runner)

    class After(Hook):
        priority = 'VERY_LOW'

        def after_val_iter(self, runner, batch_idx, *args, **kwargs):
            probe.check(runner, f'after_val_iter {batch_idx}')

        def after_val_epoch(self, runner, *args, **kwargs):
            probe.check(runner, 'after_val_epoch')

    cfg = hook_cfg(tmp_path, voc_tree, interval=1)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=2, val_interval=2)
    runner = Runner.from_cfg(cfg)
    runner.register_hook(Before())
    runner.register_hook(After())
    runner.train()
    # the probes saw ERFHook's work: every val iteration fed it, and it wrote a snapshot
    assert probe.checked == [f'after_val_iter {i}' for i in range(5)] + ['after_val_epoch']
    assert (tmp_path / 'work' / 'erf' / 'iter_2' / 'metrics.json').is_file()


def test_tensorboard_receives_heatmaps_and_scalars(tmp_path, voc_tree):
    pytest.importorskip('tensorboard')
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    cfg = hook_cfg(tmp_path, voc_tree)
    # a fresh name: visualizers are process-wide instances, one per name
    cfg.visualizer = dict(type='SegLocalVisualizer', name='erf_tensorboard_test',
                          vis_backends=[dict(type='TensorboardVisBackend')])
    runner = Runner.from_cfg(cfg)
    runner.val()
    runner.visualizer.close()
    events = sorted((tmp_path / 'work').rglob('events.out.tfevents.*'))
    assert events, 'TensorboardVisBackend wrote no event file'
    accumulator = EventAccumulator(str(events[0].parent), size_guidance={'images': 0,
                                                                          'scalars': 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    written = tmp_path / 'work' / 'erf' / 'iter_0'
    for target in ('backbone.1', 'decode_head'):
        images = accumulator.Images(f'erf_{target}')
        assert len(images) == 1
        png = np.asarray(Image.open(written / f'erf_{target}.png').convert('RGB'))
        assert (images[0].height, images[0].width) == png.shape[:2]
    # mmengine's log processor drops the 'val/' prefix of the message hub's keys
    area_tags = [t for t in tags['scalars'] if 'erf/' in t and t.endswith('area_0.5_pct')]
    assert sorted(area_tags) == [f'erf/{t}/area_0.5_pct' for t in ('backbone.1', 'decode_head')]
    metrics = json.loads((written / 'metrics.json').read_text())
    # in percent: mmengine's log line prints 4 decimals
    logged = accumulator.Scalars('erf/decode_head/area_0.5_pct')[0].value
    assert logged == pytest.approx(100 * metrics['targets']['decode_head']['area_ratio']['0.5'])
