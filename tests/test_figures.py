"""Figures a reviewer accepts: colour bars, coverage rule, empty groups, centred squares,
digits, labels inside the canvas, titles, colour maps, vector output, class names."""
import os
import runpy

import numpy as np
import pytest
from matplotlib.patches import Rectangle
from PIL import Image

from mmseg_erf.compare import main
from mmseg_erf.compare.plots import (SQUARE_COLOURS, Style, evolution_figure, grid_figure,
                                     grid_size_inches, overlay_figure, square_centre)
from mmseg_erf.compare.points import points_figure
from mmseg_erf.compare.runs import load_runs
from mmseg_erf.engine import ERFResult
from mmseg_erf.engine.plotting import heatmap_figure, metrics_line, percent
from mmseg_erf.engine.point_plots import (COVERAGE_RULE, MIN_COVERAGE, group_grid_figure,
                                          position_grid_figure)
from mmseg_erf.engine.points import PointSpec

from conftest import REPO
from test_compare import gaussian, write_run


def point_result(groups, size=16, kind='per-class', grid=3):
    """A point run: ``groups``: name -> (canvas, coverage, count), canvases 2S-1."""
    return ERFResult(maps={'backbone.3': {g: c for g, (c, _, _) in groups.items()}},
                     coverage={g: v for g, (_, v, _) in groups.items()},
                     counts={g: n for g, (_, _, n) in groups.items()},
                     zero_maps={'backbone.3': {g: 0 for g in groups}}, num_images=4,
                     skipped=0, skipped_points=0, input_size=(size, size),
                     points=PointSpec(kind, grid=grid), model_name='toy')


def full_group(size=16, width=3.0, count=4):
    canvas = gaussian(2 * size - 1, width)
    return canvas, np.full(canvas.shape, count, dtype=np.int64), count


def images_of(fig):
    return [a for ax in fig.axes for a in ax.get_images()]


def texts_of(ax):
    return [t.get_text() for t in ax.texts]


def inside(fig, bbox, tol=1.0):
    canvas = fig.bbox
    return (bbox.x0 >= canvas.x0 - tol and bbox.y0 >= canvas.y0 - tol
            and bbox.x1 <= canvas.x1 + tol and bbox.y1 <= canvas.y1 + tol)


def test_percent_has_enough_digits():
    assert percent(7.72e-05) == '0.00772 %'  # the hook's area@0.5 7.7e-05 read as 0.000
    assert percent(0.18) == '18.0 %' and percent(1.0) == '100 %' and percent(None) == '-'
    assert percent(0.00016954) == '0.0170 %' and percent(1.2e-7) == '0.000012 %'
    line = metrics_line({'area_ratio': {'0.5': 0.000498, '0.99': 0.954},
                         'effective_radius': 85.27})
    assert line == 'area@0.5 0.0498 %  @0.99 95.4 %\neff. radius 85.3 px'


def test_run_heatmap_has_colour_bar_and_metrics():
    fig = heatmap_figure(gaussian(33, 4), 'toy backbone.3', cmap='cividis')
    assert len(fig.axes) == 2  # the map and its colour bar
    assert fig.axes[1].get_ylabel() == 'log10(x+1) / max'
    assert images_of(fig)[0].get_cmap().name == 'cividis'
    assert '%' in fig.axes[0].get_xlabel() and 'px' in fig.axes[0].get_xlabel()


def test_masked_offsets_are_not_drawn():
    canvas, coverage, count = full_group()
    coverage = coverage.copy()
    coverage[:5, :5] = 1   # a corner seen by 1 of 4 maps: below the rule
    coverage[:, -3:] = 0   # columns no map saw: cropped away
    canvas = canvas.copy()
    canvas[:5, :5] = 1e6   # and bright, as edge offsets of few maps are
    fig = group_grid_figure(point_result({'red': (canvas, coverage, count)}), 'backbone.3')
    data = images_of(fig)[0].get_array()
    assert MIN_COVERAGE == 0.5 and COVERAGE_RULE in fig._suptitle.get_text()
    assert data.shape == (canvas.shape[0], canvas.shape[1] - 3)
    assert data.mask[:5, :5].all() and data.mask.sum() == 25
    # normalised over the shown offsets only: the masked bright corner sets no maximum
    assert data.max() == pytest.approx(1.0)
    assert len(fig.axes) == 2  # one panel and the colour bar


