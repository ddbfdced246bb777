import numpy as np
import pytest

from mmseg_erf.engine import area_ratio, erf_metrics, replknet_normalize, vmamba_normalize
from mmseg_erf.engine.metrics import area_ratios, radial_mass


def replknet_get_rectangle(data, thresh):
    """RepLKNet's erf/analyze_erf.py loop, written out plainly as the reference."""
    h, w = data.shape
    total = np.sum(data)
    for i in range(1, h // 2):
        selected = data[h // 2 - i:h // 2 + 1 + i, w // 2 - i:w // 2 + 1 + i]
        if np.sum(selected) / total > thresh:
            return i * 2 + 1, (i * 2 + 1) / h * (i * 2 + 1) / w
    return None, None


# ERF maps are square (S x S); on non-square maps RepLKNet's slices wrap around.
@pytest.mark.parametrize('shape', [(32, 32), (33, 33), (64, 64)])
def test_area_ratio_matches_replknet_loop(shape):
    rng = np.random.default_rng(1)
    yy, xx = np.meshgrid(*(np.arange(s) - s // 2 for s in shape), indexing='ij')
    raw = np.exp(-(yy**2 + xx**2) / 60.0) * 50 + rng.random(shape)
    data = replknet_normalize(raw)
    for t in (0.2, 0.3, 0.5, 0.99):
        assert area_ratio(data, t) == replknet_get_rectangle(data, t)


def test_normalizations():
    raw = np.array([[0.0, 9.0], [99.0, 999.0]])
    np.testing.assert_allclose(replknet_normalize(raw), [[0, 1 / 3], [2 / 3, 1]])
    np.testing.assert_allclose(vmamba_normalize(raw), (raw**0.2) / 999.0**0.2)


def test_point_mass_metrics():
    raw = np.zeros((21, 21))
    raw[10, 10] = 5.0
    metrics = erf_metrics(raw)
    assert metrics['area_side'] == {'0.2': 3, '0.3': 3, '0.5': 3, '0.99': 3}
    assert metrics['area_ratio']['0.5'] == pytest.approx(9 / 441)
    assert metrics['center_of_mass'] == [0.0, 0.0]
    assert metrics['effective_radius'] == 0.0
    assert all(v == 1.0 for v in metrics['radial_mass'].values())


def test_off_centre_mass_and_radius():
    raw = np.zeros((21, 21))
    raw[10, 14] = raw[10, 6] = 9.0   # two equal points 4 px left and right
    metrics = erf_metrics(raw)
    assert metrics['center_of_mass'] == [0.0, 0.0]
    assert metrics['effective_radius'] == pytest.approx(4.0)
    raw[10, 6] = 0.0
    assert erf_metrics(raw)['center_of_mass'] == [0.0, 4.0]
    # half-side 10.5: radius 1.3125 holds nothing, 2.625 nothing, 5.25 everything
    assert erf_metrics(raw)['radial_mass'] == {'1.3125': 0.0, '2.625': 0.0, '5.25': 1.0,
                                               '10.5': 1.0}


def test_empty_map_has_no_area():
    metrics = erf_metrics(np.zeros((8, 8)))
    assert metrics['area_ratio']['0.2'] is None and metrics['effective_radius'] is None


@pytest.mark.parametrize('shape', [(9, 9), (10, 10)])
def test_exactly_a_thresholds_share_is_not_enough(shape):
    """``area@t`` needs MORE than the share t inside the square (RepLKNet's ``>``).

    Two equal points, one at the centre and one two pixels right of it: the 3x3
    square holds exactly half of the total (1.0 / 2.0, exact in floats), so
    ``area@0.5`` is the 5x5 square; ``area@0.3`` is still the 3x3 one. Guards the
    mutation ``>=`` for ``>`` in :func:`area_ratio` (it would give 3 at 0.5).
    """
    h, w = shape
    raw = np.zeros(shape)
    raw[h // 2, w // 2] = raw[h // 2, w // 2 + 2] = 7.0
    data = replknet_normalize(raw)
    assert data.sum() == 2.0
    assert area_ratio(data, 0.5) == (5, 25 / (h * w))
    assert area_ratio(data, 0.3) == (3, 9 / (h * w))
    assert erf_metrics(raw)['area_side'] == {'0.2': 3, '0.3': 3, '0.5': 5, '0.99': 5}
    assert area_ratio(data, 0.5) == replknet_get_rectangle(data, 0.5)


def test_area_ratios_at_once_equal_one_threshold_at_a_time():
    rng = np.random.default_rng(3)
    data = replknet_normalize(rng.random((40, 40)) ** 6 * 100)
    thresholds = (0.0, 0.05, 0.2, 0.5, 0.99, 1.0)
    assert area_ratios(data, thresholds) == [replknet_get_rectangle(data, t)
                                             for t in thresholds]
    assert area_ratios(np.zeros((4, 4)), (0.2, 0.5)) == [(None, None)] * 2


def test_radial_mass_follows_each_maps_own_shape():
    """The same radius on maps of two shapes (the masks are cached per shape and
    radius): each matches the Euclidean distance from its own centre."""
    rng = np.random.default_rng(4)
    for shape in ((21, 21), (30, 17), (21, 21), (17, 30)):
        data = rng.random(shape)
        yy, xx = np.meshgrid(np.arange(shape[0]) - shape[0] // 2,
                             np.arange(shape[1]) - shape[1] // 2, indexing='ij')
        inside = np.hypot(yy, xx) <= 6.5
        assert radial_mass(data, [6.5]) == {'6.5': float(data[inside].sum() / data.sum())}
