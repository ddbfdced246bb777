"""Interrupted runs resume to the same maps; impossible input sizes are refused up front."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from torch import nn

from mmseg_erf.cli import main
from mmseg_erf.engine import ERFSession, FeatureTaps
from mmseg_erf.errors import ERFUsageError
from mmseg_erf.segmentor import check_input_size

from conftest import REPO, TINY_CONFIG, interrupt_feed_after, make_voc_tree


def test_interrupt_then_resume_equals_uninterrupted(tmp_path, monkeypatch):
    images = os.path.join(make_voc_tree(tmp_path / 'voc', splits=(('val', 6), ),
                                        labels=False), 'images', 'val')
    args = [TINY_CONFIG, '--img-dir', images, '--targets', 'backbone.2', 'decode_head',
            '--input-size', '48', '--num-workers', '0', '--save-every', '2']
    assert main(args + ['--out-dir', str(tmp_path / 'whole')]) == 0

    restore = interrupt_feed_after(monkeypatch, 3)
    out = tmp_path / 'split'
    assert main(args + ['--out-dir', str(out)]) == 130
    partial = json.loads((out / 'metrics.json').read_text())
    assert partial['num_images'] == 3 and partial['meta']['partial'] is True
    assert (out / '.erf_state' / 'rank0.npz').is_file()

    restore()
    # a different run must not continue this one
    assert main(args + ['--out-dir', str(out), '--resume', '--input-size', '64']) == 2
    assert main(args + ['--out-dir', str(out), '--resume']) == 0
    done = json.loads((out / 'metrics.json').read_text())
    assert done['num_images'] == 6 and 'partial' not in done['meta']
    for target in ('backbone.2', 'decode_head'):
        np.testing.assert_allclose(np.load(out / f'erf_{target}.npy'),
                                   np.load(tmp_path / 'whole' / f'erf_{target}.npy'),
                                   rtol=1e-6)
    assert not (out / '.erf_state').exists()


def test_interrupt_after_a_batch_is_summed_but_not_recorded(tmp_path, monkeypatch):
    """Ctrl-C can land after a batch's maps are added to the sums and before the run
    records that batch as consumed. The saved state must then hold the sums of the
    samples it says were consumed, else ``--resume`` adds that batch twice. Guards
    the mutation: saving the live sums with the last recorded count (7 images of 6).
    """
    images = os.path.join(make_voc_tree(tmp_path / 'voc', splits=(('val', 6), ),
                                        labels=False), 'images', 'val')
    args = [TINY_CONFIG, '--img-dir', images, '--targets', 'backbone.1', '--input-size',
            '32', '--num-workers', '0', '--save-every', '0']
    assert main(args + ['--out-dir', str(tmp_path / 'whole')]) == 0
    real_process = ERFSession.process
    calls = []

    def summed_then_interrupted(self, *a, **k):
        used = real_process(self, *a, **k)
        calls.append(used)
        if len(calls) == 3:
            raise KeyboardInterrupt   # the sums hold image 2, nothing records it
        return used

    monkeypatch.setattr(ERFSession, 'process', summed_then_interrupted)
    out = tmp_path / 'split'
    assert main(args + ['--out-dir', str(out)]) == 130
    assert json.loads((out / 'metrics.json').read_text())['num_images'] == 2
    monkeypatch.setattr(ERFSession, 'process', real_process)
    assert main(args + ['--out-dir', str(out), '--resume']) == 0
    assert json.loads((out / 'metrics.json').read_text())['num_images'] == 6
    np.testing.assert_array_equal(np.load(out / 'erf_backbone.1.npy'),
                                  np.load(tmp_path / 'whole' / 'erf_backbone.1.npy'))


def test_sigint_to_a_running_cli_with_workers_then_resume(tmp_path):
    """A real Ctrl-C: SIGINT to the process group of a running ``tools/erf_seg.py``
    with its default 2 dataloader workers, once it has saved the sums of one image;
    exit status 130, partial maps, then ``--resume`` ends with the maps of an
    uninterrupted run. Guards the mutations: the CLI not catching the interrupt
    (no saved state, status 1), or a resume that starts over or double-counts."""
    # 32 images: the run must outlast the moment the first save is seen, also when fast
    images = os.path.join(make_voc_tree(tmp_path / 'voc', splits=(('val', 32), ),
                                        labels=False, size=(40, 40)), 'images', 'val')
    args = [TINY_CONFIG, '--img-dir', images, '--targets', 'backbone.2', 'decode_head',
            '--input-size', '64', '--num-images', '32', '--save-every', '1']
    assert main(args + ['--out-dir', str(tmp_path / 'whole'), '--num-workers', '0']) == 0
    out = tmp_path / 'split'
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, 'tools', 'erf_seg.py'),
                             *args, '--out-dir', str(out)], cwd=REPO,
                            start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    state = out / '.erf_state' / 'rank0.npz'
    deadline = time.monotonic() + 600
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGINT)   # what a terminal's Ctrl-C sends
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, f'not interrupted in time:\n{stdout}{stderr}'
    assert 'continue with --resume' in stderr and 'Traceback' not in stderr, stderr
    partial = json.loads((out / 'metrics.json').read_text())
    assert partial['meta']['partial'] is True and 1 <= partial['num_images'] < 32
    assert main(args + ['--out-dir', str(out), '--resume']) == 0
    done = json.loads((out / 'metrics.json').read_text())
    assert done['num_images'] == 32 and 'partial' not in done['meta']
    for target in ('backbone.2', 'decode_head'):
        np.testing.assert_array_equal(np.load(out / f'erf_{target}.npy'),
                                      np.load(tmp_path / 'whole' / f'erf_{target}.npy'))
    assert not (out / '.erf_state').exists()


class WindowBackbone(nn.Module):
    """Accepts only inputs whose side is a multiple of 64 (like a fixed window grid)."""
    out_indices = (0, )

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        if x.shape[-1] % 64:
            raise RuntimeError(f'input side {x.shape[-1]} is not a multiple of the window')
        return (self.conv(x), )


class WindowSegmentor(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = WindowBackbone()
        self.decode_head = nn.Conv2d(4, 2, 1)


def test_input_size_rejected_with_nearest_sizes():
    taps = FeatureTaps(WindowSegmentor().eval(), ['backbone.0'])
    check_input_size(taps, 128)
    with pytest.raises(ERFUsageError, match='use --input-size 128 or 192'):
        check_input_size(taps, 150)
