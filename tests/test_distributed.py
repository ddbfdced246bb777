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


def test_two_processes_equal_one(tmp_path):
    # 5 images over 2 ranks: the sampler pads rank 1 with a repeat of image 0
    images = os.path.join(make_voc_tree(tmp_path / 'voc', splits=(('val', 5), ),
                                        labels=False), 'images', 'val')
    common = ['--img-dir', images, '--targets', 'backbone.1', 'decode_head', '--num-images',
              '50', '--input-size', '48', '--num-workers', '0', '--device', 'cpu']
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHON=sys.executable,
               PORT=str(free_port()))
    single = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'erf_seg.py'),
                             TINY_CONFIG, '--out-dir', str(tmp_path / 'one'), *common],
                            capture_output=True, text=True, timeout=600, env=env)
    assert single.returncode == 0, single.stderr[-3000:]
    double = subprocess.run(['bash', os.path.join(REPO, 'tools', 'dist_erf.sh'), TINY_CONFIG,
                             '', '2', '--out-dir', str(tmp_path / 'two'), '--batch-size', '2',
                             *common], capture_output=True, text=True, timeout=600, env=env)
    assert double.returncode == 0, double.stderr[-3000:]
    one = json.loads((tmp_path / 'one' / 'metrics.json').read_text())
    two = json.loads((tmp_path / 'two' / 'metrics.json').read_text())
    assert one['num_images'] == two['num_images'] == 5
    assert two['meta']['world_size'] == 2
    for target in ('backbone.1', 'decode_head'):
        expected = np.load(tmp_path / 'one' / f'erf_{target}.npy')
        # float32 gradients: batch 2 vs 1 changes summation order (~1e-7 of the peak)
        np.testing.assert_allclose(np.load(tmp_path / 'two' / f'erf_{target}.npy'), expected,
                                   rtol=1e-5, atol=1e-6 * expected.max())
