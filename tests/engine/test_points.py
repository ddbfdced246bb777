import numpy as np
import pytest

from mmseg_erf.engine.points import (PointSpec, grid_anchors, near_other_class,
                                     sample_points)


def brute_near(label, radius, ignore):
    """Reference: some valid other-class pixel within Euclidean radius."""
    h, w = label.shape
    out = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            if label[y, x] == ignore:
                continue
            for v in range(h):
                for u in range(w):
                    if ((v - y)**2 + (u - x)**2 <= radius**2 and label[v, u] != ignore
                            and label[v, u] != label[y, x]):
                        out[y, x] = True
    return out


def test_near_other_class_matches_brute_force_and_ignores_ignore_pixels():
    rng = np.random.default_rng(3)
    label = rng.integers(0, 3, (12, 13))
    label[label == 2] = 255
    for radius in (1, 2, 3):
        np.testing.assert_array_equal(near_other_class(label, radius, 255),
                                      brute_near(label, radius, 255))
    # one class and ignore pixels only: nothing is a boundary
    only = np.where(rng.random((9, 9)) < 0.3, 255, 1)
    assert not near_other_class(only, 3, 255).any()


def test_per_class_draws_are_seeded_per_image_capped_and_never_ignore():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 4, (30, 30))
    label[rng.random((30, 30)) < 0.5] = 255
    label[0, 0] = 7                          # a class with a single pixel
    spec = PointSpec('per-class', cap=5, seed=11, class_names=('a', 'b', 'c', 'd'))
    first = sample_points(spec, label.shape, label, position=4)
    again = sample_points(spec, label.shape, label, position=4)
    other = sample_points(spec, label.shape, label, position=5)
    np.testing.assert_array_equal(first.ys, again.ys)
    np.testing.assert_array_equal(first.xs, again.xs)
    assert not (np.array_equal(first.ys, other.ys) and np.array_equal(first.xs, other.xs))
    assert (label[first.ys, first.xs] != 255).all()
    np.testing.assert_array_equal(label[first.ys, first.xs], first.classes)
    counts = {c: int((first.classes == c).sum()) for c in (0, 1, 2, 3, 7)}
    assert counts == {0: 5, 1: 5, 2: 5, 3: 5, 7: 1}
    assert first.groups[-1] == ('class_7', ) and first.groups[0] == ('a', )
    assert len({(y, x) for y, x in zip(first.ys, first.xs)}) == len(first)  # no repeats


def test_boundary_and_interior_points_lie_where_they_say():
    label = np.zeros((40, 40), int)
    label[:, 20:] = 1
    spec = PointSpec('boundary', cap=50, boundary_px=4, seed=0)
    pts = sample_points(spec, label.shape, label)
    for y, x, groups in zip(pts.ys, pts.xs, pts.groups):
        distance = abs(x - 19.5) + 0.5   # to the nearest pixel of the other class
        if 'boundary' in groups:
            assert distance <= 4 and groups[0].endswith('/boundary')
        else:
            assert distance > 4 and groups == (f'class_{label[y, x]}/interior', 'interior')
    assert sum('boundary' in g for g in pts.groups) == 100


def test_grid_and_centre_points():
    assert grid_anchors(16, 4) == [2, 6, 10, 14]
    assert grid_anchors(17, 1) == [8]
    pts = sample_points(PointSpec('grid', grid=2), (10, 20))
    assert list(zip(pts.ys, pts.xs)) == [(2, 5), (2, 15), (7, 5), (7, 15)]
    assert pts.groups == (('grid_0_0', ), ('grid_0_1', ), ('grid_1_0', ), ('grid_1_1', ))
    centre = sample_points(PointSpec(), (9, 12))
    assert (int(centre.ys[0]), int(centre.xs[0])) == (4, 6)


def test_spec_checks_and_cost():
    with pytest.raises(ValueError, match='unknown point kind'):
        PointSpec('edges')
    with pytest.raises(ValueError, match='odd'):
        PointSpec(window=10)
    assert PointSpec('grid', grid=3).backwards_per_image() == (9, True)
    assert PointSpec('per-class', cap=4).backwards_per_image(20) == (80, False)
    assert PointSpec('boundary', cap=2).backwards_per_image(5) == (20, False)
