"""erf_compare's differences: paired on the same images, marked where significant."""
import numpy as np

from mmseg_erf.compare import main
from mmseg_erf.compare.differences import difference_rows, paired
from mmseg_erf.compare.runs import load_runs
from mmseg_erf.engine.accumulator import ERFAccumulator
from mmseg_erf.engine.points import PointSpec
from mmseg_erf.engine.result import ERFResult

S = 33
YY, XX = np.mgrid[:S, :S] - S // 2


def write_run(path, widths, scale, images):
    """A centre run whose image p has a Gaussian map of width widths[p] * scale."""
    acc = ERFAccumulator(['a'], (S, S), anchor=(S // 2, S // 2), buckets=10)
    for p, w in enumerate(widths):
        acc.add({'a': np.exp(-(YY**2 + XX**2) / (2 * (w * scale)**2))[None]},
                [(S // 2, S // 2)], [('centre', )], positions=[p])
        acc.images += 1
    result = ERFResult.from_accumulator(acc, PointSpec(), 'toy',
                                        dict(images=dict(count=len(widths), sha1=images)))
    result.write(str(path), images=False)
    return str(path)


def test_same_images_pair_and_find_a_small_real_difference(tmp_path, capsys):
    widths = np.random.default_rng(0).uniform(2, 7, 60)
    base = write_run(tmp_path / 'base', widths, 1.0, 'same')
    wider = write_run(tmp_path / 'wider', widths, 1.03, 'same')
    other = write_run(tmp_path / 'other', np.random.default_rng(1).uniform(2, 7, 60), 1.03,
                      'elsewhere')
    runs = load_runs([base, wider, other])
    assert paired(runs[0].result, runs[1].result)
    assert not paired(runs[0].result, runs[2].result)
    rows = {(r['second'], r['metric']): r for r in difference_rows(runs, ['a'])
            if r['first'] == 'base'}
    same = rows[('wider', 'effective_radius')]
    # 3 % wider on the same images: far inside either run's own interval, yet real
    own = runs[0].result.metrics['a']['centre']['ci95']['effective_radius']
    assert same['difference'] < own[1] - own[0]
    assert same['paired'] and same['significant'] and same['low'] > 0
    # the same 3 % on other images is lost in the spread between image sets
    assert rows[('other', 'effective_radius')]['significant'] is False
    assert main([base, wider, '--out', str(tmp_path / 'cmp.png')]) == 0
    text = (tmp_path / 'cmp_differences.md').read_text()
    assert '| wider - base | a | effective_radius |' in text and '| yes | * |' in text
    assert 'significant' in capsys.readouterr().out


def test_the_grid_marks_significant_panels_and_outlines_the_trf(tmp_path):
    """The figure carries what the tables say: the second run's panel names the metric
    that differs significantly from the first; a panel without one carries no mark;
    a run's TRF (metrics' ``trf``) is outlined on its panel."""
    from mmseg_erf.compare import plots
    from mmseg_erf.compare.differences import difference_rows
    widths = np.random.default_rng(0).uniform(2, 7, 60)
    runs = load_runs([write_run(tmp_path / 'base', widths, 1.0, 'same'),
                      write_run(tmp_path / 'wider', widths, 1.03, 'same')])
    diffs = difference_rows(runs, ['a'])
    fig = plots.grid_figure(runs, ['a'], 'replknet', 'per-panel', plots.Style(), diffs)
    panels = [ax for ax in fig.axes if ax.images]
    texts = [[t.get_text() for t in ax.texts] for ax in panels]
    assert not any(t.startswith('* ') for t in texts[0])
    assert any(t.startswith('* ') and 'radius' in t for t in texts[1])
    runs[0].result.metrics['a']['centre']['trf'] = dict(side=9, clipped=False)
    fig = plots.grid_figure(runs, ['a'], 'replknet', 'per-panel', plots.Style(), diffs)
    first = [ax for ax in fig.axes if ax.images][0]
    assert [(p.get_width(), p.get_xy()) for p in first.patches] == [(9, (16 - 4.5, 16 - 4.5))]


def test_the_run_heatmap_outlines_the_trf_and_shows_the_radius_interval():
    from mmseg_erf.engine.plotting import heatmap_figure
    erf = np.exp(-(YY**2 + XX**2) / 8.0)
    metrics = dict(area_ratio={'0.5': 0.01, '0.99': 0.2}, effective_radius=3.0,
                   ci95=dict(effective_radius=[2.75, 3.25]), trf=dict(side=7, clipped=True))
    ax = heatmap_figure(erf, 'toy', metrics=metrics).axes[0]
    assert 'eff. radius 3.0 px [2.8, 3.2]' in ax.get_xlabel()
    (square, ) = ax.patches
    assert square.get_width() == 7 and square.get_linestyle() == '--'  # a lower bound
