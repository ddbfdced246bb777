"""The theoretical receptive field from the gradient's support, on known answers."""
import numpy as np
import pytest
import torch
from torch import nn

from mmseg_erf.engine import ERFSession
from mmseg_erf.engine.trf import erf_trf_ratio, trf_metrics


class ConvStack(nn.Module):
    """n k x k stride-1 convolutions of uniform positive weights (no non-linearity):
    the response's gradient is the n-fold box filter, support side n(k - 1) + 1."""

    def __init__(self, n, k):
        super().__init__()
        self.stack = nn.Sequential(*[nn.Conv2d(3 if i == 0 else 2, 2, k, padding=k // 2)
                                     for i in range(n)])
        with torch.no_grad():
            for conv in self.stack:
                conv.weight.fill_(1.0 / (k * k * conv.in_channels))
                conv.bias.fill_(0.1)

    def forward(self, x):
        return self.stack(x)


def erf_of(n, k, size=81, images=2):
    session = ERFSession(ConvStack(n, k).eval(), ['stack'], num_images=images)
    session.process(torch.rand(images, 3, size, size) + 0.5)
    return session.result().metrics['stack']['centre']


@pytest.mark.parametrize('n, k', [(1, 3), (2, 3), (4, 3), (3, 5), (8, 3), (2, 7)])
def test_trf_side_of_a_conv_stack_is_exact(n, k):
    trf = erf_of(n, k)['trf']
    assert trf['side'] == trf['height'] == trf['width'] == n * (k - 1) + 1
    assert trf['clipped'] is False


def test_trf_clipped_when_larger_than_the_image():
    trf = erf_of(12, 5, size=33)['trf']
    assert trf['side'] == 33 and trf['clipped'] is True


def test_erf_over_trf_falls_as_one_over_sqrt_depth():
    """Luo et al. (2016): the ERF radius grows as sqrt(n), the TRF side as n."""
    depths = [4, 8, 16]
    ratios = [erf_of(n, 3, size=97)['erf_trf_ratio'] for n in depths]
    slope = np.polyfit(np.log(depths), np.log(ratios), 1)[0]
    assert -0.6 < slope < -0.35, (ratios, slope)
    # the radius itself: the n-fold 3-box has variance 2n/3 per axis, RMS radius sqrt(4n/3)
    radius = erf_of(16, 3, size=97)['effective_radius']
    assert radius == pytest.approx(np.sqrt(4 * 16 / 3), rel=0.05)


def test_trf_metrics_of_a_support():
    support = np.zeros((9, 9), bool)
    support[3:6, 2:7] = True
    assert trf_metrics(support, (4, 4)) == dict(side=5, height=3, width=5, clipped=False)
    assert trf_metrics(np.zeros((5, 5), bool), (2, 2))['side'] is None
    assert erf_trf_ratio(2.0, 5) == 0.8 and erf_trf_ratio(None, 5) is None
