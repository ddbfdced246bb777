"""The ERF engine: plain torch and numpy, nothing of mmengine or mmseg.

Arrows point inward: the hook, the CLI and the Python API call into this package,
never the other way round.
"""
from .accumulator import ERFAccumulator
from .aligned import AlignedAccumulator
from .geometry import fit_square
from .gradients import input_gradient_maps, response_index
from .metrics import (AREA_THRESHOLDS, area_ratio, erf_metrics, replknet_normalize,
                      vmamba_normalize)
from .point_result import PointResult, is_point_run
from .point_session import MissingLabelsError, PointSession
from .points import PointSpec, sample_points
from .result import ERFResult
from .session import ERFSession, NoImagesError
from .shape import shape_metrics
from .targets import FeatureTaps, HeadRunner, TargetError, plain_head_runner

__all__ = [
    'AREA_THRESHOLDS', 'ERFAccumulator', 'ERFResult', 'ERFSession', 'FeatureTaps', 'HeadRunner',
    'NoImagesError', 'TargetError', 'plain_head_runner', 'area_ratio', 'erf_metrics', 'fit_square', 'input_gradient_maps',
    'replknet_normalize', 'response_index', 'vmamba_normalize', 'AlignedAccumulator',
    'MissingLabelsError', 'PointResult', 'PointSession', 'PointSpec', 'is_point_run',
    'sample_points', 'shape_metrics'
]
