import numpy as np
import pytest
import torch
from PIL import Image

from mmseg_erf.engine import fit_square
from mmseg_erf.engine.geometry import fit_label_square, square_geometry

# odd shapes where truncating the long side and rounding the crop offset matter
ODD_SHAPES = [(98, 147), (147, 98), (63, 64), (65, 200)]


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


def torchvision_geometry(h, w, size):
    """torchvision's Resize(size) + CenterCrop(size), written out as the reference."""
    short, long = min(h, w), max(h, w)
    new_long = max(size, int(size * long / short))
    new_h, new_w = (size, new_long) if h <= w else (new_long, size)
    return new_h, new_w, int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))


@pytest.mark.parametrize('size', [64, 63])
@pytest.mark.parametrize('h, w', ODD_SHAPES)
def test_square_geometry_is_torchvisions(h, w, size):
    assert square_geometry(h, w, size) == torchvision_geometry(h, w, size)


def nearest_source(size, new, offset, old):
    """Source index of each output pixel of a nearest resize ``old -> new`` then a crop
    at ``offset``: torch's 'nearest' reads ``floor(dst * old / new)``."""
    return np.floor((np.arange(size) + offset) * old / new).astype(np.int64)


@pytest.mark.parametrize('size', [64, 63])
@pytest.mark.parametrize('h, w', ODD_SHAPES)
def test_label_pixels_come_from_the_image_geometry(h, w, size):
    """A label map whose value is its own (row, column) index: after
    fit_label_square each pixel names the source pixel the image geometry (new
    sides, crop box) puts there, on both axes."""
    new_h, new_w, top, left = torchvision_geometry(h, w, size)
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
    index = torch.from_numpy(rows * 1000 + cols)
    out = fit_label_square(index, size).numpy()
    assert out.shape == (size, size) and out.dtype == np.int64
    np.testing.assert_array_equal(out // 1000, nearest_source(size, new_h, top, h)[:, None]
                                  .repeat(size, 1))
    np.testing.assert_array_equal(out % 1000, nearest_source(size, new_w, left, w)[None]
                                  .repeat(size, 0))


@pytest.mark.parametrize('h, w', ODD_SHAPES)
def test_image_and_label_crops_share_the_crop_box(h, w):
    """Where the short side is already S nothing is resampled: the image and its label
    map, the same ramp, must come out identical (a crop one pixel off shows)."""
    size = min(h, w)
    ramp = torch.arange(h * w, dtype=torch.int64).reshape(h, w)
    image = fit_square(ramp[None].double(), size)[0]
    torch.testing.assert_close(image, fit_label_square(ramp, size).double(), rtol=0, atol=0)


def test_geometry_errors_name_the_input():
    with pytest.raises(ValueError, match='input size must be positive, got 0'):
        square_geometry(10, 10, 0)
    with pytest.raises(ValueError, match='empty 0 x 5 image'):
        fit_label_square(torch.zeros(0, 5, dtype=torch.int64), 4)
