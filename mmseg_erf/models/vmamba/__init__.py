"""VMamba v2 (VSSM) backbone and a pure-PyTorch selective scan."""
from .backbone import MM_VSSM, VSSBlock
from .selective_scan import (linear_scan, selective_scan, selective_scan_reference,
                             selective_scan_tokens)
from .ss2d import SS2D, cross_merge, cross_scan

__all__ = [
    'MM_VSSM', 'VSSBlock', 'SS2D', 'cross_scan', 'cross_merge', 'selective_scan',
    'selective_scan_tokens', 'selective_scan_reference', 'linear_scan'
]
