import json

import numpy as np
import pytest

from mmseg_erf.engine import ERFAccumulator, ERFResult


def test_nonfinite_images_are_skipped_for_every_target():
    """Counts and means over two batches with non-finite maps.

    Image 1 of the first batch is infinite for ``y`` only and image 0 of the second
    is NaN for ``x`` only: both are skipped for both targets, so each mean is over
    the same 3 images. Guards the mutations: an image skipped per target (``x``'s
    mean would take in image 1), ``skipped`` not counted, or ``count`` counting
    the skipped images.
    """
    acc = ERFAccumulator(['x', 'y'], (2, 2))
    first = {'x': np.stack([np.full((2, 2), v) for v in (1.0, 10.0, 2.0)]),
             'y': np.stack([np.full((2, 2), v) for v in (4.0, np.inf, 5.0)])}
    assert acc.add(first).tolist() == [True, False, True]
    second = {'x': np.stack([np.full((2, 2), np.nan), np.full((2, 2), 6.0)]),
              'y': np.stack([np.full((2, 2), 100.0), np.full((2, 2), 9.0)])}
    assert acc.add(second).tolist() == [False, True]
    assert (acc.count, acc.skipped) == (3, 2)
    np.testing.assert_array_equal(acc.mean('x'), np.full((2, 2), 3.0))   # (1 + 2 + 6) / 3
    np.testing.assert_array_equal(acc.mean('y'), np.full((2, 2), 6.0))   # (4 + 5 + 9) / 3
    with pytest.raises(ValueError, match='same input size'):
        acc.add({'x': np.ones((1, 5, 5)), 'y': np.ones((1, 5, 5))})
    with pytest.raises(KeyError, match="'y'"):
        acc.add({'x': np.ones((1, 2, 2))})


def test_save_load_roundtrip(tmp_path):
    a = ERFAccumulator(['backbone.3'], (3, 3))
    a.add({'backbone.3': np.random.rand(2, 3, 3)})
    a.save(str(tmp_path / 'state.npz'), extra={'next_position': 2})
    b, extra = ERFAccumulator.load(str(tmp_path / 'state.npz'))
    assert b.names == a.names and (b.count, b.skipped) == (2, 0)
    np.testing.assert_array_equal(b.sums['backbone.3'], a.sums['backbone.3'])
    assert int(extra['next_position']) == 2
    assert [p.name for p in tmp_path.iterdir()] == ['state.npz']


def test_result_write_read(tmp_path):
    yy, xx = np.mgrid[-16:16, -16:16]
    erf = np.exp(-(yy**2 + xx**2) / 20.0)
    result = ERFResult(maps={'backbone.3': erf, 'decode_head': erf * 2}, num_images=7,
                       skipped=1, input_size=(32, 32), model_name='toy')
    result.write(str(tmp_path))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ['erf_backbone.3.npy', 'erf_backbone.3.png', 'erf_decode_head.npy',
                     'erf_decode_head.png', 'metrics.json']
    info = json.loads((tmp_path / 'metrics.json').read_text())
    assert info['num_images'] == 7 and info['skipped'] == 1 and info['input_size'] == [32, 32]
    assert set(info['targets']) == {'backbone.3', 'decode_head'}
    back = ERFResult.read(str(tmp_path))
    np.testing.assert_array_equal(back.maps['backbone.3'], erf)
    assert back.metrics['decode_head'] == result.metrics['decode_head']
    assert back.heatmap('backbone.3').shape[2] == 3
