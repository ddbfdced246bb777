"""What the three doors share for point runs (``--points``, ``points=``): parsing the
request, labels from mmseg batches, class names, the cost line, distributed sums and
the summary table. The math is in :mod:`mmseg_erf.engine.point_session`."""
import dataclasses
import os
from typing import List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .engine.geometry import fit_label_square
from .engine.point_result import FEW_POINTS, PointResult
from .engine.point_session import PointSession
from .engine.points import KINDS, PointSpec
from .errors import ERFUsageError
from .heads import head_runner_for

PointsArg = Union[None, str, Sequence, Mapping, PointSpec]


def parse_points(points: PointsArg, **options) -> Optional[PointSpec]:
    """A :class:`PointSpec` from ``'per-class'``, ``'grid 3'``, ``['grid', 3]``, a dict
    of PointSpec fields or a PointSpec; None stays None (the classic centre ERF).

    ``options`` (cap, seed, boundary_px, window, ignore_index, class_names) fill
    the fields the request does not set.
    """
    if points is None or isinstance(points, PointSpec):
        return points
    if isinstance(points, Mapping):
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


def cli_points(args) -> Optional[PointSpec]:
    """The command line's points request, or None; refuses what point runs lack."""
    if args.label_dir and not args.img_dir:
        raise ERFUsageError('--label-dir goes with --img-dir (the images it labels); the '
                            "config's dataset brings its own labels")
    if args.label_dir and not os.path.isdir(args.label_dir):
        raise FileNotFoundError(f'label folder {args.label_dir} does not exist; pass '
                                f'--label-dir with the folder of label maps')
    if not args.points:
        return None
    spec = parse_points(args.points, cap=args.points_cap, seed=args.points_seed,
                        boundary_px=args.boundary_px, window=args.window)
    if args.resume:
        raise ERFUsageError('--resume does not work with --points yet (point runs save no '
                            'running sums); rerun without --resume')
    return spec


def wants_labels(args) -> bool:
    return bool(args.points) and args.points[0] in ('per-class', 'boundary')


def with_class_names(spec: PointSpec, names: Optional[Sequence[str]]) -> PointSpec:
    if spec.class_names or not names:
        return spec
    return dataclasses.replace(spec, class_names=tuple(str(n) for n in names))


def dataset_classes(dataset) -> Optional[List[str]]:
    meta = getattr(dataset, 'metainfo', None) or {}
    classes = meta.get('classes')
    return list(classes) if classes else None


def make_session(model: nn.Module, targets: Sequence[str], num_images: int,
                 points: PointSpec, class_index: Optional[int] = None,
                 class_names: Optional[Sequence[str]] = None) -> PointSession:
    names = class_names or getattr(model, 'dataset_meta', None) and \
        model.dataset_meta.get('classes')
    return PointSession(model, targets, num_images, with_class_names(points, names),
                        class_index, head_runner_for(model))


def batch_labels(batch: dict, input_size: int) -> List[Optional[np.ndarray]]:
    """Each sample's ``gt_sem_seg`` at the ERF geometry (S x S), None where absent."""
    samples = batch.get('data_samples') or [None] * len(batch['inputs'])
    labels = []
    for sample in samples:
        seg = getattr(sample, 'gt_sem_seg', None) if sample is not None else None
        data = getattr(seg, 'data', None) if seg is not None else None
        if data is None:
            labels.append(None)
            continue
        data = torch.as_tensor(data)
        labels.append(fit_label_square(data[0] if data.dim() == 3 else data,
                                       input_size).cpu().numpy())
    return labels


def with_label_loading(pipeline: Sequence[dict]) -> List[dict]:
    """An ERF pipeline that loads labels: LoadAnnotations before ERFResizeCrop if absent."""
    steps = [dict(t) for t in pipeline]
    kinds = [str(t.get('type', '')).split('.')[-1] for t in steps]
    if 'LoadAnnotations' not in kinds:
        steps.insert(kinds.index('ERFResizeCrop'), dict(type='LoadAnnotations'))
    return steps


