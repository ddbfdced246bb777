"""ImageFolderDataset: any folder of images, through a config's own val pipeline."""
import logging
import os
import os.path as osp
from typing import List, Optional, Sequence

from mmengine.logging import print_log
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
LABEL_LOADERS = ('LoadAnnotations', 'mmseg.LoadAnnotations')


def list_images(folder: str, suffixes: Sequence[str] = IMAGE_SUFFIXES,
                recursive: bool = False) -> List[str]:
    """Image paths under ``folder`` relative to it, sorted, suffixes case-insensitive."""
    suffixes = tuple(s.lower() for s in suffixes)
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in files:
            if name.lower().endswith(suffixes) and not name.startswith('.'):
                found.append(osp.relpath(osp.join(root, name), folder))
        if not recursive:
            break
    return sorted(found)


@DATASETS.register_module()
class ImageFolderDataset(BaseSegDataset):
    """Plain image folders in the VOC-like layout, labels optional.

    ::

        data_root/
          images/val/aachen_001.jpg ...      (data_prefix.img_path)
          labels/val/aachen_001.png ...      (data_prefix.seg_map_path, optional)

    Images are listed in sorted order; a label is the image's stem plus
    ``seg_map_suffix`` in the label folder. When the label folder is absent (or
    ``seg_map_path`` is empty) the dataset is unlabelled and any
    ``LoadAnnotations`` step is dropped from the pipeline, so a config's own val
    pipeline runs unchanged on folders without ground truth.

    Args:
        data_root (str): root folder; prefixes below are relative to it.
        data_prefix (dict): ``img_path`` and optional ``seg_map_path``.
            Default ``dict(img_path='images/val', seg_map_path='labels/val')``.
        img_suffix (str | Sequence[str]): suffixes accepted (any case).
            Default: the common image suffixes.
        seg_map_suffix (str): label suffix. Default '.png'.
        recursive (bool): also list sub-folders. Default False.
        **kwargs: passed to mmseg's ``BaseSegDataset`` (pipeline, metainfo,
            test_mode, indices, reduce_zero_label...).
    """
    METAINFO: dict = dict()

    def __init__(self, data_root: Optional[str] = None,
                 data_prefix: Optional[dict] = None,
                 img_suffix: Sequence[str] = IMAGE_SUFFIXES, seg_map_suffix: str = '.png',
                 recursive: bool = False, pipeline: Sequence = (), **kwargs):
        data_prefix = dict(data_prefix or dict(img_path='images/val',
                                               seg_map_path='labels/val'))
        data_prefix.setdefault('seg_map_path', '')
        self.recursive = recursive
        img_dir = _join(data_root, data_prefix['img_path'])
        if not osp.isdir(img_dir):
            raise FileNotFoundError(
                f'image folder {img_dir} does not exist; set data_root/data_prefix '
                f'(img_path) to a folder of images')
        label_dir = _join(data_root, data_prefix['seg_map_path']) \
            if data_prefix['seg_map_path'] else ''
        self.has_labels = bool(label_dir) and osp.isdir(label_dir)
        if not self.has_labels:
            data_prefix['seg_map_path'] = ''
            pipeline = [t for t in pipeline if not (isinstance(t, dict)
                                                    and t.get('type') in LABEL_LOADERS)]
        metainfo = dict(kwargs.pop('metainfo', None) or {})
        if not metainfo.get('classes'):
            if self.has_labels:
                raise ValueError(
                    f'ImageFolderDataset over {img_dir} has labels but no class names; '
                    f'pass metainfo=dict(classes=(...)) in the dataset config')
            # mmseg insists on class names in test mode; an unlabelled folder has none
            metainfo['classes'] = ('unlabelled', )
        suffixes = (img_suffix, ) if isinstance(img_suffix, str) else tuple(img_suffix)
        super().__init__(data_root=data_root, data_prefix=data_prefix, img_suffix=suffixes,
                         seg_map_suffix=seg_map_suffix, pipeline=list(pipeline),
                         metainfo=metainfo, **kwargs)

    def prepare_data(self, idx: int):
        """Run the pipeline; a file that does not decode becomes a placeholder.

        The placeholder has ``inputs=None`` (the ERF loop counts it as skipped)
        and the same keys as a packed sample, so batches still collate. Any
        other pipeline error is raised as usual.
        """
        try:
            return super().prepare_data(idx)
        except Exception:
            return unreadable_placeholder(self.get_data_info(idx)['img_path'])

    def load_data_list(self) -> List[dict]:
        img_dir = self.data_prefix['img_path']
        # BaseDataset joins an empty prefix to data_root, so test the flag, not the path
        label_dir = self.data_prefix['seg_map_path'] if self.has_labels else ''
        names = list_images(img_dir, self.img_suffix, self.recursive)
        if not names:
            raise FileNotFoundError(
                f'no image with suffix {"/".join(self.img_suffix)} in {img_dir}'
                f'{" (recursively)" if self.recursive else ""}; point img_path at a '
                f'folder of images{"" if self.recursive else " or set recursive=True"}')
        data_list, missing = [], []
        for name in names:
            info = dict(img_path=osp.join(img_dir, name), label_map=self.label_map,
                        reduce_zero_label=self.reduce_zero_label, seg_fields=[])
            if label_dir:
                seg = osp.join(label_dir, osp.splitext(name)[0] + self.seg_map_suffix)
                if not osp.isfile(seg):
                    missing.append(seg)
                info['seg_map_path'] = seg
            data_list.append(info)
        if missing:
            raise FileNotFoundError(
                f'{len(missing)} of {len(names)} images have no label in {label_dir} '
                f'(first: {missing[0]}); add them, or drop seg_map_path for an '
                f'unlabelled folder')
        print_log(f'ImageFolderDataset: {len(data_list)} images in {img_dir}'
                  f'{" with labels" if label_dir else " (no labels)"}', logger='current')
        return data_list


def unreadable_placeholder(path: str) -> dict:
    """Call while handling a pipeline error for ``path``.

    Re-raises the error when the file decodes (the pipeline itself failed);
    otherwise warns once and returns a sample with ``inputs=None`` and the keys
    of a packed sample, which the ERF loop counts as skipped.
    """
    if _decodes(path):
        raise  # noqa: PLE0704  (re-raises the error being handled by the caller)
    from mmseg.structures import SegDataSample
    print_log(f'skipping {path}: not a readable image', logger='current',
              level=logging.WARNING)
    return dict(inputs=None, data_samples=SegDataSample(metainfo=dict(img_path=path)))


def _decodes(path: str) -> bool:
    import mmcv
    from mmengine import fileio
    try:
        return mmcv.imfrombytes(fileio.get(path)) is not None
    except Exception:
        return False


def _join(root: Optional[str], path: str) -> str:
    return osp.join(root, path) if root and path and not osp.isabs(path) else (path or root)
