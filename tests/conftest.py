import os

import pytest
import torch

# Two cores on CI: keep torch from oversubscribing them when pytest-xdist is not used.
torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get('MMSEG_ERF_SHARED', os.path.join(os.path.dirname(REPO), 'shared'))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)

TINY_CONFIG = os.path.join(REPO, 'configs', 'demo', 'upernet_r18-tiny_imagefolder.py')
FIXTURES = os.path.join(REPO, 'tests', 'fixtures')


def make_voc_tree(root, splits=(('train', 6), ('val', 5)), labels=True, size=(48, 72)):
    """A VOC-like tree of coloured-rectangle images and their class-index labels."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    h, w = size
    colours = np.array([[0, 0, 0], [220, 30, 30], [30, 220, 30], [30, 30, 220]], np.uint8)
    for split, count in splits:
        os.makedirs(os.path.join(root, 'images', split), exist_ok=True)
        if labels:
            os.makedirs(os.path.join(root, 'labels', split), exist_ok=True)
        for i in range(count):
            label = np.zeros((h, w), np.uint8)
            for cls in (1, 2, 3):
                y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
                label[y:y + rng.integers(6, h // 2), x:x + rng.integers(6, w // 2)] = cls
            image = colours[label] + rng.integers(0, 30, (h, w, 3)).astype(np.uint8)
            Image.fromarray(image).save(os.path.join(root, 'images', split, f'{split}_{i:02d}.jpg'))
            if labels:
                Image.fromarray(label).save(os.path.join(root, 'labels', split,
                                                         f'{split}_{i:02d}.png'))
    return str(root)


def interrupt_feed_after(monkeypatch, batches: int):
    """Ctrl-C inside a run: the run loop raises KeyboardInterrupt when it is handed
    batch ``batches + 1``. Returns the function that puts the real loop back."""
    import mmseg_erf.run.loop as loop
    real, calls = loop.feed_batch, []

    def feed(*args, **kwargs):
        if len(calls) == batches:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, 'feed_batch', feed)
    return lambda: monkeypatch.setattr(loop, 'feed_batch', real)


@pytest.fixture
def voc_tree(tmp_path):
    return make_voc_tree(tmp_path / 'data')
