"""Where a run's images (and labels) come from: one dataset builder for every door.

A folder, a list of paths or the config's test dataset, on the config's own test
pipeline with its resize replaced by the fixed ERF geometry (``ERFResizeCrop``), and
with the label maps loaded when the point set needs them.
"""
import os
import os.path as osp
from typing import List, Optional, Sequence

import numpy as np
import torch

from ..engine.geometry import fit_label_square
from ..errors import ERFUsageError
from .request import ERFRequest


class PathDataset(torch.utils.data.Dataset):
    """A list of image files run through a pipeline (for ``images=[...]``)."""

    def __init__(self, paths: Sequence[str], pipeline):
        from mmcv.transforms import Compose
        missing = [p for p in paths if not osp.isfile(p)]
        if missing:
            raise FileNotFoundError(f'image {missing[0]} does not exist '
                                    f'({len(missing)} of {len(paths)} missing)')
        self.paths = list(paths)
        self.pipeline = Compose(pipeline)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        from ..datasets import unreadable_placeholder
        path = self.paths[index]
        try:
            return self.pipeline(dict(img_path=path, seg_fields=[]))
        except Exception:
            return unreadable_placeholder(path)


def image_dataset(images, pipeline, recursive: bool = False,
                  classes: Optional[Sequence[str]] = None):
    """A dataset over a folder (``ImageFolderDataset``) or a list of image paths."""
    from ..datasets import ImageFolderDataset
    if isinstance(images, (str, os.PathLike)):
        images = str(images)
        if not osp.isdir(images):
            raise FileNotFoundError(f'image folder {images} does not exist; pass a folder '
                                    f'of images, a list of paths or a dataloader')
        return ImageFolderDataset(data_prefix=dict(img_path=images, seg_map_path=''),
                                  pipeline=pipeline, recursive=recursive,
                                  metainfo=dict(classes=tuple(classes or ('unlabelled', ))),
                                  test_mode=True)
    return PathDataset([str(p) for p in images], pipeline)


def with_label_loading(pipeline: Sequence[dict]) -> List[dict]:
    """An ERF pipeline that loads labels: LoadAnnotations before ERFResizeCrop if absent."""
    steps = [dict(t) for t in pipeline]
    kinds = [str(t.get('type', '')).split('.')[-1] for t in steps]
    if 'LoadAnnotations' not in kinds:
        steps.insert(kinds.index('ERFResizeCrop'), dict(type='LoadAnnotations'))
    return steps


def labelled_folder(images: str, labels: str, pipeline: Sequence[dict],
                    class_names: Optional[Sequence[str]] = None, recursive: bool = False):
    """An ``ImageFolderDataset`` of images and their label maps on the ERF pipeline."""
    from ..datasets import ImageFolderDataset
    for kind, folder in (('image', images), ('label', labels)):
        if not osp.isdir(str(folder)):
            raise FileNotFoundError(f'{kind} folder {folder} does not exist; pass a '
                                    f'folder of {kind}s')
    pipeline = with_label_loading(pipeline)
    # read the labels as the config reads its own (ADE20K configs: reduce_zero_label,
    # so value 0 is ignored and k becomes class k - 1)
    loader = next(t for t in pipeline if str(t.get('type')).split('.')[-1] == 'LoadAnnotations')
    reduce_zero_label = bool(loader.get('reduce_zero_label') or False)
    return ImageFolderDataset(
        data_prefix=dict(img_path=str(images), seg_map_path=str(labels)),
        pipeline=pipeline, recursive=recursive, reduce_zero_label=reduce_zero_label,
        metainfo=dict(classes=tuple(class_names or ('unnamed', ))), test_mode=True)


def config_classes(cfg) -> Optional[List[str]]:
    """The class names of the config's test (or val) dataset, if it names them."""
    from mmseg.registry import DATASETS
    source = _config_source(cfg)
    if source is None or not isinstance(source.get('type'), str):
        return None
    classes = (source.get('metainfo') or {}).get('classes') or \
        getattr(DATASETS.get(source['type']), 'METAINFO', {}).get('classes')
    return list(classes) if classes else None


def _config_source(cfg):
    if cfg is None:
        return None
    return (cfg.get('test_dataloader') or cfg.get('val_dataloader') or {}).get('dataset')


def build_dataset(request: ERFRequest, cfg):
    """The request's images (folder, paths, or the config's test dataset) on the ERF
    pipeline of ``cfg`` (None: a plain load-and-pack pipeline)."""
    from ..segmentor import config_pipeline, erf_pipeline
    pipeline = erf_pipeline(config_pipeline(cfg) if cfg is not None else None,
                            request.input_size, keep_labels=request.points.needs_labels)
    classes = config_classes(cfg) if cfg is not None else None
    if request.images is not None and request.labels is not None:
        return labelled_folder(request.images, request.labels, pipeline,
                               request.points.class_names or classes, request.recursive)
    if request.images is not None:
        return image_dataset(request.images, pipeline, request.recursive, classes)
    source = _config_source(cfg)
    if source is None:
        raise ERFUsageError(f'{getattr(cfg, "filename", "the config")} has no '
                            f'test_dataloader.dataset; pass --img-dir with a folder of images')
    from mmseg.registry import DATASETS
    source = source.copy()
    source['pipeline'] = pipeline
    try:
        return DATASETS.build(source)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"the config's test dataset is not on disk ({error}); "
                                f"pass --img-dir with a folder of images") from None


def dataset_classes(dataset) -> Optional[List[str]]:
    meta = getattr(dataset, 'metainfo', None) or {}
    classes = meta.get('classes')
    return list(classes) if classes else None


def loader_for(dataset, request: ERFRequest, start: int = 0):
    """This rank's batches of ``dataset`` in order, from its ``start``-th sample on."""
    from mmengine.dataset import DefaultSampler, pseudo_collate
    sampler = list(DefaultSampler(dataset, shuffle=False, round_up=True))[start:]
    return torch.utils.data.DataLoader(
        dataset, batch_size=request.batch_size, num_workers=request.num_workers,
        sampler=sampler, collate_fn=pseudo_collate, persistent_workers=False)


def batch_labels(batch: dict, input_size: int) -> List[Optional[np.ndarray]]:
    """Each sample's ``gt_sem_seg`` at the ERF geometry (S x S), None where absent."""
    samples = batch.get('data_samples') or [None] * len(batch['inputs'])
    labels = []
    for sample in samples:
        seg = getattr(sample, 'gt_sem_seg', None) if sample is not None else None
        data = getattr(seg, 'data', None) if seg is not None else None
        if data is None:
            labels.append(None)
            continue
        data = torch.as_tensor(data)
        labels.append(fit_label_square(data[0] if data.dim() == 3 else data,
                                       input_size).cpu().numpy())
    return labels


def image_identity(dataset, count: int) -> Optional[dict]:
    """Which images a run used, for pairing two runs in ``erf_compare``: the count and
    a SHA-1 of the first ``count`` image paths in dataset order (their position gives
    their bucket, so equal hashes mean the same images in the same buckets). None
    when the dataset does not say where its images come from."""
    import hashlib
    paths = []
    try:
        for i in range(min(int(count), len(dataset))):
            if isinstance(dataset, PathDataset):
                paths.append(osp.abspath(dataset.paths[i]))
            else:
                paths.append(osp.abspath(str(dataset.get_data_info(i)['img_path'])))
    except (AttributeError, KeyError, TypeError, IndexError):
        return None
    digest = hashlib.sha1('\n'.join(paths).encode()).hexdigest()
    return dict(count=len(paths), sha1=digest)
