"""VMamba (VSSM) backbones of both released generations and a pure-PyTorch selective scan."""
from .backbone import MM_VSSM, rename_legacy_keys
from .blocks import VSSBlock, VSSBlockGated
from .detect import VMambaArchitecture, architecture_of, matching_configs, mismatch_hint
from .selective_scan import (linear_scan, selective_scan, selective_scan_reference,
                             selective_scan_tokens)
from .ss2d import SS2D, cross_merge, cross_scan
from .ss2d_gated import SS2DGated, SS2DGatedV2Order

__all__ = [
    'MM_VSSM', 'VSSBlock', 'VSSBlockGated', 'SS2D', 'SS2DGated', 'SS2DGatedV2Order',
    'cross_scan', 'cross_merge', 'selective_scan', 'selective_scan_tokens',
    'selective_scan_reference', 'linear_scan', 'rename_legacy_keys', 'VMambaArchitecture',
    'architecture_of', 'matching_configs', 'mismatch_hint'
]
