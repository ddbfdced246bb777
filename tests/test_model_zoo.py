"""Every model family of mmseg 1.2.2's configs: the tool's maps, and its ``seg_logits``
ERF against one computed directly from the segmentor's own ``encode_decode``.

One representative config per family (``tests/zoo_cases.py``), random weights, one
random image at a small size, ``targets=['all', 'seg_logits']`` through
``compute_erf``. Depth estimation (VPD) is not segmentation and is not listed.

Mutations these catch: the plain runner (``head_runner=None``: DANet's tuple,
PointRend's ``PointHead(feats, out)``, MaskFormer's queries all fail or differ);
dropping the per-image seed of random heads (SegNeXt's reference, drawn under
``image_seed(0)``, differs from the tool's maps). A head kind in ``HEAD_KINDS``
that no family reaches (SAN's, once: its segmentor is no ``EncoderDecoder``) fails
:func:`test_every_head_kind_serves_a_family_that_runs`.
"""
import importlib.util

import numpy as np
import pytest
import torch

from zoo_cases import ZOO

from mmseg_erf import compute_erf
from mmseg_erf.engine import TargetError
from mmseg_erf.engine.session import frozen_parameters
from mmseg_erf.errors import ERFUsageError
from mmseg_erf.heads import HEAD_KINDS, image_metas, image_seed
from mmseg_erf.segmentor import batch_inputs, build_segmentor, load_config

# the segmentors head_runner_for runs heads of; any other is refused for the logit targets
HEAD_RUNNER_SEGMENTORS = ('EncoderDecoder', 'CascadeEncoderDecoder')


def _image(size: int) -> torch.Tensor:
    return torch.randint(0, 256, (3, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))


def _encode_decode(model, inputs):
    size = inputs.shape[-1]
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(image_seed(0))  # the tool's seed of image 0
        return model.encode_decode(inputs, image_metas((size, size), 1))


def _response_point(logits: torch.Tensor):
    """The centre, or the pixel nearest to it with a positive logit: random weights
    can leave every class negative at the centre (KNet, UNet), and relu(response)
    then has no gradient to compare."""
    size = logits.shape[-1]
    positive = (logits[0] > 0).any(dim=0)
    ys, xs = torch.nonzero(positive, as_tuple=True)
    assert len(ys), 'no positive logit anywhere: nothing to compare'
    distance = (ys - size // 2) ** 2 + (xs - size // 2) ** 2
    k = int(torch.argmin(distance))
    y, x = int(ys[k]), int(xs[k])
    return (y + 0.5) / size, (x + 0.5) / size, y, x


@pytest.mark.parametrize('case', ZOO, ids=[c.family for c in ZOO])
def test_family_maps_match_encode_decode(case):
    if case.needs and importlib.util.find_spec(case.needs) is None:
        with pytest.raises(ERFUsageError, match=f'builds from {case.needs}, which does not '
                                                f'import here .*; install it: pip install'):
            build_segmentor(case.name, cfg_options=case.options or None)
        return
    model, _, _ = build_segmentor(case.name, cfg_options=case.options or None)
    size = case.size
    batch = dict(inputs=[_image(size)])
    if case.refusal:
        with pytest.raises((TargetError, ERFUsageError), match=case.refusal):
            compute_erf(model, iter([batch]), targets=['all', 'seg_logits'], num_images=1,
                        input_size=size)
        return
    inputs = batch_inputs(model, batch, size).detach().requires_grad_(True)
    with frozen_parameters(model):  # input gradients only, as the tool
        logits = _encode_decode(model, inputs)
        assert logits.shape[-2:] == (size, size)
        point_y, point_x, y, x = _response_point(logits.detach())
        (grad, ) = torch.autograd.grad(torch.relu(logits[:, :, y, x]).sum(), inputs)
    expected = torch.relu(grad).to(torch.float64).sum(dim=1)[0].numpy()
    del logits, grad

    torch.manual_seed(12345)  # the global RNG must not decide a random head's draws
    result = compute_erf(model, iter([batch]), targets=['all', 'seg_logits'], num_images=1,
                         input_size=size, point=(point_y, point_x))

    assert result.num_images == 1 and result.skipped == 0
    assert 'decode_head' in result.maps and any(n.startswith('backbone.') for n in result.maps)
    for name in result.targets:
        erf = result.map(name)
        assert erf.shape == (size, size) and np.isfinite(erf).all(), name
    assert expected.max() > 0
    error = np.abs(result.map('seg_logits') - expected).max() / expected.max()
    assert error <= 1e-4, f'{case.family}: seg_logits ERF differs by {error:.2e} (relative)'


def test_every_head_kind_serves_a_family_that_runs():
    """Configs only, nothing built: each family whose segmentor has no head runner is
    listed as refused, and each head kind with classes adapts the last decode head of
    some family that runs, so no adapter is dead code."""
    from mmseg.registry import MODELS
    import mmseg.models  # noqa: F401  (registers the heads)
    served = set()
    for case in ZOO:
        if case.needs and importlib.util.find_spec(case.needs) is None:
            continue
        model_cfg = load_config(case.name, case.options or None).model
        if model_cfg.type not in HEAD_RUNNER_SEGMENTORS:
            assert case.refusal, f'{case.family}: {model_cfg.type} has no head runner'
            continue
        heads = model_cfg.decode_head
        last = heads[-1] if isinstance(heads, (list, tuple)) else heads
        served.update(c.__name__ for c in MODELS.get(last.type).__mro__)
    for kind in HEAD_KINDS:
        assert not kind.classes or served & set(kind.classes), \
            f'no family that runs has a head of kind {kind.name!r}'
