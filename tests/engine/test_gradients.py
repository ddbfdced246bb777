import numpy as np
import pytest
import torch
from torch import nn

from mmseg_erf.engine import (ERFSession, FeatureTaps, PointSpec, input_gradient_maps,
                               response_index)
from mmseg_erf.engine.targets import TargetError

from .toy_models import NaNOnNegativeMean, ToySegmentor, conv


def run_session(model, targets, images, batch_size=1, **kwargs):
    session = ERFSession(model, targets, num_images=len(images), **kwargs)
    for start in range(0, len(images), batch_size):
        session.process(images[start:start + batch_size])
    return session.result()


def test_single_conv_map_is_rectified_kernel_around_centre():
    kernel = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    model = nn.Sequential(conv(3, 1, kernel, bias=100.0)).double().eval()
    images = torch.rand(4, 3, 17, 17, dtype=torch.float64)
    result = run_session(model, ['output'], images)
    expected = np.zeros((17, 17))
    weight = model[0].weight.detach()   # the kernel as the layer holds it
    expected[8 - 2:8 + 3, 8 - 2:8 + 3] = weight.clamp(min=0).sum(dim=1)[0].numpy()
    np.testing.assert_allclose(result.map('output'), expected, rtol=0, atol=1e-12)
    assert result.num_images == 4 and result.skipped == 0


def test_negative_response_channels_do_not_contribute():
    """The response is rectified before the sum: ``relu(F[:, :, h//2, w//2]).sum()``.

    Channel 0 has bias +100 and channel 1 bias -60, so channel 1's centre response
    is negative for every image and only channel 0's kernel may appear in the map.
    Guards the mutations ``score = response.sum()`` (the map would be
    ``relu(k0 + k1)``) and ``score = F.relu(response.sum())`` (the sum stays
    positive, so the same wrong map).
    """
    kernels = torch.rand(2, 3, 5, 5, dtype=torch.float64) * 2 - 1
    layer = nn.Conv2d(3, 2, 5, padding=2).double()
    with torch.no_grad():
        layer.weight.copy_(kernels)
        layer.bias.copy_(torch.tensor([100.0, -60.0], dtype=torch.float64))
    model = nn.Sequential(layer).eval()
    images = torch.rand(3, 3, 15, 15, dtype=torch.float64)
    assert (model(images)[:, 1, 7, 7] < 0).all() and (model(images)[:, 0, 7, 7] > 0).all()
    result = run_session(model, ['output'], images)
    expected = np.zeros((15, 15))
    expected[7 - 2:7 + 3, 7 - 2:7 + 3] = kernels[0].clamp(min=0).sum(dim=0).numpy()
    np.testing.assert_allclose(result.map('output'), expected, rtol=0, atol=1e-12)
    both = kernels.sum(dim=0).clamp(min=0).sum(dim=0).numpy()
    assert np.abs(both - expected[5:10, 5:10]).max() > 0.1  # the mutations' map differs


def test_stacked_linear_convs_give_box_filter_convolution():
    ones = torch.ones(1, 3, 3, 3, dtype=torch.float64)
    model = nn.Sequential(conv(3, 1, ones, 10.0),
                          conv(1, 1, torch.ones(1, 1, 3, 3, dtype=torch.float64), 10.0),
                          conv(1, 1, torch.ones(1, 1, 3, 3, dtype=torch.float64), 10.0))
    model = model.double().eval()
    result = run_session(model, ['output'], torch.rand(2, 3, 21, 21, dtype=torch.float64))
    # box * box * box in 1-d, per input channel, summed over the 3 channels
    profile = np.convolve(np.convolve(np.ones(3), np.ones(3)), np.ones(3))
    expected = np.zeros((21, 21))
    expected[10 - 3:10 + 4, 10 - 3:10 + 4] = 3 * np.outer(profile, profile)
    np.testing.assert_allclose(result.map('output'), expected, atol=1e-12)


def test_response_point_moves_the_map():
    kernel = torch.zeros(1, 3, 3, 3, dtype=torch.float64)
    kernel[0, :, 1, 1] = 1.0
    model = nn.Sequential(conv(3, 1, kernel, 1.0)).double().eval()
    result = run_session(model, ['output'], torch.rand(1, 3, 20, 20, dtype=torch.float64),
                         points=PointSpec(point=(0.25, 0.75)))
    assert response_index(20, 20, (0.25, 0.75)) == (5, 15)
    assert np.argwhere(result.map('output') > 0).tolist() == [[5, 15]]


def test_batch_one_equals_batch_four():
    model = ToySegmentor().eval()
    images = torch.randn(4, 3, 32, 32)
    single = run_session(model, ['backbone.1', 'seg_logits'], images, batch_size=1)
    batched = run_session(model, ['backbone.1', 'seg_logits'], images, batch_size=4)
    for name in single.maps:
        np.testing.assert_allclose(batched.map(name), single.map(name), rtol=1e-5,
                                   atol=1e-9)


