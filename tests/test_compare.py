"""tools/erf_compare.py on synthetic run directories: Gaussian maps of known widths, no model."""
import csv
import os
import runpy
import sys

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread
from PIL import Image

from mmseg_erf.compare import (ResampleWarning, compare, default_label, iteration_snapshots,
                               load_overlay_image, main, resample_map)
from mmseg_erf.compare.plots import LEVEL_COLOURS, SQUARE_COLOURS, display_maps, grid_size_inches
from mmseg_erf.engine import ERFResult, erf_metrics
from mmseg_erf.engine.plotting import percent
from mmseg_erf.engine.plotting import normalize

from conftest import REPO

DPI = 100


def gaussian(size, width, dy=0.0, dx=0.0, peak=50.0):
    yy, xx = np.mgrid[:size, :size] - size // 2
    return peak * np.exp(-((yy - dy)**2 + (xx - dx)**2) / (2 * width**2))


def write_run(path, widths, size=32, model='toy', **meta):
    """A run directory of Gaussian ERFs, ``widths``: target -> sigma in pixels."""
    result = ERFResult.classic({t: gaussian(size, w) for t, w in widths.items()}, num_images=4,
                       skipped=0, input_size=(size, size), model_name=model, meta=meta)
    result.write(str(path), images=False)  # the compare tool reads .npy and metrics.json only
    return result


def read_csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def number(cell):
    """A CSV cell back to what metrics.json holds: '' is None (no square held that share)."""
    return None if cell == '' else float(cell)


def png_size(path):
    height, width = imread(str(path)).shape[:2]
    return width, height


def colour_pixels(path, colour, tol=0.04):
    rgb = imread(str(path))[..., :3]
    return int((np.abs(rgb - np.array(to_rgb(colour))).max(-1) < tol).sum())


@pytest.fixture
def two_runs(tmp_path):
    a = write_run(tmp_path / 'narrow', {'backbone.3': 2, 'decode_head': 5})
    # another target order and one more target: the columns follow the first run
    b = write_run(tmp_path / 'wide', {'neck.0': 3, 'decode_head': 8, 'backbone.3': 4})
    return (str(tmp_path / 'narrow'), a), (str(tmp_path / 'wide'), b)


def test_grid_figure_and_tables(two_runs, tmp_path, capsys):
    (dir_a, a), (dir_b, b) = two_runs
    out = tmp_path / 'figs' / 'grid.png'
    assert main([dir_a, dir_b, '--out', str(out)]) == 0
    width, height = grid_size_inches(2, 2)
    assert png_size(out) == (round(width * DPI), round(height * DPI))
    rows = read_csv(tmp_path / 'figs' / 'grid.csv')
    assert [(r['run'], r['target']) for r in rows] == [
        ('narrow', 'backbone.3'), ('narrow', 'decode_head'),
        ('wide', 'backbone.3'), ('wide', 'decode_head')]
    markdown = (tmp_path / 'figs' / 'grid.md').read_text()
    printed = capsys.readouterr().out
    for row, (result, target) in zip(rows, [(a, 'backbone.3'), (a, 'decode_head'),
                                            (b, 'backbone.3'), (b, 'decode_head')]):
        m = result.metrics_of(target)
        assert row['input_size'] == '32x32' and row['num_images'] == '4'
        for t in ('0.2', '0.3', '0.5', '0.99'):
            assert number(row[f'area_{t}']) == m['area_ratio'][t]
            if m['area_ratio'][t] is not None:  # in percent, 3 significant digits
                assert f'| {percent(m["area_ratio"][t])} |' in markdown
        assert float(row['effective_radius']) == m['effective_radius']
        assert f'{m["effective_radius"]:.2f}' in markdown
    # 99 % of the widest map needs a square larger than RepLKNet's bound: '-', not 0
    assert rows[3]['area_0.99'] == '' and b.metrics_of('decode_head')['area_ratio']['0.99'] is None
    # the wider Gaussian has the larger ERF in every column
    assert float(rows[2]['area_0.5']) > float(rows[0]['area_0.5'])
    assert float(rows[3]['effective_radius']) > float(rows[1]['effective_radius'])
    assert markdown.strip() in printed


def test_grid_pixel_proportions(tmp_path):
    """Each run adds one row and each target one column of the same size, whatever the labels."""
    targets = {'backbone.0': 2, 'backbone.1': 3, 'a_very_long_module_path.with.parts': 4}
    runs = [str(tmp_path / f'run{i}') for i in range(3)]
    for run in runs:
        write_run(run, targets)
    sizes = {}
    for n_runs, n_targets in ((1, 1), (1, 3), (3, 1)):
        out = str(tmp_path / f'{n_runs}x{n_targets}.png')
        compare(runs[:n_runs], out, targets=list(targets)[:n_targets])
        sizes[n_runs, n_targets] = png_size(out)
    (w11, h11), (w13, h13), (w31, h31) = sizes[1, 1], sizes[1, 3], sizes[3, 1]
    assert h13 == h11 and w31 == w11
    column, row = (w13 - w11) / 2, (h31 - h11) / 2
    # panels are square: a column step is a panel plus a gap, a row step a panel plus text
    assert 0.8 < column / row < 1.2
    assert w11 > column and h11 > row  # margins for labels and the colour bar


