import json

import numpy as np
import pytest

from mmseg_erf.engine import ERFAccumulator, ERFResult, PointSpec

CENTRE = [('centre', )]


def classic(targets, shape):
    """The centre kind's accumulator: one group on the image frame around (H//2, W//2)."""
    return ERFAccumulator(targets, shape, anchor=(shape[0] // 2, shape[1] // 2))


def add_images(acc, maps):
    count = len(next(iter(maps.values())))
    return acc.add(maps, [acc.anchor] * count, CENTRE * count)


def test_nonfinite_images_are_skipped_for_every_target():
    """Counts and means over two batches with non-finite maps.

    Image 1 of the first batch is infinite for ``y`` only and image 0 of the second
    is NaN for ``x`` only: both are skipped for both targets, so each mean is over
    the same 3 images. Guards the mutations: an image skipped per target (``x``'s
    mean would take in image 1), ``skipped_points`` not counted, or the count
    counting the skipped images.
    """
    acc = classic(['x', 'y'], (2, 2))
    first = {'x': np.stack([np.full((2, 2), v) for v in (1.0, 10.0, 2.0)]),
             'y': np.stack([np.full((2, 2), v) for v in (4.0, np.inf, 5.0)])}
    assert add_images(acc, first).tolist() == [True, False, True]
    second = {'x': np.stack([np.full((2, 2), np.nan), np.full((2, 2), 6.0)]),
              'y': np.stack([np.full((2, 2), 100.0), np.full((2, 2), 9.0)])}
    assert add_images(acc, second).tolist() == [False, True]
    assert (acc.counts['centre'], acc.skipped_points) == (3, 2)
    np.testing.assert_array_equal(acc.mean('x', 'centre'), np.full((2, 2), 3.0))  # 9 / 3
    np.testing.assert_array_equal(acc.mean('y', 'centre'), np.full((2, 2), 6.0))  # 18 / 3
    assert acc.canvas_shape == (2, 2)  # the centre kind's canvas is the image frame
    with pytest.raises(ValueError, match='same input size'):
        add_images(acc, {'x': np.ones((1, 5, 5)), 'y': np.ones((1, 5, 5))})
    with pytest.raises(KeyError, match="'y'"):
        add_images(acc, {'x': np.ones((1, 2, 2))})


def test_a_batch_sums_as_one_addition_like_the_classic_average():
    """Points sharing an anchor and groups are summed first, then added once: the
    float64 sums are bit for bit ``sums += maps.sum(0)`` per batch, the classic ERF's
    order (a centre run's maps do not change with the one-pipeline accumulator)."""
    rng = np.random.default_rng(0)
    batches = [rng.random((3, 5, 6)) * 10.0**rng.integers(-8, 8, (3, 1, 1))
               for _ in range(4)]
    acc = classic(['t'], (5, 6))
    expected = np.zeros((5, 6))
    for batch in batches:
        add_images(acc, {'t': batch})
        expected += batch.sum(axis=0)
    np.testing.assert_array_equal(acc.sums['t']['centre'], expected)


def test_save_load_roundtrip(tmp_path):
    a = ERFAccumulator(['backbone.3', 'decode_head'], (3, 3), window=3)
    maps = np.random.rand(2, 3, 3)
    a.add({'backbone.3': maps, 'decode_head': maps * 0}, [(0, 0), (2, 1)],
          [('a', 'all'), ('b/boundary', 'all')])
    a.images, a.skipped, a.backwards = 2, 1, 1
    a.save(str(tmp_path / 'state.npz'), extra={'next_position': 2})
    b, extra = ERFAccumulator.load(str(tmp_path / 'state.npz'))
    assert b.targets == a.targets and b.groups == a.groups and b.counts == a.counts
    assert (b.images, b.skipped, b.skipped_points, b.backwards, b.points) == (2, 1, 0, 1, 2)
    assert b.zero_maps == a.zero_maps == {'backbone.3': {'a': 0, 'b/boundary': 0, 'all': 0},
                                          'decode_head': {'a': 1, 'b/boundary': 1, 'all': 2}}
    for group in a.groups:
        np.testing.assert_array_equal(b.sums['backbone.3'][group], a.sums['backbone.3'][group])
        np.testing.assert_array_equal(b.coverage[group], a.coverage[group])
    assert int(extra['next_position']) == 2
    assert [p.name for p in tmp_path.iterdir()] == ['state.npz']


def gaussian_result():
    yy, xx = np.mgrid[-16:16, -16:16]
    erf = np.exp(-(yy**2 + xx**2) / 20.0)
    acc = classic(['backbone.3', 'decode_head'], (32, 32))
    for _ in range(7):
        add_images(acc, {'backbone.3': erf[None], 'decode_head': erf[None] * 2})
    acc.images, acc.skipped = 7, 1
    return erf, ERFResult.from_accumulator(acc, PointSpec(), 'toy')


def test_result_write_read(tmp_path):
    erf, result = gaussian_result()
    result.write(str(tmp_path))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ['erf_backbone.3.npy', 'erf_backbone.3.png', 'erf_decode_head.npy',
                     'erf_decode_head.png', 'metrics.json']
    info = json.loads((tmp_path / 'metrics.json').read_text())
    assert info['num_images'] == 7 and info['skipped'] == 1 and info['input_size'] == [32, 32]
    assert set(info['targets']) == {'backbone.3', 'decode_head'}
    assert info['targets']['backbone.3']['area_ratio'] == \
        result.metrics['backbone.3']['centre']['area_ratio']
    back = ERFResult.read(str(tmp_path))
    np.testing.assert_allclose(back.map('backbone.3'), erf, rtol=1e-15)
    assert back.metrics['decode_head'] == result.metrics['decode_head']
    assert back.heatmap('backbone.3').shape[2] == 3


def test_a_classic_run_written_before_the_one_pipeline_is_read(tmp_path):
    """metrics.json as centre runs wrote it before (no points, no groups): read as the
    'centre' group with full coverage."""
    erf, result = gaussian_result()
    result.write(str(tmp_path))
    info = json.loads((tmp_path / 'metrics.json').read_text())
    for key in ('points', 'groups', 'skipped_points', 'canvas_size'):
        info.pop(key)
    info['meta'] = {'point': [0.5, 0.5], 'class_index': None}
    (tmp_path / 'metrics.json').write_text(json.dumps(info))
    back = ERFResult.read(str(tmp_path))
    assert back.is_classic and back.groups == ['centre'] and back.counts == {'centre': 7}
    np.testing.assert_allclose(back.map('decode_head'), erf * 2, rtol=1e-15)
    assert (back.coverage['centre'] == 7).all()


def test_classic_metrics_are_replknets_numbers():
    """The centre group's weights are all 1: its metrics are erf_metrics of the map."""
    from mmseg_erf.engine import erf_metrics
    erf, result = gaussian_result()
    ours = result.metrics['backbone.3']['centre']
    theirs = erf_metrics(result.map('backbone.3'))
    for key in theirs:
        assert ours[key] == theirs[key], key
