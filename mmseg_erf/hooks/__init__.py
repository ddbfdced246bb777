from .erf_hook import ERFHook

__all__ = ['ERFHook']
