import os

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope

from mmseg_erf.datasets import ERFResizeCrop, ImageFolderDataset, list_images
from mmseg_erf.engine.geometry import fit_label_square, fit_square

from conftest import make_voc_tree

PIPELINE = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
            dict(type='PackSegInputs')]
CLASSES = dict(classes=('background', 'red', 'green', 'blue'))


@pytest.fixture(autouse=True)
def _scope():
    init_default_scope('mmseg')


def test_labelled_tree(voc_tree):
    ds = ImageFolderDataset(data_root=voc_tree, pipeline=PIPELINE, metainfo=CLASSES,
                            test_mode=True)
    assert len(ds) == 5 and ds.has_labels
    assert [os.path.basename(ds.get_data_info(i)['img_path']) for i in range(len(ds))] == \
        [f'val_{i:02d}.jpg' for i in range(5)]
    sample = ds[0]
    assert sample['data_samples'].gt_sem_seg.data.shape == (1, 48, 72)


def test_unlabelled_tree_drops_load_annotations(tmp_path):
    root = make_voc_tree(tmp_path / 'd', labels=False)
    ds = ImageFolderDataset(data_root=root, pipeline=PIPELINE, test_mode=True)
    assert not ds.has_labels
    assert [type(t).__name__ for t in ds.pipeline.transforms] == \
        ['LoadImageFromFile', 'PackSegInputs']
    sample = ds[1]
    assert sample['inputs'].shape == (3, 48, 72)
    assert 'gt_sem_seg' not in sample['data_samples']


def test_recursive_sorted_suffixes(tmp_path):
    for rel in ('b/2.PNG', 'a/1.jpeg', 'c.JPG', 'notes.txt', 'b/.hidden.jpg'):
        path = tmp_path / 'imgs' / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b'')
    assert list_images(str(tmp_path / 'imgs')) == ['c.JPG']
    assert list_images(str(tmp_path / 'imgs'), recursive=True) == ['a/1.jpeg', 'b/2.PNG',
                                                                    'c.JPG']


def test_errors_name_the_fix(tmp_path, voc_tree):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        ImageFolderDataset(data_root=str(tmp_path / 'nowhere'))
    (tmp_path / 'empty' / 'images' / 'val').mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match='no image'):
        ImageFolderDataset(data_root=str(tmp_path / 'empty'))
    os.remove(os.path.join(voc_tree, 'labels', 'val', 'val_03.png'))
    with pytest.raises(FileNotFoundError, match='1 of 5 images have no label'):
        ImageFolderDataset(data_root=voc_tree, metainfo=CLASSES)
    with pytest.raises(ValueError, match='no class names'):
        ImageFolderDataset(data_root=voc_tree, test_mode=True)


@pytest.mark.parametrize('size', [64, 63])
@pytest.mark.parametrize('h, w', [(98, 147), (147, 98), (63, 64), (65, 200)])
def test_resize_crop_puts_every_label_map_on_its_image_pixels(h, w, size):
    """ERFResizeCrop's image is fit_square of the original and every seg field is
    fit_label_square of its original: the labels follow the image's new sides and
    crop box (98 x 147 at 64 once gave labels 95 wide under a 96-wide image, and
    seg fields other than gt_seg_map were left at the original size).
    """
    rng = np.random.default_rng(h * w + size)
    image = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    marker = np.zeros((h, w), np.uint8)
    marker[h // 2, w // 2] = 1
    results = dict(img=image, gt_seg_map=image[..., 0].copy(), gt_marker=marker,
                   seg_fields=['gt_seg_map', 'gt_marker'])
    out = ERFResizeCrop(size).transform(results)

    expected_image = fit_square(torch.from_numpy(image).permute(2, 0, 1), size)
    np.testing.assert_array_equal(out['img'], expected_image.permute(1, 2, 0).numpy())
    for key, original in (('gt_seg_map', image[..., 0]), ('gt_marker', marker)):
        assert out[key].shape == (size, size) and out[key].dtype == np.uint8, key
        np.testing.assert_array_equal(
            out[key], fit_label_square(torch.from_numpy(original), size).numpy(), key)
    assert out['img_shape'] == (size, size) and out['erf_size'] == size


def test_resize_crop_labels_name_their_source_pixels():
    """98 x 147 at S = 64: the image's new width is int(64 * 147 / 98) = 96, crop left 16;
    a label map of column indices must read floor((j + 16) * 147 / 96) at column j."""
    cols = np.tile(np.arange(147, dtype=np.int32), (98, 1))
    out = ERFResizeCrop(64).transform(dict(img=np.zeros((98, 147, 3), np.uint8),
                                           gt_seg_map=cols))['gt_seg_map']
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out[0], np.floor((np.arange(64) + 16) * 147 / 96))