def test_default_labels(tmp_path):
    result = write_run(tmp_path / 'upernet' / 'erf', {'backbone.3': 2}, model='upernet_r18')
    assert default_label(str(tmp_path / 'upernet' / 'erf'), result) == 'upernet_r18'
    assert default_label(str(tmp_path / 'x' / 'iter_10'), result) == 'upernet_r18 iter_10'
    assert default_label(str(tmp_path / 'swin_random'), result) == 'swin_random'
    anonymous = ERFResult.classic({'t': gaussian(8, 1)}, 1, 0, (8, 8))
    assert default_label(str(tmp_path / 'cfg' / 'erf'), anonymous) == 'cfg/erf'


def test_duplicate_default_labels_numbered(tmp_path):
    for name in ('a', 'b'):
        write_run(tmp_path / name / 'erf', {'backbone.3': 2}, model='same_config')
    rows, _ = compare([str(tmp_path / 'a' / 'erf'), str(tmp_path / 'b' / 'erf')],
                      str(tmp_path / 'dup.png'))
    assert [r['run'] for r in rows] == ['same_config #1', 'same_config #2']


def test_labels_given_and_miscounted(two_runs, tmp_path, capsys):
    (dir_a, _), (dir_b, _) = two_runs
    out = str(tmp_path / 'l.png')
    assert main([dir_a, dir_b, '--labels', 'random init', 'trained', '--out', out]) == 0
    assert [r['run'] for r in read_csv(tmp_path / 'l.csv')][::2] == ['random init', 'trained']
    capsys.readouterr()
    assert main([dir_a, dir_b, '--labels', 'only one', '--out', out]) == 2
    err = capsys.readouterr().err
    assert err.startswith('erf_compare.py: error: --labels has 1 label(s) for 2 run')