def test_empty_and_zero_groups_are_labelled():
    size = 16
    canvas, coverage, _ = full_group(size)
    groups = {'red': full_group(size),
              'blue': (np.full(canvas.shape, np.nan), np.zeros(canvas.shape, np.int64), 0),
              'grey': (np.zeros(canvas.shape), coverage, 4)}
    fig = group_grid_figure(point_result(groups), 'backbone.3')
    panels = {ax.get_title().split('\n')[0]: ax for ax in fig.axes if ax.get_title()}
    assert 'no points' in texts_of(panels['blue']) and not panels['blue'].get_images()
    assert any('zero response' in t for t in texts_of(panels['grey']))
    assert not panels['grey'].get_images() and panels['red'].get_images()


def test_compare_points_missing_group_says_no_points(tmp_path):
    a = point_result({'red': full_group(), 'blue': full_group(width=5)})
    b = point_result({'red': full_group(width=4)})
    fig = points_figure([a, b], ['before', 'after'], 'backbone.3', ['red', 'blue'],
                        style=Style(cmap='viridis'))
    blue_after = fig.axes[3]
    assert blue_after.get_ylabel() == '' and 'no points' in texts_of(blue_after)
    assert fig.axes[0].get_title().startswith('before\n')  # the runs title the columns
    assert fig.axes[2].get_ylabel() == 'blue'              # the groups title the rows
    assert len(fig.axes) == 5 and images_of(fig)[0].get_cmap().name == 'viridis'
    # --titles belongs to targets' columns; point runs' columns are --labels
    a.write(str(tmp_path / 'a'))
    assert main([str(tmp_path / 'a'), '--titles', 'x', '--out', str(tmp_path / 'p.png')]) == 2


def test_position_grid_has_colour_bar():
    groups = {f'grid_{i}_{j}': full_group() for i in range(2) for j in range(2)}
    fig = position_grid_figure(point_result(groups, kind='grid', grid=2), 'backbone.3')
    assert len(fig.axes) == 5 and fig.axes[-1].get_ylabel().startswith('log10(x+1)')


@pytest.fixture
def two_runs(tmp_path):
    write_run(tmp_path / 'a', {'backbone.3': 2, 'decode_head': 5})
    write_run(tmp_path / 'b', {'backbone.3': 3, 'decode_head': 6})
    return load_runs([str(tmp_path / 'a'), str(tmp_path / 'b')], ['A', 'B'])


def test_titles_cmap_and_optional_lines(two_runs):
    targets = ['backbone.3', 'decode_head']
    fig = grid_figure(two_runs, targets, 'replknet', 'per-panel',
                      Style(cmap='cividis', titles=['Stage 4', 'Head']))
    assert [ax.get_title() for ax in fig.axes[:2]] == ['Stage 4', 'Head']
    assert {im.get_cmap().name for im in images_of(fig)} == {'cividis'}
    assert len(fig.axes) == 5 and fig._suptitle is not None  # 4 panels, 1 colour bar
    assert '%' in fig.axes[0].get_xlabel()
    bare = grid_figure(two_runs, targets, 'replknet', 'per-panel',
                       Style(title=False, metrics=False))
    assert bare._suptitle is None and all(ax.get_xlabel() == '' for ax in bare.axes[:4])
    assert bare.get_size_inches()[1] < fig.get_size_inches()[1]
    assert tuple(bare.get_size_inches()) == pytest.approx(
        grid_size_inches(2, 2, style=Style(title=False, metrics=False)))


def test_titles_refused_when_miscounted(tmp_path, capsys):
    write_run(tmp_path / 'a', {'backbone.3': 2, 'decode_head': 5})
    assert main([str(tmp_path / 'a'), '--titles', 'only one', '--out',
                 str(tmp_path / 'g.png')]) == 2
    assert '1 titles for 2 targets' in capsys.readouterr().err
    assert main(['--evolution', str(tmp_path), '--titles', 'x', '--out',
                 str(tmp_path / 'e.png')]) == 2
    assert 'takes no --titles' in capsys.readouterr().err


def squares_of(fig):
    return [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]


def centre_of(square):
    return (square.get_y() + square.get_height() / 2, square.get_x() + square.get_width() / 2)


