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
from ..errors import ERFUsageError
from ..validation import Names, api_name, check_values

DEFAULT_TARGETS = ('backbone.-1', )
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

    def __post_init__(self):
        targets = [self.targets] if isinstance(self.targets, str) else self.targets
        object.__setattr__(self, 'targets', tuple(targets) if targets is not None else None)

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
                    seed=self.seed, cfg_options=self.cfg_options)
