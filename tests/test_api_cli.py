"""compute_erf and tools/erf_seg.py on a small shipped config, end to end."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from mmseg_erf import compute_erf
from mmseg_erf.benchmark import omp_policy
from mmseg_erf.segmentor import build_segmentor, erf_pipeline

from conftest import REPO, TINY_CONFIG, make_voc_tree


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    root = make_voc_tree(tmp_path_factory.mktemp('voc'), splits=(('val', 5), ), labels=False,
                         size=(40, 70))
    return os.path.join(root, 'images', 'val')


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return build_segmentor(TINY_CONFIG)[0]


def test_pipeline_resize_replaced():
    pipeline = erf_pipeline([dict(type='LoadImageFromFile'),
                             dict(type='Resize', scale=(2048, 512), keep_ratio=True),
                             dict(type='LoadAnnotations', reduce_zero_label=True),
                             dict(type='PackSegInputs')], 96)
    assert [t['type'] for t in pipeline] == ['LoadImageFromFile', 'ERFResizeCrop',
                                             'PackSegInputs']
    assert pipeline[1]['size'] == 96


def test_folder_list_and_batches_agree(model, images):
    targets = ['backbone.0', 'backbone.3', 'decode_head', 'seg_logits']
    by_folder = compute_erf(model, images, targets, num_images=4, input_size=64,
                            batch_size=1)
    paths = sorted(os.path.join(images, f) for f in os.listdir(images))[:4]
    by_list = compute_erf(model, paths, targets, num_images=4, input_size=64, batch_size=2)
    assert by_folder.num_images == by_list.num_images == 4 and by_folder.skipped == 0
    for target in targets:
        assert by_folder.map(target).shape == (64, 64)
        assert by_folder.map(target).sum() > 0
        np.testing.assert_allclose(by_list.map(target), by_folder.map(target), rtol=2e-5,
                                   atol=1e-12)


def test_dataloader_of_runner_batches(model, images):
    from mmengine.dataset import pseudo_collate

    from mmseg_erf.api import image_dataset
    from mmseg_erf.segmentor import config_pipeline
    dataset = image_dataset(images, erf_pipeline(config_pipeline(model.cfg), 64))
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, collate_fn=pseudo_collate)
    from_loader = compute_erf(model, loader, ['backbone.2'], num_images=5, input_size=64)
    from_folder = compute_erf(model, images, ['backbone.2'], num_images=5, input_size=64)
    np.testing.assert_allclose(from_loader.map('backbone.2'),
                               from_folder.map('backbone.2'), rtol=2e-5)


def test_config_path_and_num_images(images):
    result = compute_erf(TINY_CONFIG, images, ['backbone.-1'], num_images=2, input_size=32)
    assert result.num_images == 2 and list(result.maps) == ['backbone.3']
    assert result.model_name == 'upernet_r18-tiny_imagefolder'


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'erf_seg.py'), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=600)


def test_cli_end_to_end(images, tmp_path):
    out = tmp_path / 'erf'
    proc = run_cli(TINY_CONFIG, '--img-dir', images, '--targets', 'all', '--num-images', '3',
                   '--input-size', '64', '--batch-size', '2', '--out-dir', str(out),
                   '--device', 'cpu', '--num-workers', '0')
    assert proc.returncode == 0, proc.stderr
    assert 'RANDOM initial weights' in proc.stdout + proc.stderr
    targets = ['backbone.0', 'backbone.1', 'backbone.2', 'backbone.3', 'decode_head']
    assert sorted(os.listdir(out)) == sorted(
        [f'erf_{t}.{ext}' for t in targets for ext in ('npy', 'png')]
        + ['metrics.json', 'bootstrap.npz'])
    info = json.loads((out / 'metrics.json').read_text())
    assert (info['num_images'], info['skipped'], info['input_size']) == (3, 0, [64, 64])
    assert set(info['targets']) == set(targets)
    assert set(info['targets']['backbone.3']['area_ratio']) == {'0.2', '0.3', '0.5', '0.99'}
    assert np.load(out / 'erf_decode_head.npy').shape == (64, 64)
    assert 'area@0.5' in proc.stdout and 'backbone.3' in proc.stdout
    # the CLI and the API are one engine
    api = compute_erf(TINY_CONFIG, images, targets, num_images=3, input_size=64)
    for t in targets:
        np.testing.assert_allclose(np.load(out / f'erf_{t}.npy'), api.map(t), rtol=2e-5)


def test_cli_default_workers_verbose(images, tmp_path):
    """The CLI as a user runs it on a shared machine: no --num-workers (2 dataloader
    worker processes), no OMP_WAIT_POLICY in the environment, --verbose, another
    process busy on one core. The maps equal the API's (no workers), the OpenMP runtime
    reports PASSIVE (GOMP_SPINCOUNT 0; OpenMP's default is 300000), --verbose says why,
    and the start-up line names every phase. Guards the mutations: the wait policy set
    after ``import torch``, a phase left out of --verbose."""
    out = tmp_path / 'erf'
    env = {k: v for k, v in os.environ.items() if k != 'OMP_WAIT_POLICY'}
    env['OMP_DISPLAY_ENV'] = 'VERBOSE'
    busy = omp_policy.start_busy_loop()
    try:
        proc = subprocess.run(
            [sys.executable, os.path.join(REPO, 'tools', 'erf_seg.py'), TINY_CONFIG,
             '--img-dir', images, '--targets', 'backbone.1', 'decode_head', '--num-images',
             '4', '--input-size', '64', '--batch-size', '2', '--out-dir', str(out),
             '--verbose'], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    finally:
        omp_policy.stop(busy)
    assert proc.returncode == 0, proc.stderr
    assert "GOMP_SPINCOUNT = '0'" in proc.stderr
    assert "OpenMP wait policy: PASSIVE (other processes' load at start-up: " in \
        proc.stdout + proc.stderr
    line = next(l for l in (proc.stdout + proc.stderr).splitlines() if 'start-up:' in l)
    phases = re.findall(r'(?:start-up: |, )([A-Za-z -]+) (\d+\.\d+) s', line)
    assert [p for p, _ in phases] == ['imports', 'config', 'dataset', 'model build',
                                      'checkpoint', 'model checks', 'first batch loaded',
                                      'first batch ERF'], line
    total = float(re.search(r'\((\d+\.\d+) s in all\)', line).group(1))
    # each of the 8 phases and the total is rounded to 0.01 s: their sum may differ
    # from the total by up to 9 half-hundredths
    assert abs(sum(float(s) for _, s in phases) - total) <= 0.005 * (len(phases) + 1) + 1e-9
    api = compute_erf(TINY_CONFIG, images, ['backbone.1', 'decode_head'], num_images=4,
                      input_size=64, batch_size=2)
    assert json.loads((out / 'metrics.json').read_text())['num_images'] == 4
    for t in ('backbone.1', 'decode_head'):
        np.testing.assert_allclose(np.load(out / f'erf_{t}.npy'), api.map(t), rtol=2e-5)


def test_cli_uses_the_config_test_dataset_and_default_out_dir(tmp_path):
    root = make_voc_tree(tmp_path / 'data', splits=(('val', 2), ))
    proc = run_cli(TINY_CONFIG, '--num-images', '2', '--input-size', '32', '--num-workers',
                   '0', '--cfg-options', f'test_dataloader.dataset.data_root={root}',
                   cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / 'work_dirs' / 'upernet_r18-tiny_imagefolder' / 'erf'
    assert json.loads((out / 'metrics.json').read_text())['num_images'] == 2
    assert (out / 'erf_backbone.3.png').is_file()


@pytest.mark.parametrize('args, fragment', [
    (['missing.py'], 'config missing.py does not exist'),
    ([TINY_CONFIG, 'nowhere.pth'], 'checkpoint nowhere.pth does not exist'),
    ([TINY_CONFIG, '--img-dir', '/no/such/dir'], 'image folder /no/such/dir does not exist'),
    ([TINY_CONFIG, '--img-dir', os.path.join(REPO, 'docs'), '--targets', 'backbone.9'],
     'valid targets:'),
])
def test_cli_errors_are_one_sentence(args, fragment):
    proc = run_cli(*args, '--num-workers', '0')
    assert proc.returncode == 2
    assert fragment in proc.stderr and 'Traceback' not in proc.stderr


def test_cli_first_batch_is_the_size_check(images, tmp_path, monkeypatch):
    """The CLI runs no separate blank forward before its first batch (start-up cost).
    That the first batch still refuses a size the model cannot take, naming the
    sizes that work, is the row 'input size the model cannot take' of
    ``test_bad_inputs.py``.

    Mutation guarded: ``check_model(..., probe_forward=True)`` in ``cli.run`` (the
    probe then runs and this patched one fails the run)."""
    from mmseg_erf import segmentor
    from mmseg_erf.cli import main

    def no_probe(*args, **kwargs):
        raise AssertionError('a blank input-size forward ran before the first batch')

    monkeypatch.setattr(segmentor, 'check_input_size', no_probe)
    out = str(tmp_path / 'run')
    assert main([TINY_CONFIG, '--img-dir', images, '--num-images', '2', '--input-size', '64',
                 '--num-workers', '0', '--out-dir', out]) == 0
    assert os.path.isfile(os.path.join(out, 'metrics.json'))
