"""ERFResizeCrop: the fixed S x S geometry as an mmseg pipeline step."""
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from ..engine.geometry import fit_label_square, fit_square


@TRANSFORMS.register_module()
class ERFResizeCrop(BaseTransform):
    """Resize the short side to ``size`` and centre-crop ``size x size``.

    The geometry of VMamba's ERF script (see :func:`mmseg_erf.engine.fit_square`).
    It replaces the config's resize steps when an ERF is computed, so each image
    is resampled once, from the original. The image stays float32 (values of an
    8-bit image, rounded) so no second rounding happens; every segmentation map
    loaded (``gt_seg_map`` and the other ``seg_fields``) goes through
    :func:`~mmseg_erf.engine.geometry.fit_label_square`: nearest neighbours on
    the image's own new sides and crop box.

    Required keys: img. Modified keys: img, img_shape, the ``seg_fields``
    (gt_seg_map, optional). Added keys: erf_size.

    Args:
        size (int): side of the square the model receives.
    """

    def __init__(self, size: int):
        if int(size) <= 0:
            raise ValueError(f'ERFResizeCrop size must be positive, got {size}')
        self.size = int(size)

    def transform(self, results: dict) -> dict:
        img = results['img']
        if img.ndim == 2:
            img = img[..., None]
        tensor = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
        results['img'] = fit_square(tensor, self.size).permute(1, 2, 0).numpy()
        results['img_shape'] = (self.size, self.size)
        for key in dict.fromkeys([*results.get('seg_fields', []), 'gt_seg_map']):
            if results.get(key) is not None:
                results[key] = self._fit_label(results[key])
        results['erf_size'] = self.size
        return results

    def _fit_label(self, seg: np.ndarray) -> np.ndarray:
        # int64 because torch has no tensor type for some numpy label dtypes (uint32)
        label = torch.from_numpy(np.ascontiguousarray(seg).astype(np.int64))
        return fit_label_square(label, self.size).numpy().astype(seg.dtype)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(size={self.size})'
