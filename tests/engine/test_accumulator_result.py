import json

import numpy as np
import pytest

from mmseg_erf.engine import ERFAccumulator, ERFResult


def test_add_merge_mean_and_nonfinite():
    a = ERFAccumulator(['x', 'y'], (4, 4))
    maps = {'x': np.ones((3, 4, 4)), 'y': np.ones((3, 4, 4))}
    maps['y'][1, 0, 0] = np.inf
    assert a.add(maps).tolist() == [True, False, True]
    b = ERFAccumulator(['x', 'y'], (4, 4))
    b.add({'x': np.full((1, 4, 4), 4.0), 'y': np.zeros((1, 4, 4))})
    a.merge(b)
    assert (a.count, a.skipped) == (3, 1)
    np.testing.assert_allclose(a.mean('x'), 2.0)
    with pytest.raises(ValueError, match='same input size'):
        a.add({'x': np.ones((1, 5, 5)), 'y': np.ones((1, 5, 5))})


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
