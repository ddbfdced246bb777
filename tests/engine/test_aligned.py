"""Aligned, grouped point ERFs: closed forms first."""
import numpy as np
import pytest
import torch
from torch import nn

from mmseg_erf.engine import ERFResult, ERFSession, MissingLabelsError, PointSpec
from mmseg_erf.engine.accumulator import ERFAccumulator, placement
from mmseg_erf.engine.metrics import normalized_metrics, replknet_normalize
from mmseg_erf.engine.result import aligned_metrics

from .toy_models import ToySegmentor, conv


def run_points(model, targets, images, spec, labels=None, batch_size=1, **kwargs):
    session = ERFSession(model, targets, num_images=len(images), points=spec, **kwargs)
    for start in range(0, len(images), batch_size):
        part = None if labels is None else labels[start:start + batch_size]
        session.process(images[start:start + batch_size], labels=part)
    return session


def single_conv(kernel_side=5):
    kernel = torch.randn(1, 3, kernel_side, kernel_side, dtype=torch.float64)
    model = nn.Sequential(conv(3, 1, kernel, bias=100.0)).double().eval()
    # what the map of a point is: the rectified kernel summed over input channels
    return model, model[0].weight.detach().clamp(min=0).sum(dim=1)[0].numpy()


def test_single_conv_aligned_erf_is_the_kernel_everywhere_with_exact_coverage():
    """Every pixel is a point (one class, cap >= H*W): each map is the rectified
    kernel around its point, cut by the border. Coverage of offset (dy, dx) is the
    number of anchors that keep it inside: (H - |dy|) (W - |dx|); the mean is the
    kernel at every offset, never diluted by the border's missing pixels.
    Mutation: adding coverage over the whole canvas (``coverage += 1``) breaks both."""
    model, kernel = single_conv()
    h, w = 9, 11
    images = torch.rand(2, 3, h, w, dtype=torch.float64)
    labels = np.zeros((2, h, w), int)
    session = run_points(model, ['output'], images, PointSpec('per-class', cap=h * w),
                         labels, batch_size=2)
    acc = session.accumulator
    assert acc.canvas_shape == (2 * h - 1, 2 * w - 1) and acc.counts == {'class_0': 2 * h * w}
    dy = np.abs(np.arange(2 * h - 1) - (h - 1))[:, None]
    dx = np.abs(np.arange(2 * w - 1) - (w - 1))[None, :]
    np.testing.assert_array_equal(acc.coverage['class_0'], 2 * (h - dy) * (w - dx))
    expected = np.zeros((2 * h - 1, 2 * w - 1))
    expected[h - 1 - 2:h + 2, w - 1 - 2:w + 2] = kernel
    np.testing.assert_allclose(acc.mean('output', 'class_0'), expected, rtol=0, atol=1e-12)
    assert session.accumulator.backwards == h * w    # one backward per point index, both images at once


def test_border_point_gets_the_truncated_kernel_and_nan_where_unseen():
    model, kernel = single_conv()
    h, w = 9, 11
    labels = np.zeros((1, h, w), int)
    labels[0, 0, 0] = 1                       # class 1: the top-left pixel only
    session = run_points(model, ['output'], torch.rand(1, 3, h, w, dtype=torch.float64),
                         PointSpec('per-class', cap=1, class_names=('bg', 'corner')),
                         labels)
    acc = session.accumulator
    cover = np.zeros((2 * h - 1, 2 * w - 1), int)
    cover[h - 1:, w - 1:] = 1                 # offsets (0..H-1, 0..W-1) from (0, 0)
    np.testing.assert_array_equal(acc.coverage['corner'], cover)
    mean = acc.mean('output', 'corner')
    assert np.isnan(mean[cover == 0]).all()
    expected = np.zeros_like(mean)
    expected[h - 1:h + 2, w - 1:w + 2] = kernel[2:, 2:]
    np.testing.assert_allclose(np.where(cover > 0, mean, 0), expected, atol=1e-12)


