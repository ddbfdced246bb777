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
                               api.maps['backbone.1'], rtol=1e-5)
    scalars = runner.message_hub.log_scalars
    assert 'test/erf/decode_head/area_0.5' in scalars
    assert 'val/erf/backbone.1/area_0.2' in scalars
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
                               api.maps['backbone.3'], rtol=1e-5)
