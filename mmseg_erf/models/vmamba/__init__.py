"""VMamba (VSSM) backbones of both released generations and a pure-PyTorch selective scan.

Importing the package tells :mod:`mmseg_erf.checkpoint` about VMamba checkpoints (which
config builds the backbone a mismatching one holds; the backbone of a classification or
detection checkpoint given as a segmentor's), so that the loader never imports models.
"""
from ...checkpoint import register_checkpoint_describer
from .backbone import MM_VSSM
from .blocks import VSSBlock, VSSBlockGated
from .detect import VMambaArchitecture, architecture_of, matching_configs, mismatch_hint
from .names import rename_legacy_keys
from .pretrained import segmentor_weights
from .selective_scan import (linear_scan, selective_scan, selective_scan_reference,
                             selective_scan_tokens)
from .ss2d import SS2D, cross_merge, cross_scan
from .ss2d_gated import SS2DGated, SS2DGatedV2Order

register_checkpoint_describer(mismatch_hint, adapt=segmentor_weights)

__all__ = [
    'MM_VSSM', 'VSSBlock', 'VSSBlockGated', 'SS2D', 'SS2DGated', 'SS2DGatedV2Order',
    'cross_scan', 'cross_merge', 'selective_scan', 'selective_scan_tokens',
    'selective_scan_reference', 'linear_scan', 'rename_legacy_keys', 'VMambaArchitecture',
    'architecture_of', 'matching_configs', 'mismatch_hint'
]
