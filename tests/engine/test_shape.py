import math

import numpy as np
import pytest

from mmseg_erf.engine.shape import covariance_shape, fit_gaussian, shape_metrics


def rotated_gaussian(shape, centre, sigma_major, sigma_minor, angle_deg, amplitude=1.0):
    """A Gaussian whose major axis makes ``angle_deg`` with +x (towards +y)."""
    yy, xx = np.meshgrid(np.arange(shape[0], dtype=float), np.arange(shape[1], dtype=float),
                         indexing='ij')
    t = math.radians(angle_deg)
    dy, dx = yy - centre[0], xx - centre[1]
    u = dx * math.cos(t) + dy * math.sin(t)      # along the major axis
    v = -dx * math.sin(t) + dy * math.cos(t)
    return amplitude * np.exp(-0.5 * (u**2 / sigma_major**2 + v**2 / sigma_minor**2))


def test_gaussian_fit_recovers_a_rotated_anisotropic_gaussian():
    g = rotated_gaussian((61, 81), (32.0, 37.0), 8.0, 3.0, 30.0, amplitude=5.0)
    m = shape_metrics(g)
    fit = m['gaussian']
    assert fit['r2'] == pytest.approx(1.0, abs=1e-12)
    assert fit['amplitude'] == pytest.approx(5.0, rel=1e-9)
    assert fit['center'] == pytest.approx([32 - 30, 37 - 40], abs=1e-7)
    assert fit['sigma_major'] == pytest.approx(8.0, rel=1e-7)
    assert fit['sigma_minor'] == pytest.approx(3.0, rel=1e-7)
    assert fit['orientation_deg'] == pytest.approx(30.0, abs=1e-6)
    assert fit['anisotropy'] == pytest.approx(8 / 3, rel=1e-7)
    # sizes along the axes of a rotated Gaussian: var_x = a^2 cos^2 + b^2 sin^2
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    assert fit['sigma_x'] == pytest.approx(math.sqrt(64 * c * c + 9 * s * s), rel=1e-7)
    assert fit['sigma_y'] == pytest.approx(math.sqrt(64 * s * s + 9 * c * c), rel=1e-7)
    # second moments of the (well inside the map) Gaussian agree with the fit
    assert m['sigma_major'] == pytest.approx(8.0, rel=1e-4)
    assert m['orientation_deg'] == pytest.approx(30.0, abs=1e-3)


def test_second_moments_of_a_box_are_closed_form():
    box = np.zeros((40, 50))
    box[5:5 + 9, 10:10 + 21] = 3.0           # 9 rows, 21 columns
    m = shape_metrics(box)
    assert m['sigma_y'] == pytest.approx(math.sqrt((9**2 - 1) / 12), rel=1e-12)
    assert m['sigma_x'] == pytest.approx(math.sqrt((21**2 - 1) / 12), rel=1e-12)
    assert m['orientation_deg'] == 0.0       # wider than tall: major axis along x
    assert m['center'] == pytest.approx([9 - 20, 20 - 25])
    assert m['gaussian']['r2'] < 0.99        # a box is not a Gaussian


def test_vertical_line_points_at_ninety_degrees_and_line_has_no_anisotropy_value():
    line = np.zeros((21, 21))
    line[3:18, 10] = 1.0
    m = shape_metrics(line)
    assert m['orientation_deg'] == pytest.approx(90.0)
    assert m['sigma_x'] == 0.0 and m['anisotropy'] is None


def test_weights_remove_pixels_and_nan_counts_as_absent():
    g = rotated_gaussian((41, 41), (20.0, 20.0), 4.0, 4.0, 0.0)
    spoiled = g.copy()
    spoiled[:, 30:] = 7.0                    # junk the weights must hide
    weights = np.ones_like(g)
    weights[:, 30:] = 0
    a = shape_metrics(g[:, :30])
    b = shape_metrics(spoiled, weights)
    assert b['sigma_x'] == pytest.approx(a['sigma_x'], rel=1e-12)
    assert b['gaussian']['sigma_x'] == pytest.approx(4.0, rel=1e-7)
    nan = g.copy()
    nan[:, 30:] = np.nan
    assert shape_metrics(nan)['sigma_y'] == pytest.approx(a['sigma_y'], rel=1e-12)


def test_large_maps_are_fitted_on_block_means():
    g = rotated_gaussian((701, 701), (350.0, 350.0), 40.0, 20.0, -45.0)
    fit = shape_metrics(g)['gaussian']
    assert fit['binning'] == 2
    # block means of a Gaussian: the variance grows by (f^2 - 1) / 12 px^2 per axis
    assert fit['sigma_major'] == pytest.approx(math.sqrt(1600 + 3 / 12), rel=1e-3)
    assert fit['orientation_deg'] == pytest.approx(-45.0, abs=1e-3)
    assert fit['center'] == pytest.approx([0.0, 0.0], abs=1e-3)


def test_empty_map_has_no_shape():
    m = shape_metrics(np.zeros((5, 5)))
    assert m['sigma_y'] is None and m['gaussian'] is None
    assert fit_gaussian(np.zeros((5, 5))) is None
    assert covariance_shape(np.eye(2))['anisotropy'] == 1.0


def test_narrow_gaussian_on_a_wide_map_is_recovered():
    """Most of a 201 x 201 map lies where exp(-q/2) underflows (the fit floors it at
    exp(-300)); the fit must still be exact."""
    g = rotated_gaussian((201, 201), (90.0, 111.0), 2.5, 1.5, 60.0, amplitude=3.0)
    fit = fit_gaussian(g)
    assert fit['r2'] == pytest.approx(1.0, abs=1e-12)
    assert fit['center'] == pytest.approx((90.0, 111.0), abs=1e-7)
    assert fit['sigma_major'] == pytest.approx(2.5, rel=1e-7)
    assert fit['sigma_minor'] == pytest.approx(1.5, rel=1e-7)
    assert fit['orientation_deg'] == pytest.approx(60.0, abs=1e-6)


def test_huge_values_under_weight_zero_take_no_part():
    g = rotated_gaussian((41, 50), (20.0, 22.0), 5.0, 3.0, 20.0) * 1e-10
    weights = np.ones_like(g)
    weights[:, 40:] = 0
    spoiled = g.copy()
    spoiled[:, 40:] = 1e300                  # 1e310 once divided by the peak
    fit, reference = fit_gaussian(spoiled, weights), fit_gaussian(g[:, :40])
    for key in ('amplitude', 'sigma_major', 'sigma_minor', 'orientation_deg', 'r2'):
        assert fit[key] == pytest.approx(reference[key], rel=1e-9), key
    assert fit['center'] == pytest.approx(reference['center'], abs=1e-9)