def test_squares_sit_where_the_response_is(tmp_path):
    size = 48
    # a response half a stride off the image centre, as Swin's, over a faint uniform
    # floor on the other side that pulls the centre of mass away from it
    erf_map = gaussian(size, 2, dy=8, dx=-6, peak=50.0)
    erf_map[:size // 2, size // 2:] += 0.3
    result = ERFResult.classic({'backbone.3': erf_map}, num_images=2, input_size=(size, size))
    result.write(str(tmp_path / 'off'), images=False)
    runs = load_runs([str(tmp_path / 'off')], ['off'])
    fig = overlay_figure(runs, ['backbone.3'], np.zeros((size, size, 3), np.uint8),
                         'replknet', 'squares')
    metrics = result.metrics_of('backbone.3')
    fy, fx = metrics['shape']['gaussian']['center']
    squares = squares_of(fig)
    assert len(squares) == sum(metrics['area_side'][t] is not None for t in SQUARE_COLOURS) > 0
    for square in squares:
        assert centre_of(square) == pytest.approx((size // 2 + fy, size // 2 + fx))
    assert (fy, fx) == pytest.approx((8, -6), abs=0.5)           # on the response
    assert abs(metrics['center_of_mass'][0] - 8) > 1             # where the mean is not
    assert any('Gaussian-fit centre' in t.get_text() for t in fig.texts)  # the rule, stated
    # without a fit, the centre of mass; without either, the image centre
    assert square_centre({'center_of_mass': [2.0, -3.0], 'shape': {'gaussian': None}},
                         (32, 32)) == (18.0, 13.0)
    assert square_centre({'center_of_mass': [None, None]}, (32, 32)) == (16.0, 16.0)


def test_evolution_labels_inside_the_canvas(tmp_path):
    for n, width in ((0, 2), (10, 3), (20, 4)):
        write_run(tmp_path / 'erf' / f'iter_{n}', {'decode_head': width})
    runs = load_runs([str(tmp_path / 'erf' / f'iter_{n}') for n in (0, 10, 20)],
                     ['iter 0', 'iter 10', 'iter 20'])
    fig = evolution_figure(runs, [0, 10, 20], 'decode_head', 'replknet', 'per-panel')
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    plot = fig.axes[-1]
    assert plot.get_ylabel().startswith('area ratio')
    assert inside(fig, plot.yaxis.label.get_window_extent(renderer))
    for ax in fig.axes:
        assert inside(fig, ax.get_tightbbox(renderer)), ax
    ticks = [t.get_text() for t in plot.get_yticklabels() if t.get_text()]
    assert ticks and all(t.endswith('%') for t in ticks)


@pytest.mark.parametrize('ext, magic', [('pdf', b'%PDF'), ('svg', b'<?xml')])
def test_vector_output(tmp_path, ext, magic):
    write_run(tmp_path / 'a', {'backbone.3': 2})
    out = tmp_path / f'fig.{ext}'
    assert main([str(tmp_path / 'a'), '--cmap', 'cividis', '--out', str(out)]) == 0
    assert out.read_bytes()[:len(magic)] == magic


def test_help_documents_the_figure_options(capsys):
    with pytest.raises(SystemExit):
        main(['--help'])
    text = ' '.join(capsys.readouterr().out.split())
    for needle in ('--titles', '--no-title', '--no-metrics', '--cmap', '.pdf / .svg',
                   'cividis'):
        assert needle in text


def test_pseudo_labels_are_named_by_colour(tmp_path, monkeypatch, capsys):
    images = tmp_path / 'images'
    images.mkdir()
    colours = [(30, 150, 40), (120, 180, 230), (250, 250, 250), (10, 10, 10)]
    for i in range(2):
        pixels = np.zeros((32, 32, 3), np.uint8)
        for k, colour in enumerate(colours):
            pixels[8 * k:8 * (k + 1)] = colour
        Image.fromarray(pixels).save(images / f'im{i}.png')
    monkeypatch.setattr('sys.argv', ['demo_pseudo_labels.py', str(images),
                                     str(tmp_path / 'labels')])
    runpy.run_path(os.path.join(REPO, 'tools', 'demo_pseudo_labels.py'), run_name='__main__')
    names = (tmp_path / 'labels' / 'classes.txt').read_text().split()
    tool = runpy.run_path(os.path.join(REPO, 'tools', 'demo_pseudo_labels.py'))
    assert len(names) == 4 and all(n.split('-')[-1].isdigit() or n in tool['COLOUR_NAMES']
                                   for n in names), names
    assert tool['class_names'](colours) == ['green', 'sky-blue', 'white', 'black']
    assert tool['class_names']([(0, 0, 0), (5, 5, 5)]) == ['black', 'black-2']
