"""Interrupted runs resume to the same maps; impossible input sizes are refused up front."""
import json
import os

import numpy as np
import pytest
from torch import nn

import mmseg_erf.api
from mmseg_erf.cli import main
from mmseg_erf.engine import FeatureTaps
from mmseg_erf.errors import ERFUsageError
from mmseg_erf.segmentor import check_input_size

from conftest import TINY_CONFIG, make_voc_tree


def test_interrupt_then_resume_equals_uninterrupted(tmp_path, monkeypatch):
    images = os.path.join(make_voc_tree(tmp_path / 'voc', splits=(('val', 6), ),
                                        labels=False), 'images', 'val')
    args = [TINY_CONFIG, '--img-dir', images, '--targets', 'backbone.2', 'decode_head',
            '--input-size', '48', '--num-workers', '0', '--save-every', '2']
    assert main(args + ['--out-dir', str(tmp_path / 'whole')]) == 0

    real_feed = mmseg_erf.api.feed_batch
    calls = []

    def interrupted_feed(*a, **k):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(1)
        return real_feed(*a, **k)

    monkeypatch.setattr(mmseg_erf.api, 'feed_batch', interrupted_feed)
    out = tmp_path / 'split'
    assert main(args + ['--out-dir', str(out)]) == 130
    partial = json.loads((out / 'metrics.json').read_text())
    assert partial['num_images'] == 3 and partial['meta']['partial'] is True
    assert (out / '.erf_state' / 'rank0.npz').is_file()

    monkeypatch.setattr(mmseg_erf.api, 'feed_batch', real_feed)
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