def labelled_folder(images: str, labels: str, pipeline: Sequence[dict],
                    class_names: Optional[Sequence[str]] = None, recursive: bool = False):
    """An ``ImageFolderDataset`` of images and their label maps on the ERF pipeline."""
    import os.path as osp

    from .datasets import ImageFolderDataset
    for kind, folder in (('image', images), ('label', labels)):
        if not osp.isdir(str(folder)):
            raise FileNotFoundError(f'{kind} folder {folder} does not exist; pass a '
                                    f'folder of {kind}s')
    pipeline = with_label_loading(pipeline)
    # read the labels as the config reads its own (ADE20K configs: reduce_zero_label,
    # so value 0 is ignored and k becomes class k - 1)
    loader = next(t for t in pipeline if str(t.get('type')).split('.')[-1] == 'LoadAnnotations')
    reduce_zero_label = bool(loader.get('reduce_zero_label') or False)
    return ImageFolderDataset(
        data_prefix=dict(img_path=str(images), seg_map_path=str(labels)),
        pipeline=pipeline, recursive=recursive, reduce_zero_label=reduce_zero_label,
        metainfo=dict(classes=tuple(class_names or ('unnamed', ))), test_mode=True)


def cost_line(spec: PointSpec, num_images: int, targets: Sequence[str]) -> str:
    return spec.cost_sentence(num_images, len(targets), len(spec.class_names) or None)


def reduce_point_sums(session: PointSession) -> None:
    """Sum every rank's aligned sums, coverage and counts; called by
    :func:`.api.reduce_session` once every rank's accumulator is open."""
    from mmengine.dist import all_gather_object, all_reduce
    acc = session.accumulator
    groups = sorted(set().union(*all_gather_object(acc.groups)))
    for group in groups:
        acc._open_group(group)
        for arrays in [acc.coverage] + [acc.sums[t] for t in acc.targets]:
            total = torch.from_numpy(arrays[group])
            all_reduce(total)
            arrays[group] = total.numpy()
    numbers = [acc.counts[g] for g in groups] + \
        [acc.zero_maps[t][g] for t in acc.targets for g in groups] + \
        [acc.images, acc.skipped, acc.skipped_points, session.backwards,
         session.point_count]
    totals = torch.tensor(numbers, dtype=torch.float64)
    all_reduce(totals)
    values = [int(v) for v in totals.tolist()]
    for i, g in enumerate(groups):
        acc.counts[g] = values[i]
    k = len(groups)
    for j, t in enumerate(acc.targets):
        for i, g in enumerate(groups):
            acc.zero_maps[t][g] = values[k + j * k + i]
    (acc.images, acc.skipped, acc.skipped_points, session.backwards,
     session.point_count) = values[-5:]


def point_summary_table(result: PointResult) -> str:
    """One row per (target, group): the count beside every number."""
    head = ['target', 'group', 'N', 'area@0.5', 'eff.radius', 'sigma_y', 'sigma_x',
            'anisotropy', 'orient.', 'gauss R2']
    fmt = lambda v, f: '-' if v is None else format(v, f)  # noqa: E731
    rows = []
    from .engine.point_plots import sorted_groups
    for target in result.targets:
        for group in sorted_groups(result, target):
            m = result.metrics[target][group]
            s, g = m['shape'], m['shape']['gaussian'] or {}
            few = '*' if m['count'] < FEW_POINTS else ''
            rows.append([target, group, f'{m["count"]}{few}', fmt(m['area_ratio']['0.5'], '.4f'),
                         fmt(m['effective_radius'], '.1f'), fmt(s['sigma_y'], '.1f'),
                         fmt(s['sigma_x'], '.1f'), fmt(s['anisotropy'], '.2f'),
                         fmt(s['orientation_deg'], '+.0f'), fmt(g.get('r2'), '.3f')])
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: '  '.join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    note = f'* fewer than {FEW_POINTS} points: not to be trusted alone'
    return '\n'.join([line(head), line(['-' * w for w in widths])] +
                     [line(r) for r in rows] + [note])
