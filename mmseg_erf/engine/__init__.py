"""The ERF engine: plain torch and numpy, nothing of mmengine or mmseg.

Arrows point inward: the hook, the CLI and the Python API call into this package,
never the other way round. A run is targets x a point set x images: one session
(:class:`ERFSession`), one gradient (:func:`response_maps`), one accumulator, one
result (:class:`ERFResult`); the classic ERF is the point set of one point.
"""
from .accumulator import ERFAccumulator
from .geometry import fit_square
from .gradients import ClassRangeError, input_gradient_maps, response_maps
from .metrics import (AREA_THRESHOLDS, area_ratio, erf_metrics, replknet_normalize,
                      vmamba_normalize)
from .points import PointSpec, response_index, sample_points
from .result import ERFResult, is_point_run
from .session import ERFSession, MissingLabelsError, NoImagesError
from .shape import shape_metrics
from .targets import FeatureTaps, HeadRunner, TargetError, plain_head_runner

__all__ = [
    'AREA_THRESHOLDS', 'ClassRangeError', 'ERFAccumulator', 'ERFResult', 'ERFSession',
    'FeatureTaps', 'HeadRunner', 'MissingLabelsError', 'NoImagesError', 'PointSpec',
    'TargetError', 'area_ratio', 'erf_metrics', 'fit_square', 'input_gradient_maps',
    'is_point_run', 'plain_head_runner', 'replknet_normalize', 'response_index',
    'response_maps', 'sample_points', 'shape_metrics', 'vmamba_normalize'
]
