"""The run layer: one request, one session, one loop, one saved state for every door.

Knows mmengine and mmseg (datasets, ranks, pipelines); the math stays in
:mod:`mmseg_erf.engine`.
"""
from .loop import accumulate, feed_batch, open_session, reduce_session
from .request import DEFAULT_TARGETS, ERFRequest, parse_points

__all__ = ['DEFAULT_TARGETS', 'ERFRequest', 'accumulate', 'feed_batch', 'open_session',
           'parse_points', 'reduce_session']
