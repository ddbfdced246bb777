"""Point ERFs through the three doors: hook in a Runner, command line, compute_erf."""
import json
import os

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.runner import Runner

import mmseg_erf  # noqa: F401
from mmseg_erf import compute_erf
from mmseg_erf.cli import main
from mmseg_erf.engine import ERFResult

from conftest import TINY_CONFIG, make_voc_tree

CLASSES = ('background', 'red', 'green', 'blue')


def error_lines(err):
    """The CLI's own error lines (its log records go to the session capture)."""
    return [line for line in err.splitlines() if line.startswith('erf_seg.py: error:')]
TARGETS = ['backbone.1', 'decode_head']
# The CLI's logger keeps the stream it was created with; made here, at collection, it
# writes to pytest's session capture and not to one test's capsys stream, which later
# in-process tests would find closed ("--- Logging error ---").
MMLogger.get_instance('mmseg_erf', log_level='INFO')


@pytest.fixture(scope='module')
def square_tree(tmp_path_factory):
    """64 x 64 images: every door's geometry is the identity, so the maps must agree."""
    root = tmp_path_factory.mktemp('points')
    tree = make_voc_tree(root / 'data', splits=(('train', 2), ('val', 3)), size=(64, 64))
    config = root / 'config.py'
    config.write_text(
        f'_base_ = [{TINY_CONFIG!r}]\n'
        f'data_root = {tree!r}\n'
        "test_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),\n"
        "                 dict(type='PackSegInputs')]\n"
        'val_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline))\n'
        'test_dataloader = val_dataloader\n'
        'train_dataloader = dict(dataset=dict(data_root=data_root))\n')
    return tree, str(config), root


def test_three_doors_give_identical_per_class_maps(square_tree):
    # no capsys here: the Runner's logger would keep this test's capture stream
    tree, config, root = square_tree
    cfg = Config.fromfile(config)
    cfg.work_dir = str(root / 'work')
    cfg.launcher = 'none'
    points = dict(kind='per-class', cap=1, seed=3)
    cfg.custom_hooks = [dict(type='ERFHook', targets=TARGETS, num_images=3, input_size=64,
                             points=points)]
    runner = Runner.from_cfg(cfg)
    runner.test()
    hook = ERFResult.read(str(root / 'work' / 'erf' / 'test'))
    checkpoint = str(root / 'weights.pth')
    torch.save(dict(state_dict=runner.model.state_dict()), checkpoint)

    cli_dir = root / 'cli'
    code = main([config, checkpoint, '--img-dir', os.path.join(tree, 'images', 'val'),
                 '--label-dir', os.path.join(tree, 'labels', 'val'), '--points', 'per-class',
                 '--points-cap', '1', '--points-seed', '3', '--targets', *TARGETS,
                 '--num-images', '3', '--input-size', '64', '--num-workers', '0',
                 '--out-dir', str(cli_dir)])
    assert code == 0
    cli = ERFResult.read(str(cli_dir))

    api = compute_erf(config, os.path.join(tree, 'images', 'val'), TARGETS, num_images=3,
                      input_size=64, checkpoint=checkpoint, points=points,
                      labels=os.path.join(tree, 'labels', 'val'), class_names=CLASSES)

    assert set(hook.groups) == set(CLASSES)
    for other in (cli, api):
        assert other.counts == hook.counts and other.num_images == 3
        for target in TARGETS:
            for group in hook.groups:
                np.testing.assert_array_equal(other.coverage[group], hook.coverage[group])
                np.testing.assert_allclose(other.maps[target][group],
                                           hook.maps[target][group], rtol=1e-6, atol=1e-12)
    info = json.loads((cli_dir / 'metrics.json').read_text())
    m = info['targets']['decode_head']['red']
    assert m['count'] == hook.counts['red'] and 'gaussian' in m['shape']
    assert (cli_dir / 'groups_decode_head.png').is_file()
    assert (cli_dir / 'groups_chart_decode_head.png').is_file()
    # random weights: some classes' logits are negative at their pixels (zero maps)
    scalars = runner.message_hub.log_scalars
    assert {f'test/erf/backbone.1/{c}/area_0.5_pct' for c in CLASSES} <= set(scalars)


def test_per_class_without_labels_is_one_sentence_and_predicted_works(square_tree, capsys):
    tree, config, root = square_tree
    common = [config, '--img-dir', os.path.join(tree, 'images', 'val'), '--num-images', '2',
              '--input-size', '64', '--num-workers', '0', '--targets', 'decode_head']
    assert main(common + ['--points', 'per-class', '--out-dir', str(root / 'x')]) == 2
    (err, ) = error_lines(capsys.readouterr().err)
    assert 'need label maps' in err and '--points predicted' in err
    out_dir = root / 'predicted'
    assert main(common + ['--points', 'predicted', '--class-names', 'k0', 'k1', 'k2', 'k3',
                          '--out-dir', str(out_dir)]) == 0
    result = ERFResult.read(str(out_dir))
    assert sum(result.counts.values()) == result.meta['points_computed'] > 0
    assert set(result.groups) <= {'k0', 'k1', 'k2', 'k3'}


