"""The two ways to the same maps, on the benchmark's models and images."""
import math
import os
import os.path as osp
import time
import warnings
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

# name -> config; configs that do not exist (yet) are skipped with a note
MODEL_TABLE = {
    'vmamba-t': 'configs/vmamba/vssm1/upernet_vssm_4xb4-160k_ade20k-512x512_tiny.py',
    # first-generation VMamba-T (d_state 16, z-gated SS2D, no MLP)
    'vmamba0-t': 'configs/vmamba/vssm/upernet_vssm_4xb4-160k_ade20k-512x512_tiny.py',
    'r50': 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py',
    'tiny': 'configs/demo/upernet_r18-tiny_imagefolder.py',
}
DEFAULT_MODELS = ('vmamba-t', 'r50')
TARGETS = ('backbone.0', 'backbone.1', 'backbone.2', 'backbone.3', 'decode_head')
AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
GIB = 2 ** 30


# ---- models and images ------------------------------------------------------------
def resolve_config(path: str) -> Optional[str]:
    """File of a config given as a path (absolute, or relative to the working
    directory or the repository) or as ``package::relative/path``; None if absent."""
    if '::' in path:
        package, _, rel = path.partition('::')
        try:
            from mmengine.utils import get_installed_path
            full = osp.join(get_installed_path(package), '.mim', 'configs', rel)
        except Exception:  # package not installed
            return None
        return full if osp.isfile(full) else None
    for candidate in (path, osp.join(REPO, path)):
        if osp.isfile(candidate):
            return osp.abspath(candidate)
    return None


def load_model(config: str, device: str = 'cpu', seed: int = 0,
               cfg_options: Optional[dict] = None):
    """The config's segmentor with mmseg's random initial weights (seeded), eval mode;
    ``cfg_options`` overrides config settings (``--cfg-options``)."""
    from ..segmentor import build_segmentor
    path = resolve_config(config)
    if path is None:
        raise FileNotFoundError(f'config {config} does not exist')
    with warnings.catch_warnings():
        # mmseg's own deprecation notes, printed again by every variant's process
        warnings.filterwarnings('ignore', message='``build_loss`` would be deprecated')
        warnings.filterwarnings('ignore', message='Default ``avg_non_ignore`` is False')
        model, _, _ = build_segmentor(path, device=device, cfg_options=cfg_options,
                                      seed=seed)
    return model


def make_inputs(model, num_images: int, size: int, images: Optional[str] = None,
                seed: int = 0) -> torch.Tensor:
    """``(N, 3, S, S)`` model inputs: random 8-bit images (seeded), or the images of a
    folder (cycled, e.g. ``tools/demo_images.py`` output), each resized and
    centre-cropped to S and normalised by the segmentor's data preprocessor."""
    from ..segmentor import batch_inputs
    if images:
        import mmcv
        files = sorted(f for f in os.listdir(images)
                       if f.lower().endswith(('.jpg', '.jpeg', '.png', '.bmp')))
        if not files:
            raise FileNotFoundError(f'no image in {images}')
        raw = [torch.from_numpy(np.ascontiguousarray(
            mmcv.imread(osp.join(images, files[i % len(files)])))).permute(2, 0, 1)
            for i in range(num_images)]
    else:
        gen = torch.Generator().manual_seed(seed)
        raw = [torch.randint(0, 256, (3, size, size), generator=gen, dtype=torch.uint8)
               for _ in range(num_images)]
    with torch.no_grad():
        return torch.cat([batch_inputs(model, dict(inputs=[img]), size) for img in raw])


def _check_targets(targets: Sequence[str]) -> None:
    for name in targets:
        if name != 'decode_head' and not (name.startswith('backbone.')
                                          and name.split('.', 1)[1].isdigit()):
            raise ValueError(f'the reference recipe takes backbone.<i> (i >= 0) and '
                             f'decode_head, not {name!r}')


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


# ---- the two variants -------------------------------------------------------------
def reference_maps(model, inputs: torch.Tensor, targets: Sequence[str] = TARGETS,
                   times: Optional[list] = None) -> Dict[str, np.ndarray]:
    """(a) The reference recipe: per image, per target, a full forward and a backward.

    Returns ``{target: (H, W) float64 sum over the images}``; appends each image's
    seconds to ``times`` when given.
    """
    from ..engine.targets import as_feature_map
    _check_targets(targets)
    captured = {}

    def hook(_module, _args, output):
        captured['backbone'] = output

    handle = model.backbone.register_forward_hook(hook)
    sums: Dict[str, torch.Tensor] = {}
    try:
        with torch.enable_grad():
            for i in range(inputs.shape[0]):
                start = time.perf_counter()
                for name in targets:
                    x = inputs[i:i + 1].detach().clone().requires_grad_(True)
                    out = model(x, mode='tensor')
                    if name == 'decode_head':
                        feat = out
                    else:
                        index = int(name.split('.', 1)[1])
                        feat = as_feature_map(captured['backbone'][index], name,
                                              tuple(x.shape[-2:]))
                    h, w = feat.shape[2:]
                    score = F.relu(feat[:, :, h // 2, w // 2]).sum()
                    (grad, ) = torch.autograd.grad(score, x)
                    erf = F.relu(grad).sum(dim=(0, 1)).to(torch.float64).cpu()
                    sums[name] = sums[name] + erf if name in sums else erf
                    del out, feat, score, grad
                    captured.clear()
                if times is not None:
                    _sync(str(inputs.device))
                    times.append(time.perf_counter() - start)
    finally:
        handle.remove()
    return {n: sums[n].numpy() for n in targets}


def session_maps(model, inputs: torch.Tensor, targets: Sequence[str] = TARGETS,
                 batch_size: int = 1, times: Optional[list] = None) -> Dict[str, np.ndarray]:
    """(b) mmseg-erf: :class:`ERFSession` over batches of ``batch_size`` images.

    Returns ``{target: (H, W) float64 sum over the images}`` (as (a)); appends
    seconds per image (a batch's time shared by its images, and the result's mean maps
    and metrics shared by all) to ``times``.
    """
    from ..engine import ERFSession
    session = ERFSession(model, targets, num_images=inputs.shape[0])
    for first in range(0, inputs.shape[0], batch_size):
        start = time.perf_counter()
        used = session.process(inputs[first:first + batch_size])
        if times is not None:
            _sync(str(inputs.device))
            times += [(time.perf_counter() - start) / used] * used
    # the result (mean maps and every metric, once) is part of what (b) delivers
    start = time.perf_counter()
    session.result()
    if times is not None and times:
        share = (time.perf_counter() - start) / len(times)
        times[:] = [t + share for t in times]
    acc = session.accumulator
    if acc.skipped:
        raise RuntimeError(f'{acc.skipped} image(s) gave non-finite maps')
    return {n: acc.sums[n]['centre'].copy() for n in acc.targets}


def map_agreement(ref: Mapping[str, np.ndarray],
                  other: Mapping[str, np.ndarray]) -> Dict[str, float]:
    """Per target ``max |a - b| / max |a|`` (0 when both are all zero)."""
    out = {}
    for name, a in ref.items():
        b = np.asarray(other[name], dtype=np.float64)
        scale = float(np.abs(a).max())
        diff = float(np.abs(a - b).max())
        out[name] = diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf)
    return out


