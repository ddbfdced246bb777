"""ERFRequest: every setting of a run, validated once, and its fingerprint.

The three doors turn what they are given (argparse, keywords, hook arguments) into
one request; everything after that reads the request. A new option is a field here
and a flag in the parser; :meth:`ERFRequest.fingerprint` holds every field that
changes the maps, so a finished or interrupted run is never silently replaced or
continued by a different one.
"""
import dataclasses
import os.path as osp
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from ..engine.points import KINDS, PointSpec
from ..engine.stats import BUCKETS, REPLICATES
from ..errors import ERFUsageError
from ..validation import Names, api_name, check_values

DEFAULT_TARGETS = ('backbone.-1', )
DEFAULT_CI_METRICS = ('effective_radius', 'area_ratio.0.5')
# metrics with an interval, by the first part of their dotted name
CI_METRIC_HEADS = ('area_ratio', 'area_side', 'effective_radius', 'center_of_mass',
                   'radial_mass', 'erf_trf_ratio')
PointsArg = Union[None, str, Sequence, Mapping, PointSpec]


def parse_points(points: PointsArg, **options) -> PointSpec:
    """A :class:`PointSpec` from ``'per-class'``, ``'grid 3'``, ``['grid', 3]``, a dict
    of PointSpec fields or a PointSpec; None is the classic centre ERF.

    ``options`` (cap, seed, boundary_px, window, point, class_names) fill the fields
    the request does not set; None values are left out.
    """
    if isinstance(points, PointSpec):
        return points
    if points is None:
        fields = dict(kind='centre')
    elif isinstance(points, Mapping):
        fields = dict(points)
    else:
        words = points.split() if isinstance(points, str) else [str(p) for p in points]
        if not words or words[0] not in KINDS:
            raise ERFUsageError(f'unknown points {" ".join(words)!r}; use one of '
                                f'{", ".join(KINDS)} (grid takes K: grid 3)')
        fields = dict(kind=words[0])
        if len(words) > 2 or (len(words) == 2 and words[0] != 'grid'):
            raise ERFUsageError(f'points {" ".join(words)!r}: only grid takes a number '
                                f'(grid K)')
        if len(words) == 2:
            if not words[1].isdigit():
                raise ERFUsageError(f'points grid needs a positive integer K, got '
                                    f'{words[1]!r}')
            fields['grid'] = int(words[1])
    for key, value in options.items():
        if value is not None:
            fields.setdefault(key, value)
    try:
        return PointSpec(**fields)
    except (TypeError, ValueError) as error:
        raise ERFUsageError(f'bad points request: {error}') from None


def check_intervals(names: Names, fields: Mapping[str, Any]) -> None:
    """The interval options (``ci_*``), each refused in one sentence naming the fix."""
    buckets = fields.get('ci_buckets')
    if not isinstance(buckets, int) or isinstance(buckets, bool) or buckets < 0 or buckets == 1:
        raise ERFUsageError(f'{names("ci_buckets")} must be 0 (no intervals) or an integer '
                            f'>= 2, got {buckets!r}')
    replicates = fields.get('ci_replicates', REPLICATES)
    if not isinstance(replicates, int) or isinstance(replicates, bool) or replicates < 20:
        raise ERFUsageError(f'{names("ci_replicates")} must be an integer >= 20 (1000 gives '
                            f'stable 95 % bounds), got {replicates!r}')
    width = fields.get('ci_width')
    if width is not None and (isinstance(width, bool) or not isinstance(width, (int, float))
                              or not 0 < width):
        raise ERFUsageError(f'{names("ci_width")} must be a relative width > 0 (0.1: every '
                            f'interval within 10 % of its value), got {width!r}')
    if width is not None and buckets == 0:
        raise ERFUsageError(f'{names("ci_width")} stops on the intervals, which '
                            f'{names("ci_buckets")} 0 turns off (the default for point '
                            f'runs); give {names("ci_buckets")} >= 2')
    for metric in fields.get('ci_metrics') or ():
        if str(metric).partition('.')[0] not in CI_METRIC_HEADS:
            raise ERFUsageError(f'{names("ci_metrics")} {metric!r} is not a metric with an '
                                f'interval; use effective_radius, area_ratio.0.5, '
                                f'erf_trf_ratio, ... (one of {", ".join(CI_METRIC_HEADS)})')


def _absolute(path):
    return osp.abspath(str(path)) if path else path