def test_grid_run_writes_the_position_panel(square_tree, capsys):
    tree, config, root = square_tree
    out_dir = root / 'grid'
    assert main([config, '--img-dir', os.path.join(tree, 'images', 'val'), '--num-images', '2',
                 '--input-size', '64', '--num-workers', '0', '--targets', 'backbone.1',
                 '--points', 'grid', '2', '--batch-size', '2', '--out-dir', str(out_dir)]) == 0
    result = ERFResult.read(str(out_dir))
    assert sorted(result.groups) == ['grid_0_0', 'grid_0_1', 'grid_1_0', 'grid_1_1']
    assert result.meta['backwards'] == 4      # 4 points, one batch of 2 images
    assert (out_dir / 'position_grid_backbone.1.png').is_file()
    assert ('4 backward passes per target, each over a whole batch, for 8 points of 2 '
            'images') in capsys.readouterr().out


@pytest.mark.parametrize('extra, fragment', [
    (['--points', 'stripes'], 'unknown points'),
    (['--points', 'grid', 'x'], 'positive integer K'),
    (['--points', 'per-class', '--points-cap', '0'], 'cap must be a positive integer'),
    (['--points', 'centre', '--window', '8'], 'odd side'),
])
def test_bad_point_options_are_one_sentence(square_tree, capsys, extra, fragment):
    tree, config, root = square_tree
    assert main([config, '--img-dir', os.path.join(tree, 'images', 'val'), '--num-workers',
                 '0', '--out-dir', str(root / 'bad')] + extra) == 2
    (err, ) = error_lines(capsys.readouterr().err)
    assert fragment in err


def test_erf_compare_puts_two_point_runs_side_by_side(square_tree, capsys):
    from mmseg_erf.compare import main as compare_main
    tree, config, root = square_tree
    runs = []
    for seed in (0, 1):
        out_dir = root / f'seed{seed}'
        runs.append(str(out_dir))
        assert main([config, '--img-dir', os.path.join(tree, 'images', 'val'), '--label-dir',
                     os.path.join(tree, 'labels', 'val'), '--points', 'per-class',
                     '--points-cap', '1', '--num-images', '1', '--input-size', '64',
                     '--num-workers', '0', '--targets', 'backbone.1', '--seed', str(seed),
                     '--out-dir', str(out_dir)]) == 0
    fig = root / 'cmp.png'
    assert compare_main(runs + ['--labels', 'A', 'B', '--out', str(fig)]) == 0
    out = capsys.readouterr().out
    table = (root / 'cmp.md').read_text()
    assert fig.is_file() and (root / 'cmp.csv').is_file()
    first = ERFResult.read(runs[0])
    for group in first.groups:
        m = first.metrics['backbone.1'][group]
        assert f'| {group} | A | {m["count"]}*' in table
    assert '| B |' in out


def test_label_folder_is_read_as_the_config_reads_labels(square_tree):
    """ADE20K configs load labels with reduce_zero_label: 0 is ignored, k is class k - 1.
    Mutation: building the folder dataset without the config's flag fails mmseg's check."""
    from mmengine.registry import init_default_scope
    from PIL import Image

    from mmseg_erf.run.data import labelled_folder
    init_default_scope('mmseg')
    tree = square_tree[0]
    pipeline = [dict(type='LoadImageFromFile'),
                dict(type='LoadAnnotations', reduce_zero_label=True),
                dict(type='ERFResizeCrop', size=64), dict(type='PackSegInputs')]
    dataset = labelled_folder(os.path.join(tree, 'images', 'val'),
                              os.path.join(tree, 'labels', 'val'), pipeline, CLASSES)
    raw = np.asarray(Image.open(os.path.join(tree, 'labels', 'val', 'val_00.png')))
    loaded = dataset[0]['data_samples'].gt_sem_seg.data[0].numpy()
    np.testing.assert_array_equal(loaded, np.where(raw == 0, 255, raw.astype(int) - 1))


def test_point_runs_use_the_heads_own_predict(tmp_path):
    """Point sessions predict through the head adapters, as centre sessions do.

    Mutation guarded: ``PointSession`` built without ``head_runner_for(model)``
    (the engine's plain runner then resizes DANet's tuple output and fails), for
    the ERF taps and for the ``predicted`` classes alike.
    """
    from PIL import Image

    from mmseg_erf.segmentor import build_segmentor
    path = str(tmp_path / 'img.png')
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(path)
    model, _, _ = build_segmentor('mmseg::danet/danet_r50-d8_4xb4-80k_ade20k-512x512.py')
    result = compute_erf(model, [path], targets=['decode_head', 'seg_logits'],
                         num_images=1, input_size=64, points='predicted')
    assert isinstance(result, ERFResult)
    assert result.meta['points_computed'] > 0
    for maps in result.maps.values():
        for grid in maps.values():
            assert np.isfinite(np.nan_to_num(grid, nan=0.0)).all()