def test_several_targets_in_one_pass_equal_separate_passes():
    model = ToySegmentor().eval()
    images = torch.randn(3, 3, 32, 32)
    targets = ['backbone.0', 'backbone.1', 'decode_head', 'seg_logits', 'backbone.stem.0']
    together = run_session(model, targets, images, batch_size=3)
    for name in targets:
        alone = run_session(model, [name], images, batch_size=3)
        np.testing.assert_allclose(together.map(name), alone.map(name), rtol=1e-6,
                                   atol=1e-12)


def test_backbone_only_targets_never_run_the_decode_head():
    model = ToySegmentor().eval()
    run_session(model, ['backbone.1', 'backbone.0'], torch.randn(2, 3, 16, 16))
    assert model.decode_head.calls == 0
    run_session(model, ['decode_head'], torch.randn(1, 3, 16, 16))
    assert model.decode_head.calls == 1


def test_module_target_stops_the_forward_early():
    model = ToySegmentor().eval()
    calls = []
    model.backbone.stage2.register_forward_hook(lambda *a: calls.append(1))
    run_session(model, ['backbone.stem'], torch.randn(1, 3, 16, 16))
    assert calls == []


def test_all_and_negative_index_resolve():
    model = ToySegmentor().eval()
    taps = FeatureTaps(model, ['all'])
    feats = taps(torch.randn(1, 3, 16, 16))
    assert list(feats) == ['backbone.0', 'backbone.1', 'decode_head']
    taps = FeatureTaps(model, ['backbone.-1'])
    taps(torch.randn(1, 3, 16, 16))
    assert taps.names == ['backbone.1']


@pytest.mark.parametrize('name, fragment', [
    ('backbone.7', 'out of range'), ('neck.0', 'has no neck'), ('head', 'unknown target'),
    ('output', 'unknown target')])
def test_bad_target_names_list_the_valid_ones(name, fragment):
    with pytest.raises(TargetError) as info:
        FeatureTaps(ToySegmentor(), [name])
    assert fragment in str(info.value)
    assert 'backbone.0, backbone.1, decode_head, seg_logits' in str(info.value)


def test_token_outputs_are_reshaped():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Conv2d(3, 4, 4, stride=4)
            self.block = nn.Identity()

        def forward(self, x):
            return self.block(self.proj(x).flatten(2).transpose(1, 2))  # (B, L, C)

    model = Tokens().eval()
    feats = FeatureTaps(model, ['block'])(torch.randn(2, 3, 32, 32))
    assert feats['block'].shape == (2, 4, 8, 8)
    with pytest.raises(TargetError, match='spatial size is unknown'):
        FeatureTaps(model, ['block'])(torch.randn(2, 3, 32, 48))


def test_nan_maps_are_skipped_and_counted():
    model = NaNOnNegativeMean().eval()
    images = torch.randn(6, 3, 12, 12) * 0.1
    images[[1, 4]] -= 1.0   # negative mean -> NaN
    images[[0, 2, 3, 5]] += 1.0
    result = run_session(model, ['output'], images, batch_size=3)
    assert (result.num_images, result.skipped) == (4, 2)
    clean = run_session(model, ['output'], images[[0, 2, 3, 5]], batch_size=2)
    np.testing.assert_allclose(result.map('output'), clean.map('output'), rtol=1e-6)
    assert np.isfinite(result.map('output')).all()


def test_class_index_restricts_logit_targets():
    model = ToySegmentor().eval()
    images = torch.randn(2, 3, 16, 16, requires_grad=True)
    feats = FeatureTaps(model, ['decode_head'])(images)
    one = input_gradient_maps(feats, images, class_index=2)['decode_head']
    logits = FeatureTaps(model, ['decode_head'])(images)['decode_head']
    score = torch.relu(logits[:, 2, 4, 4]).sum()
    (grad, ) = torch.autograd.grad(score, images)
    np.testing.assert_allclose(one.numpy(), grad.clamp(min=0).sum(1).double().numpy(),
                               rtol=1e-6)
    with pytest.raises(ValueError, match='out of range'):
        input_gradient_maps(FeatureTaps(model, ['decode_head'])(images), images,
                            class_index=9)


def test_training_mode_is_refused():
    model = ToySegmentor().train()
    session = ERFSession(model, ['backbone.0'], num_images=1)
    with pytest.raises(RuntimeError, match='model.eval'):
        session.process(torch.randn(1, 3, 8, 8))


def test_positions_beyond_limit_and_dataset_length_are_dropped():
    kernel = torch.randn(1, 3, 3, 3, dtype=torch.float64)
    model = nn.Sequential(conv(3, 1, kernel, 50.0)).double().eval()
    session = ERFSession(model, ['output'], num_images=5)
    x = torch.rand(4, 3, 9, 9, dtype=torch.float64)
    assert session.process(x, positions=[0, 2, 4, 6], limit=100) == 3
    assert session.process(x, positions=[1, 3, 5, 7], limit=4) == 2
    assert session.accumulator.images == 5
