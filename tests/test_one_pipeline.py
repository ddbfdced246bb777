"""One pipeline: the same maps through every door, every guard on every kind of run."""
import os

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.runner import Runner
from torch import nn

import mmseg_erf  # noqa: F401
from mmseg_erf import compute_erf
from mmseg_erf.cli import main
from mmseg_erf.engine import ERFResult, ERFSession, PointSpec

from conftest import TINY_CONFIG, interrupt_feed_after, make_voc_tree

TARGETS = ['backbone.1', 'decode_head']
MMLogger.get_instance('mmseg_erf', log_level='INFO')  # see test_points_doors.py


def error_lines(err):
    return [line for line in err.splitlines() if line.startswith('erf_seg.py: error:')]


@pytest.fixture(scope='module')
def sized_tree(tmp_path_factory):
    """64 x 96 images under the tiny config, whose val pipeline resizes the short side
    to 64 (``Resize(scale=(128, 64), keep_ratio=True)``): the val loop hands the hook
    images the pipeline has already sized."""
    root = tmp_path_factory.mktemp('doors')
    tree = make_voc_tree(root / 'data', splits=(('train', 2), ('val', 3)), size=(64, 96))
    return tree, root


def test_hook_cli_and_api_give_the_same_maps(sized_tree):
    """Same config, images and size through the three doors: equal maps. The hook's
    default geometry takes the val batches' own short side (64) and crops, without
    resampling what the val pipeline sized; before, it resampled every batch to 1024.
    Mutation: a hook default of 1024 (or resampling the batches again) breaks it."""
    tree, root = sized_tree
    cfg = Config.fromfile(TINY_CONFIG)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader]['dataset']['data_root'] = tree
    cfg.work_dir = str(root / 'work')
    cfg.launcher = 'none'
    cfg.custom_hooks = [dict(type='ERFHook', targets=TARGETS, num_images=3)]
    runner = Runner.from_cfg(cfg)
    runner.test()
    hook = ERFResult.read(str(root / 'work' / 'erf' / 'test'))
    assert hook.input_size == (64, 64) and hook.num_images == 3
    checkpoint = str(root / 'weights.pth')
    torch.save(dict(state_dict=runner.model.state_dict()), checkpoint)
    images = os.path.join(tree, 'images', 'val')
    cli_dir = root / 'cli'
    assert main([TINY_CONFIG, checkpoint, '--img-dir', images, '--targets', *TARGETS,
                 '--num-images', '3', '--input-size', '64', '--num-workers', '0',
                 '--batch-size', '2', '--out-dir', str(cli_dir)]) == 0
    cli = ERFResult.read(str(cli_dir))
    api = compute_erf(TINY_CONFIG, images, TARGETS, num_images=3, input_size=64,
                      checkpoint=checkpoint)
    # the same images in the same order: erf_compare pairs a snapshot with a CLI run
    assert hook.meta['images'] == cli.meta['images'] and hook.meta['images']['count'] == 3
    for other in (cli, api):
        assert other.num_images == 3
        for target in TARGETS:
            # float32 sums in another batch composition: equal to 1e-5 of the peak
            expected = hook.map(target)
            np.testing.assert_allclose(other.map(target), expected, rtol=1e-5,
                                       atol=1e-5 * expected.max())


class OppositeBiases(nn.Module):
    """Two output channels with the same 3x3 kernel and biases +50 / -50: at every
    pixel of a unit-range image channel 1 is negative, so relu(response) keeps only
    channel 0 and the map is channel 0's rectified kernel."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1).double()
        with torch.no_grad():
            kernel = torch.randn(1, 3, 3, 3, dtype=torch.float64)
            self.conv.weight.copy_(torch.cat([kernel, -2 * kernel]))
            self.conv.bias.copy_(torch.tensor([50.0, -50.0]))

    def forward(self, x):
        return self.conv(x)


@pytest.mark.parametrize('spec', [PointSpec(), PointSpec('grid', grid=2),
                                  PointSpec('per-class', cap=3)])
def test_negative_responses_do_not_count_at_any_kind_of_point(spec):
    """relu(response) is pinned on every kind of run. Channel 1 has the kernel -2k and
    a bias of -50: without the relu, its gradient (-2k) is added to channel 0's (k)
    and the map becomes relu(-k), the kernel's other half."""
    model = OppositeBiases().eval()
    kernel = model.conv.weight.detach()[0].clamp(min=0).sum(dim=0).numpy()
    images = torch.rand(2, 3, 9, 9, dtype=torch.float64)
    labels = [np.zeros((9, 9), int)] * 2
    session = ERFSession(model, ['output'], 2, spec)
    session.process(images, labels=labels if spec.needs_labels else None)
    result = session.result()
    for group in result.groups:
        canvas = result.maps['output'][group]
        cy, cx = (4, 4) if result.is_classic else (8, 8)
        np.testing.assert_allclose(canvas[cy - 1:cy + 2, cx - 1:cx + 2], kernel, rtol=1e-12)


