"""Models: importing this registers ``MM_VSSM`` in mmseg's MODELS registry."""
from .vmamba import MM_VSSM, selective_scan, selective_scan_reference

__all__ = ['MM_VSSM', 'selective_scan', 'selective_scan_reference']
