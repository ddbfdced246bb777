"""Two CPU processes (gloo) give the images and the maps of one."""
import json
import os
import socket
import subprocess
import sys

import numpy as np

from conftest import REPO, TINY_CONFIG, make_voc_tree


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_one_and_two(tmp_path, num_images, targets, two_process_args=()):
    """tools/erf_seg.py on one process and tools/dist_erf.sh on two (gloo), same
    images and options; returns both metrics.json contents."""
    images = os.path.join(make_voc_tree(tmp_path / 'voc', splits=(('val', num_images), ),
                                        labels=False), 'images', 'val')
    common = ['--img-dir', images, '--targets', *targets, '--num-images', '50',
              '--input-size', '48', '--num-workers', '0', '--device', 'cpu']
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHON=sys.executable,
               PORT=str(free_port()))
    commands = {
        'one': [sys.executable, os.path.join(REPO, 'tools', 'erf_seg.py'), TINY_CONFIG],
        'two': ['bash', os.path.join(REPO, 'tools', 'dist_erf.sh'), TINY_CONFIG, '', '2',
                *two_process_args]}
    for name, command in commands.items():
        run = subprocess.run([*command, '--out-dir', str(tmp_path / name), *common],
                             capture_output=True, text=True, timeout=600, env=env)
        assert run.returncode == 0, f'{name}: {run.stderr[-3000:]}'
    return [json.loads((tmp_path / name / 'metrics.json').read_text()) for name in commands]


def test_two_processes_equal_one(tmp_path):
    # 5 images over 2 ranks: the sampler pads rank 1 with a repeat of image 0
    targets = ('backbone.1', 'decode_head')
    one, two = run_one_and_two(tmp_path, 5, targets, ('--batch-size', '2'))
    assert one['num_images'] == two['num_images'] == 5
    assert two['meta']['world_size'] == 2
    for target in targets:
        expected = np.load(tmp_path / 'one' / f'erf_{target}.npy')
        # float32 gradients: batch 2 vs 1 changes summation order (~1e-7 of the peak)
        np.testing.assert_allclose(np.load(tmp_path / 'two' / f'erf_{target}.npy'), expected,
                                   rtol=1e-5, atol=1e-6 * expected.max())


def test_more_processes_than_images(tmp_path):
    """Rank 1 gets only a padding repeat: it joins the sums with zeros instead of
    failing or leaving rank 0 waiting in the collective."""
    _, two = run_one_and_two(tmp_path, 1, ('backbone.1', ))
    assert two['num_images'] == 1 and two['meta']['world_size'] == 2
    np.testing.assert_allclose(np.load(tmp_path / 'two' / 'erf_backbone.1.npy'),
                               np.load(tmp_path / 'one' / 'erf_backbone.1.npy'), rtol=1e-6)


def test_hook_in_a_runner_on_two_processes(tmp_path):
    """ERFHook in a Runner's test loop: 2 processes (gloo, torchrun) give the images and
    the maps of 1. (mmseg's tools/test.py with --launcher pytorch cannot run on a
    CPU-only torch: mmengine 0.10's launcher calls torch.cuda.set_device
    unconditionally; so the script joins the process group itself, and every sampler,
    the evaluator and the hook see the ranks.)"""
    import torch

    from mmseg_erf.segmentor import build_segmentor
    data = make_voc_tree(tmp_path / 'voc')  # 5 val images: rank 1 gets a padding repeat
    config = tmp_path / 'user_config.py'
    config.write_text(
        f"_base_ = [{TINY_CONFIG!r}]\n"
        f"data_root = {data!r}\n"
        "train_dataloader = dict(dataset=dict(data_root=data_root))\n"
        "val_dataloader = dict(dataset=dict(data_root=data_root))\n"
        "test_dataloader = val_dataloader\n"
        "custom_hooks = [dict(type='ERFHook', targets=['backbone.2', 'decode_head'],\n"
        "                     num_images=50, input_size=48)]\n")
    checkpoint = tmp_path / 'weights.pth'
    torch.save(dict(state_dict=build_segmentor(str(config), seed=3)[0].state_dict(), meta={}),
               checkpoint)
    script = tmp_path / 'run_test.py'
    script.write_text(
        "import sys\n"
        "import torch.distributed as dist\n"
        "from mmengine.config import Config\n"
        "from mmengine.runner import Runner\n"
        "import mmseg_erf  # noqa: F401\n"
        "dist.init_process_group('gloo')\n"
        "cfg = Config.fromfile(sys.argv[1])\n"
        "cfg.work_dir, cfg.load_from, cfg.launcher = sys.argv[2], sys.argv[3], 'none'\n"
        "Runner.from_cfg(cfg).test()\n"
        "dist.destroy_process_group()\n")
    env = dict(os.environ, OMP_NUM_THREADS='1')
    outs = {}
    for procs in (1, 2):
        work = tmp_path / f'work{procs}'
        run = subprocess.run(
            [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={procs}',
             f'--master_port={free_port()}', str(script), str(config), str(work),
             str(checkpoint)], capture_output=True, text=True, timeout=600, env=env)
        assert run.returncode == 0, run.stderr[-3000:]
        outs[procs] = work / 'erf' / 'test'
        info = json.loads((outs[procs] / 'metrics.json').read_text())
        assert (info['num_images'], info['meta']['world_size']) == (5, procs)
    for target in ('backbone.2', 'decode_head'):
        expected = np.load(outs[1] / f'erf_{target}.npy')
        np.testing.assert_allclose(np.load(outs[2] / f'erf_{target}.npy'), expected,
                                   rtol=1e-5, atol=1e-6 * expected.max())