@pytest.fixture(scope='module')
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp('guards')
    tree = make_voc_tree(root / 'data', splits=(('val', 4), ), size=(48, 48))
    base = [TINY_CONFIG, '--img-dir', os.path.join(tree, 'images', 'val'), '--label-dir',
            os.path.join(tree, 'labels', 'val'), '--targets', 'backbone.1', '--input-size',
            '48', '--num-workers', '0', '--points', 'per-class', '--points-cap', '2',
            '--num-images', '4']
    return tree, root, base


@pytest.mark.parametrize('change', [
    ['--points-cap', '3'], ['--points-seed', '5'], ['--window', '31'],
    ['--class-names', 'a', 'b', 'c', 'd'], ['--recursive'], ['--class-index', '1',
                                                             '--targets', 'decode_head'],
])
def test_a_changed_point_option_does_not_replace_a_finished_run(labelled, capsys, change):
    """Every option that changes a point run's maps is in its fingerprint: a rerun into
    the same folder with one of them changed is refused in one sentence, exit 2, the
    finished run untouched; --overwrite replaces it."""
    tree, root, base = labelled
    out = str(root / 'finished')
    if not os.path.isfile(os.path.join(out, 'metrics.json')):
        assert main(base + ['--out-dir', out]) == 0
    before = open(os.path.join(out, 'metrics.json')).read()
    capsys.readouterr()
    assert main(base + change + ['--out-dir', out]) == 2
    (err, ) = error_lines(capsys.readouterr().err)
    assert 'holds the results of another run' in err and '--overwrite' in err
    assert open(os.path.join(out, 'metrics.json')).read() == before
    assert main(base + ['--out-dir', out]) == 0  # the same options may write again


def test_a_point_run_killed_midway_resumes_to_the_uninterrupted_maps(labelled, monkeypatch):
    """Point runs save their running sums (groups, coverage, counts) like centre runs:
    interrupted after two batches, --resume finishes with exactly the maps of a run
    that was never interrupted."""
    tree, root, base = labelled
    args = base + ['--batch-size', '1', '--save-every', '1', '--targets', 'backbone.1',
                   'decode_head']
    whole = root / 'whole'
    assert main(args + ['--out-dir', str(whole)]) == 0
    restore = interrupt_feed_after(monkeypatch, 2)
    split = root / 'split'
    assert main(args + ['--out-dir', str(split)]) == 130
    assert (split / '.erf_state' / 'rank0.npz').is_file()
    restore()
    assert main(args + ['--out-dir', str(split), '--resume']) == 0
    a, b = ERFResult.read(str(whole)), ERFResult.read(str(split))
    assert a.counts == b.counts and a.num_images == b.num_images == 4
    for target in a.targets:
        for group in a.groups:
            np.testing.assert_array_equal(a.coverage[group], b.coverage[group])
            np.testing.assert_array_equal(a.maps[target][group], b.maps[target][group])
    assert not (split / '.erf_state').exists()


def test_every_file_of_a_point_run_is_written_atomically(tmp_path, monkeypatch):
    """A write that fails midway leaves the previous files whole and no temporary."""
    model = OppositeBiases().eval()
    session = ERFSession(model, ['output'], 1, PointSpec('grid', grid=2))
    session.process(torch.rand(1, 3, 9, 9, dtype=torch.float64))
    result = session.result()
    result.write(str(tmp_path))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_save = np.save

    def failing_save(f, array, *a, **k):
        real_save(f, array[:1], *a, **k)   # half written
        raise OSError('disk full')

    monkeypatch.setattr(np, 'save', failing_save)
    with pytest.raises(OSError):
        result.write(str(tmp_path))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_label_values_beyond_the_heads_classes_are_one_sentence(labelled, capsys):
    """Per-class points whose label value reaches the head's class count: one sentence
    naming the value and the classes, exit status 2 (was a traceback)."""
    tree, root, base = labelled
    args = [a if a != 'backbone.1' else 'decode_head' for a in base]
    args += ['--cfg-options', 'model.decode_head.num_classes=2',
             'model.auxiliary_head.num_classes=2', '--out-dir', str(root / 'classes')]
    assert main(args) == 2
    (err, ) = error_lines(capsys.readouterr().err)
    assert 'out of range' in err and '2 classes' in err


def test_cfg_options_without_equals_is_a_usage_error(labelled, capsys):
    tree, root, base = labelled
    with pytest.raises(SystemExit) as stop:
        main(base + ['--cfg-options', 'model.backbone.depth', '--out-dir', str(root / 'x')])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "'model.backbone.depth' is not key=value" in err and 'Traceback' not in err


def test_one_forward_per_batch_through_compute_erf(sized_tree):
    """compute_erf spends no blank forward before the first batch (the first batch is
    the size check): 3 images in batches of 2 are 2 backbone forwards. Mutation: a
    probe forward (check_model(probe_forward=True)) makes it 3."""
    from mmseg_erf.segmentor import build_segmentor
    tree, _ = sized_tree
    model, _, _ = build_segmentor(TINY_CONFIG)
    calls = []
    handle = model.backbone.register_forward_hook(lambda *_: calls.append(1))
    try:
        compute_erf(model, os.path.join(tree, 'images', 'val'), ['backbone.1'], num_images=3,
                    input_size=64, batch_size=2)
    finally:
        handle.remove()
    assert len(calls) == 2