class WindowHead(nn.Module):
    """Class c's logit at a pixel is the sum of input channel 0 over the centred
    (2c + 1) x (2c + 1) window, plus a large bias."""
    align_corners = False

    def __init__(self, num_classes=3):
        super().__init__()
        side = 2 * num_classes - 1
        self.conv = nn.Conv2d(1, num_classes, side, padding=side // 2).double()
        with torch.no_grad():
            self.conv.weight.zero_()
            for c in range(num_classes):
                r = side // 2
                self.conv.weight[c, 0, r - c:r + c + 1, r - c:r + c + 1] = 1.0
            self.conv.bias.fill_(1000.0)

    def forward(self, feats):
        return self.conv(feats[0][:, :1])


class TupleBackbone(nn.Module):
    out_indices = (0, )

    def forward(self, x):
        return (x, )


class WindowSegmentor(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = TupleBackbone()
        self.neck = None
        self.decode_head = WindowHead()


def test_class_logit_gives_that_class_window():
    """Mutation: responding with all classes' logits (no gather) gives every class
    the largest window."""
    model = WindowSegmentor().eval()
    h = w = 16
    labels = np.zeros((2, h, w), int)
    labels[:, 3:8, 3:8] = 1
    labels[:, 8:13, 8:13] = 2
    session = run_points(model, ['decode_head'], torch.rand(2, 3, h, w, dtype=torch.float64),
                         PointSpec('per-class', cap=3, seed=1), labels, batch_size=2)
    for c in range(3):
        mean = session.accumulator.mean('decode_head', f'class_{c}')
        expected = np.zeros_like(mean)
        expected[h - 1 - c:h + c, w - 1 - c:w + c] = 1.0
        np.testing.assert_array_equal(np.nan_to_num(mean), expected)


@pytest.mark.parametrize('spec', [PointSpec('grid', grid=3), PointSpec('per-class', cap=2),
                                  PointSpec('boundary', cap=2, boundary_px=3),
                                  PointSpec('predicted', cap=2)])
def test_batches_equal_single_images(spec):
    model = ToySegmentor().eval()
    images = torch.randn(4, 3, 32, 32)
    labels = np.random.default_rng(0).integers(0, 5, (4, 32, 32))
    labels[:, :8] = 255
    targets = ['backbone.1', 'seg_logits']
    one = run_points(model, targets, images, spec, labels, batch_size=1)
    four = run_points(model, targets, images, spec, labels, batch_size=4)
    a, b = one.accumulator, four.accumulator
    assert a.counts == b.counts and a.groups
    for g in a.groups:
        np.testing.assert_array_equal(a.coverage[g], b.coverage[g])
        for t in targets:
            np.testing.assert_allclose(b.sums[t][g], a.sums[t][g], rtol=1e-5, atol=1e-9)
    # one backward per point index per batch: 4 batches of 1 cost more than 1 of 4
    assert four.accumulator.backwards == max(len(p) for p in four.image_points(
        images, range(4), labels))


def test_missing_labels_name_the_way_out():
    session = ERFSession(ToySegmentor().eval(), ['backbone.1'], 2,
                           points=PointSpec('per-class'))
    with pytest.raises(MissingLabelsError, match='--points predicted'):
        session.process(torch.randn(1, 3, 16, 16))


def test_non_finite_point_is_skipped_for_every_group_and_target():
    acc = ERFAccumulator(['a', 'b'], (4, 4))
    good, bad = np.ones((4, 4)), np.ones((4, 4))
    bad[1, 1] = np.nan
    kept = acc.add({'a': np.stack([good, good]), 'b': np.stack([good, bad])},
                   [(1, 1), (2, 2)], [('x', 'all'), ('y', 'all')])
    assert kept.tolist() == [True, False] and acc.skipped_points == 1
    assert acc.counts == {'x': 1, 'all': 1}


def test_placement_window():
    canvas, src = placement((10, 10), (1, 8), (2, 2, 2, 2))
    assert canvas == (slice(1, 5), slice(0, 4)) and src == (slice(0, 4), slice(6, 10))


def test_coverage_weighted_metrics():
    """An offset seen by half the maps counts half; area ratios are of the input.
    Mutation: dropping the weights makes the outer ring count fully."""
    mean = np.zeros((9, 9))
    mean[4, 4], mean[4, 7] = 9.0, 9.0
    coverage = np.full((9, 9), 4)
    coverage[:, 6:] = 2
    m = aligned_metrics(mean, coverage, 4, (5, 5))
    data = replknet_normalize(mean) * coverage / 4
    assert m['effective_radius'] == pytest.approx(
        np.sqrt((data[4, 7] * 9) / (data[4, 4] + data[4, 7])), rel=1e-12)
    ref = normalized_metrics(data)
    assert m['area_side'] == ref['area_side']
    side = ref['area_side']['0.5']
    assert m['area_ratio']['0.5'] == pytest.approx(side * side / 25)
    assert m['full_coverage_side'] == 3 and m['count'] == 4


def test_point_result_round_trip(tmp_path):
    model = ToySegmentor().eval()
    labels = np.random.default_rng(0).integers(0, 3, (2, 32, 32))
    session = run_points(model, ['backbone.1', 'decode_head'], torch.randn(2, 3, 32, 32),
                         PointSpec('boundary', cap=2, class_names=('a', 'b', 'c')), labels)
    result = session.result('toy')
    result.write(str(tmp_path))
    back = ERFResult.read(str(tmp_path))
    assert back.counts == result.counts and back.points == result.points
    for t in result.targets:
        for g in result.groups:
            np.testing.assert_array_equal(back.maps[t][g], result.maps[t][g])
    assert (tmp_path / 'groups_decode_head.png').is_file()
    assert (tmp_path / 'groups_chart_backbone.1.png').is_file()
    assert back.metrics['decode_head']['a/boundary']['count'] == result.counts['a/boundary']
