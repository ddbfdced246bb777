"""ERFResizeCrop: the fixed S x S geometry as an mmseg pipeline step."""
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from ..engine.geometry import fit_square


@TRANSFORMS.register_module()
class ERFResizeCrop(BaseTransform):
    """Resize the short side to ``size`` and centre-crop ``size x size``.

    The geometry of VMamba's ERF script (see :func:`mmseg_erf.engine.fit_square`).
    It replaces the config's resize steps when an ERF is computed, so each image
    is resampled once, from the original. The image stays float32 (values of an
    8-bit image, rounded) so no second rounding happens; a segmentation map, when
    loaded, is resized with nearest neighbours and cropped alike.

    Required keys: img. Modified keys: img, img_shape, gt_seg_map (optional).
    Added keys: erf_size.

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
        if results.get('gt_seg_map') is not None:
            seg = torch.from_numpy(results['gt_seg_map'].astype(np.int64))[None, None].float()
            h, w = seg.shape[-2:]
            scale = self.size / min(h, w)
            size = (max(self.size, int(h * scale)), max(self.size, int(w * scale)))
            seg = torch.nn.functional.interpolate(seg, size=size, mode='nearest')[0, 0]
            top = int(round((size[0] - self.size) / 2.0))
            left = int(round((size[1] - self.size) / 2.0))
            results['gt_seg_map'] = seg[top:top + self.size, left:left + self.size] \
                .numpy().astype(results['gt_seg_map'].dtype)
        results['erf_size'] = self.size
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(size={self.size})'
