import os

import pytest
from mmengine.registry import init_default_scope

from mmseg_erf.datasets import ImageFolderDataset, list_images

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
