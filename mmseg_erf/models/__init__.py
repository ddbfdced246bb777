"""Models: ``MM_VSSM`` in this package's registry (scope ``mmseg_erf``) and, where the
name is free, as ``MM_VSSM`` for mmseg configs (see mmseg_erf/registry.py)."""
from ..registry import register_fallback_alias
from .vmamba import MM_VSSM, selective_scan, selective_scan_reference

register_fallback_alias(MM_VSSM, 'MM_VSSM')

__all__ = ['MM_VSSM', 'selective_scan', 'selective_scan_reference']
