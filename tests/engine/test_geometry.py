import numpy as np
import pytest
import torch
from PIL import Image

from mmseg_erf.engine import fit_square


def test_square_input_passes_through_unchanged():
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    out = fit_square(image, 64)
    assert out.dtype == torch.float32
    assert torch.equal(out, image.float())


@pytest.mark.parametrize('h, w', [(48, 80), (90, 60), (100, 100)])
def test_matches_pil_resize_and_centre_crop(h, w):
    """VMamba: torchvision Resize(S) + CenterCrop(S) on a PIL image."""
    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3)).astype(np.uint8)
    array = np.asarray(Image.fromarray(smooth).resize((w, h), Image.BILINEAR))
    size = 40
    scale = size / min(h, w)
    new_w, new_h = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    pil = np.asarray(Image.fromarray(array).resize((new_w, new_h), Image.BICUBIC))
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    expected = pil[top:top + size, left:left + size].astype(np.float32)
    out = fit_square(torch.from_numpy(array).permute(2, 0, 1).contiguous(), size)
    assert out.shape == (3, size, size) and scale > 0
    assert np.abs(out.permute(1, 2, 0).numpy() - expected).max() <= 1.0


def test_crop_is_centred():
    ramp = torch.arange(10.0).repeat(3, 4, 1)   # (3, 4, 10): columns 0..9
    out = fit_square(ramp, 4)
    assert out.shape == (3, 4, 4)
    torch.testing.assert_close(out[0, 0], torch.tensor([3.0, 4.0, 5.0, 6.0]))


@pytest.mark.parametrize('extra, offset', [(1, 0), (3, 2), (5, 2), (7, 4)])
@pytest.mark.parametrize('axis', ['width', 'height'])
def test_odd_crop_differences_round_half_to_even(extra, offset, axis):
    """The crop offset is ``int(round((new - S) / 2))`` as in torchvision's
    ``center_crop``: Python rounds halves to even, so removing 1, 3, 5, 7 pixels
    starts the crop at 0, 2, 2, 4.

    The short side is already S, so nothing is resized and a ramp shows where the
    crop starts, along the long side in both directions (wide and tall images).
    Guards the mutations ``floor`` (3 and 7 pixels: offsets 1 and 3) and
    round-half-up or ``ceil`` (1 and 5 pixels: 1 and 3), in either offset (``left``
    for wide images, ``top`` for tall ones).
    """
    size = 6
    ramp = torch.arange(float(size + extra))
    if axis == 'width':
        image = ramp.repeat(3, size, 1)                       # (3, S, S + extra)
        line = fit_square(image, size)[0, 0]
    else:
        image = ramp[:, None].repeat(3, 1, size)              # (3, S + extra, S)
        line = fit_square(image, size)[0, :, 0]
    torch.testing.assert_close(line, torch.arange(float(size)) + offset)


def test_batch_and_errors():
    assert fit_square(torch.rand(2, 3, 30, 20), 10).shape == (2, 3, 10, 10)
    with pytest.raises(ValueError):
        fit_square(torch.rand(3, 8, 8), 0)