def test_mismatched_sizes_refused(tmp_path, capsys):
    write_run(tmp_path / 'small', {'backbone.3': 2}, size=32)
    write_run(tmp_path / 'large', {'backbone.3': 3}, size=48)
    out = tmp_path / 'mixed.png'
    assert main([str(tmp_path / 'small'), str(tmp_path / 'large'), '--out', str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'Traceback' not in err
    assert err.startswith('erf_compare.py: error: runs have different input sizes: ')
    for part in ('small', 'large', '32x32', '48x48', '--resample'):
        assert part in err
    assert not out.exists() and not (tmp_path / 'mixed.csv').exists()


def test_resample_path(tmp_path, capsys):
    write_run(tmp_path / 'small', {'backbone.3': 2}, size=32)
    large = write_run(tmp_path / 'large', {'backbone.3': 3}, size=48)
    out = tmp_path / 'resampled.png'
    assert main([str(tmp_path / 'small'), str(tmp_path / 'large'), '--resample',
                 '--out', str(out)]) == 0
    err = capsys.readouterr().err
    assert err.startswith('erf_compare.py: warning: resampling large to 32x32')
    rows = read_csv(tmp_path / 'resampled.csv')
    assert rows[1]['input_size'] == '32x32 (from 48x48)'
    # the table describes the maps drawn: metrics of the resampled map
    expected = erf_metrics(resample_map(large.map('backbone.3'), (32, 32)))
    assert float(rows[1]['area_0.5']) == expected['area_ratio']['0.5']
    assert float(rows[1]['effective_radius']) != large.metrics_of('backbone.3')['effective_radius']
    with pytest.warns(ResampleWarning, match='sum preserved'):
        compare([str(tmp_path / 'small'), str(tmp_path / 'large')], str(out), resample=True)


@pytest.mark.parametrize('src,dst', [(48, 32), (32, 48), (33, 64), (64, 17)])
def test_resample_map_keeps_mass_and_centre(src, dst):
    erf = gaussian(src, src / 10)
    out = resample_map(erf, (dst, dst))
    assert out.shape == (dst, dst) and out.min() >= 0
    assert out.sum() == pytest.approx(erf.sum(), rel=1e-12)
    assert np.unravel_index(out.argmax(), out.shape) == (dst // 2, dst // 2)
    # the border cuts even-sized maps one row asymmetrically: not exactly 0, but far below 1 px
    com = erf_metrics(out)['center_of_mass']
    assert abs(com[0]) < 1e-2 and abs(com[1]) < 1e-2
    # an offset scales with the size
    shifted = resample_map(gaussian(src, src / 10, dy=src / 8), (dst, dst))
    assert erf_metrics(shifted)['center_of_mass'][0] == pytest.approx(dst / 8, abs=0.3)


def test_shared_and_per_panel_scale():
    small, big = gaussian(16, 2, peak=1.0), gaussian(16, 2, peak=100.0)
    per_panel = display_maps([small, big], 'replknet', 'per-panel')
    shared = display_maps([small, big], 'replknet', 'shared')
    np.testing.assert_allclose(per_panel[0], normalize(small))
    assert per_panel[0].max() == per_panel[1].max() == 1.0
    assert shared[1].max() == 1.0
    assert shared[0].max() == pytest.approx(np.log10(2) / np.log10(101))
    np.testing.assert_allclose(display_maps([big], 'vmamba', 'shared')[0],
                               normalize(big, 'vmamba'))


def test_overlay(two_runs, tmp_path):
    (dir_a, _), (dir_b, _) = two_runs
    photo = tmp_path / 'photo.png'
    Image.fromarray(np.full((40, 60, 3), (20, 40, 200), np.uint8)).save(photo)
    square = load_overlay_image(str(photo), (32, 32))
    assert square.shape == (32, 32, 3) and square.dtype == np.uint8
    outs = {}
    for contours in ('squares', 'levels'):
        outs[contours] = tmp_path / f'overlay_{contours}.png'
        assert main([dir_a, dir_b, '--overlay', str(photo), '--contours', contours,
                     '--out', str(outs[contours])]) == 0
    width, height = grid_size_inches(2, 2, legend=True)
    assert png_size(outs['squares']) == (round(width * DPI), round(height * DPI))
    assert colour_pixels(outs['levels'], '#1428c8') > 1000  # the photo is drawn
    square_colour, level_colour = SQUARE_COLOURS['0.5'], LEVEL_COLOURS[0.25]
    assert colour_pixels(outs['squares'], square_colour) > 50
    assert colour_pixels(outs['levels'], level_colour) > 50
    # the legend shows only what is drawn: the other kind is absent everywhere
    assert colour_pixels(outs['squares'], level_colour) == 0
    assert colour_pixels(outs['levels'], square_colour) == 0
    assert (tmp_path / 'overlay_levels.md').exists()
    assert (tmp_path / 'overlay_levels.csv').exists()


def test_overlay_missing_image(two_runs, tmp_path, capsys):
    (dir_a, _), _ = two_runs
    assert main([dir_a, '--overlay', str(tmp_path / 'nope.jpg'),
                 '--out', str(tmp_path / 'o.png')]) == 2
    assert 'overlay image' in capsys.readouterr().err


def test_evolution_in_iteration_order(tmp_path, capsys):
    erf_dir = tmp_path / 'work_dir' / 'erf'
    widths = {1: 1.5, 2: 2, 10: 4, 30: 6}
    for n in (10, 2, 30, 1):  # written out of order; listed lexically: 1, 10, 2, 30
        write_run(erf_dir / f'iter_{n}', {'backbone.3': widths[n], 'decode_head': 9})
    write_run(erf_dir / 'test', {'backbone.3': 7})  # not an iteration: left out
    assert [n for n, _ in iteration_snapshots(str(erf_dir))] == [1, 2, 10, 30]
    out = tmp_path / 'evolution.png'
    assert main(['--evolution', str(erf_dir), '--out', str(out), '--dpi', '40']) == 0
    assert out.exists()
    rows = read_csv(tmp_path / 'evolution.csv')
    assert [r['run'] for r in rows] == ['iter 1', 'iter 2', 'iter 10', 'iter 30']
    assert {r['target'] for r in rows} == {'backbone.3'}  # the first target by default
    radii = [float(r['effective_radius']) for r in rows]
    assert radii == sorted(radii)
    capsys.readouterr()
    assert main(['--evolution', str(erf_dir), '--targets', 'decode_head', '--out', str(out),
                 '--dpi', '40']) == 0
    assert {r['target'] for r in read_csv(tmp_path / 'evolution.csv')} == {'decode_head'}


def test_evolution_refusals(tmp_path, capsys):
    write_run(tmp_path / 'erf' / 'iter_1', {'backbone.3': 2})
    out = str(tmp_path / 'e.png')
    assert main(['--evolution', str(tmp_path / 'erf'), '--targets', 'a', 'b',
                 '--out', out]) == 2
    assert 'one target' in capsys.readouterr().err
    assert main(['--evolution', str(tmp_path / 'erf' / 'iter_1'), '--out', out]) == 2
    assert 'no iter_<n>/ snapshot' in capsys.readouterr().err
    assert main([str(tmp_path / 'erf' / 'iter_1'), '--evolution', str(tmp_path / 'erf'),
                 '--out', out]) == 2
    assert 'takes no RUN_DIR' in capsys.readouterr().err


def test_bad_inputs_exit_2(two_runs, tmp_path, capsys):
    (dir_a, _), (dir_b, _) = two_runs
    out = str(tmp_path / 'x.png')
    cases = [([dir_a, '--targets', 'neck.0', '--out', out], 'target neck.0 is not in run narrow'),
             ([str(tmp_path / 'missing'), '--out', out], 'does not exist'),
             ([str(tmp_path), '--out', out], 'is not an ERF run directory'),
             ([dir_a, '--out', str(tmp_path / 'x.txt')], 'end it in .png'),
             (['--out', out], 'no run directory given')]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith('erf_compare.py: error: ') and message in err, err


def test_script_is_thin(monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', ['erf_compare.py', '--help'])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(os.path.join(REPO, 'tools', 'erf_compare.py'), run_name='__main__')
    assert exit_info.value.code == 0
    assert '--evolution' in capsys.readouterr().out