@dataclass(frozen=True)
class ERFRequest:
    """What to compute and on what.

    Attributes:
        targets: target names (``backbone.-1``, ``decode_head``, ``all``...).
        num_images: images averaged (the first ones, in dataset order).
        input_size: side S of the square input; None (the hook): the val batches'
            own size (see :mod:`mmseg_erf.run.loop`).
        batch_size, num_workers: images per forward, dataloader workers.
        points: the point set (the centre by default, its relative ``point``, grid,
            per-class...; the canvas window; the class names).
        class_index: the logit class of points that have none.
        images: an image folder, a list of paths, or None (the config's test set;
            or batches handed over by the caller).
        labels: the label folder of ``images``.
        recursive: also list sub-folders of ``images``.
        config, checkpoint, cfg_options, seed: the model (seed: random weights).
        trust_checkpoint, allow_partial: how far a checkpoint is trusted.
        ci_buckets: image buckets of the 95 % intervals (0: no intervals; memory
            and the saved sums grow by this factor).
        ci_replicates: bootstrap replicates of the intervals.
        ci_width: stop before ``num_images`` once every interval of ``ci_metrics``
            (every target and group) is narrower than this fraction of its value.
        ci_metrics: the metrics of the stopping rule (dotted names).
    """
    targets: Tuple[str, ...] = DEFAULT_TARGETS
    num_images: int = 50
    input_size: Optional[int] = 1024
    batch_size: int = 1
    num_workers: int = 0
    points: PointSpec = PointSpec()
    class_index: Optional[int] = None
    images: Any = None
    labels: Optional[str] = None
    recursive: bool = False
    config: Optional[str] = None
    checkpoint: Optional[str] = None
    cfg_options: Optional[Dict] = None
    seed: int = 0
    trust_checkpoint: bool = False
    allow_partial: bool = False
    ci_buckets: int = BUCKETS
    ci_replicates: int = REPLICATES
    ci_width: Optional[float] = None
    ci_metrics: Tuple[str, ...] = DEFAULT_CI_METRICS

    def __post_init__(self):
        targets = [self.targets] if isinstance(self.targets, str) else self.targets
        object.__setattr__(self, 'targets', tuple(targets) if targets is not None else None)
        metrics = [self.ci_metrics] if isinstance(self.ci_metrics, str) else self.ci_metrics
        object.__setattr__(self, 'ci_metrics', tuple(metrics or DEFAULT_CI_METRICS))

    @classmethod
    def create(cls, names: Names = api_name, *, points: PointsArg = None,
               point: Sequence[float] = (0.5, 0.5), cap: Optional[int] = None,
               points_seed: Optional[int] = None, boundary_px: Optional[int] = None,
               window: Optional[int] = None, class_names: Optional[Sequence[str]] = None,
               **fields) -> 'ERFRequest':
        """A request from a door's values, every one checked here and only here.

        ``points`` and its options (``point``, ``cap``, ``points_seed``,
        ``boundary_px``, ``window``, ``class_names``) become the :class:`PointSpec`;
        ``names`` spells argument names as the door does (``--num-images``,
        ``num_images``) in the one-sentence errors.

        Raises:
            ERFUsageError: naming the argument, its value and what it must be.
        """
        input_size = fields.get('input_size', cls.input_size)
        check_values(names, num_images=fields.get('num_images', cls.num_images),
                     input_size=1 if input_size is None else input_size,
                     batch_size=fields.get('batch_size', cls.batch_size),
                     num_workers=fields.get('num_workers', cls.num_workers), point=point,
                     class_index=fields.get('class_index'),
                     targets=fields.get('targets', cls.targets))
        if fields.get('labels') is not None and fields.get('images') is None:
            raise ERFUsageError(f'{names("labels")} goes with {names("images")} (the images '
                                f'it labels); a config dataset brings its own labels')
        spec = parse_points(points, point=tuple(point), cap=cap, seed=points_seed,
                            boundary_px=boundary_px, window=window,
                            class_names=tuple(class_names) if class_names else None)
        if fields.get('ci_buckets') is None:
            # the centre's buckets are B copies of one S x S map per target; a point set's
            # are B copies of a (2S-1)^2 canvas per target and group (a per-class run at
            # 1024 with 150 classes: tens of GB), so there intervals are asked for
            fields['ci_buckets'] = BUCKETS if spec.fixed_anchor else 0
        check_intervals(names, fields)
        return cls(points=spec, **fields)

    def replace(self, **changes) -> 'ERFRequest':
        return dataclasses.replace(self, **changes)

    def with_class_names(self, names: Optional[Sequence[str]]) -> 'ERFRequest':
        """The request with class names for the point groups, unless it has some."""
        if self.points.class_names or not names:
            return self
        return self.replace(points=dataclasses.replace(
            self.points, class_names=tuple(str(n) for n in names)))

    def fingerprint(self) -> Dict[str, Any]:
        """Every setting that changes the maps (JSON-ready): a resumed run must match
        it, and a folder holding another one's results is not replaced."""
        images = self.images
        if isinstance(images, (list, tuple)):
            images = [_absolute(p) for p in images]
        elif images is not None and not isinstance(images, str):
            images = type(images).__name__
        else:
            images = _absolute(images)
        return dict(config=_absolute(self.config), checkpoint=_absolute(self.checkpoint),
                    img_dir=images, label_dir=_absolute(self.labels),
                    recursive=self.recursive, targets=list(self.targets),
                    input_size=self.input_size, num_images=self.num_images,
                    points=self.points.to_json(), class_index=self.class_index,
                    seed=self.seed, cfg_options=self.cfg_options, ci_buckets=self.ci_buckets,
                    ci_replicates=self.ci_replicates, ci_width=self.ci_width,
                    ci_metrics=list(self.ci_metrics) if self.ci_width else None)
