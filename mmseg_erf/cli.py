"""The command-line door (``tools/erf_seg.py``): parse, call the engine, print."""
import argparse
import copy
import os
import os.path as osp
import sys
from typing import List, Optional

import torch
from mmengine.config import DictAction

from . import validation
from .api import DEFAULT_TARGETS, accumulate, reduce_session
from .engine import ERFResult, ERFSession, NoImagesError, TargetError
from .errors import ERFUsageError
from .heads import head_runner_for
from .run_state import RunState, protect_out_dir, run_options
from .startup import IMPORT_STARTED, PhaseTimer, wait_policy_summary
from .input_size import check_memory

# set to 1 to see the traceback behind a one-sentence error (like --debug)
DEBUG_ENV = 'MMSEG_ERF_DEBUG'


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='erf_seg.py',
        description='Effective receptive fields of an mmseg segmentor on its own val '
                    'pipeline. Writes erf_<target>.npy/.png and metrics.json.')
    parser.add_argument('config', help='mmseg config file, or mmseg::<family>/<config>.py '
                        "for one of mmseg's shipped configs")
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='checkpoint file; without one the weights are random '
                             '(the "before training" ERF)')
    parser.add_argument('--img-dir', help="folder of images to use instead of the "
                        "config's test dataset")
    parser.add_argument('--recursive', action='store_true',
                        help='with --img-dir, also list sub-folders')
    parser.add_argument('--num-images', type=int, default=50, help='images to average')
    parser.add_argument('--targets', nargs='+', default=list(DEFAULT_TARGETS),
                        help="backbone.i, neck.i, decode_head, seg_logits, a module path, "
                             "or 'all' (every backbone stage, neck level and decode_head); "
                             'default: the last backbone stage')
    parser.add_argument('--input-size', type=int, default=1024,
                        help='side S: short side resized to S, centre crop S x S')
    parser.add_argument('--batch-size', type=int, default=1, help='images per forward')
    parser.add_argument('--num-workers', type=int, default=2, help='dataloader workers')
    parser.add_argument('--point', type=float, nargs=2, default=(0.5, 0.5),
                        metavar=('Y', 'X'), help='relative response point, default centre')
    parser.add_argument('--class-index', type=int, default=None,
                        help='one class channel for logit targets')
    parser.add_argument('--points', nargs='+', metavar='KIND',
                        help='response points, aligned and grouped: centre, grid K, '
                             'per-class, boundary (both need labels) or predicted (the '
                             "model's own classes); default: the classic --point ERF")
    parser.add_argument('--points-cap', type=int, default=None, metavar='N',
                        help='per-class/boundary/predicted: at most N points per class '
                             '(and region) per image (default 4)')
    parser.add_argument('--points-seed', type=int, default=None,
                        help='seed of the per-class draws (default 0)')
    parser.add_argument('--boundary-px', type=int, default=None, metavar='D',
                        help='boundary: an other-class pixel within D px (default 8)')
    parser.add_argument('--window', type=int, default=None, metavar='SIDE',
                        help='odd side of the aligned canvas (default 2S-1)')
    parser.add_argument('--label-dir', help='with --img-dir: its label maps (same stems, '
                        '.png), for --points per-class/boundary')
    parser.add_argument('--class-names', nargs='+', metavar='NAME',
                        help="names of the label values 0, 1, ... (default: the config "
                             "dataset's classes)")
    parser.add_argument('--out-dir', help='default: work_dirs/<config name>/erf')
    parser.add_argument('--device', default=None,
                        help='cpu, cuda, cuda:1...; default cuda when available')
    parser.add_argument('--save-every', type=int, default=10, metavar='N',
                        help='save the running sums every N images (0: never)')
    parser.add_argument('--resume', action='store_true',
                        help='continue an interrupted run in --out-dir')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the random initial weights (identical on every rank)')
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help='load the checkpoint with full pickle (only for files '
                             'from a source you trust)')
    parser.add_argument('--allow-partial', action='store_true',
                        help='load a checkpoint whose keys do not all fit, and report it')
    parser.add_argument('--overwrite', action='store_true',
                        help="replace the results of another run in --out-dir (refused "
                             'otherwise) or the saved sums of an interrupted one')
    parser.add_argument('--debug', action='store_true',
                        help=f'show the traceback of an error (also: {DEBUG_ENV}=1)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--verbose', action='store_true',
                        help='also print where the start-up time went (imports, config, '
                             'dataset, model build, checkpoint, model checks, first batch '
                             'loaded, first batch ERF) and the OpenMP wait policy chosen')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='distributed launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)
    return parser


def _dataset(cfg, args):
    """The image folder, or the config's test dataset, on the ERF pipeline."""
    from mmseg.registry import DATASETS

    from .datasets import ImageFolderDataset
    from .segmentor import config_pipeline, erf_pipeline
    from .point_doors import labelled_folder, wants_labels
    pipeline = erf_pipeline(config_pipeline(cfg), args.input_size,
                            keep_labels=wants_labels(args))
    source = (cfg.get('test_dataloader') or cfg.get('val_dataloader') or {}).get('dataset')
    classes = None
    if source is not None and isinstance(source.get('type'), str):
        dataset_type = DATASETS.get(source['type'])
        classes = (source.get('metainfo') or {}).get('classes') or \
            getattr(dataset_type, 'METAINFO', {}).get('classes')
    if args.img_dir and args.label_dir:
        return labelled_folder(args.img_dir, args.label_dir, pipeline, classes,
                               args.recursive)
    if args.img_dir:
        return ImageFolderDataset(data_prefix=dict(img_path=args.img_dir, seg_map_path=''),
                                  pipeline=pipeline, recursive=args.recursive,
                                  metainfo=dict(classes=classes or ('unlabelled', )),
                                  test_mode=True)
    if source is None:
        raise ERFUsageError(f'{cfg.filename} has no test_dataloader.dataset; pass --img-dir '
                         f'with a folder of images')
    source = source.copy()
    source['pipeline'] = pipeline
    try:
        return DATASETS.build(source)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"the config's test dataset is not on disk ({error}); "
                                f"pass --img-dir with a folder of images") from None


def summary_table(result: ERFResult) -> str:
    head = ['target', 'area@0.2', 'area@0.3', 'area@0.5', 'area@0.99', 'eff.radius',
            'centre of mass']
    rows = []
    for target, m in result.metrics.items():
        ratios = [m['area_ratio'][t] for t in ('0.2', '0.3', '0.5', '0.99')]
        com = m['center_of_mass']
        rows.append([target] + [f'{r:.4f}' if r is not None else '-' for r in ratios] +
                    [f'{m["effective_radius"]:.1f}' if m['effective_radius'] is not None
                     else '-',
                     f'({com[0]:+.1f}, {com[1]:+.1f})' if com[0] is not None else '-'])
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: '  '.join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return '\n'.join([line(head), line(['-' * w for w in widths])] + [line(r) for r in rows])


def _init_distributed(launcher: str, device: str) -> str:
    """Join the process group; returns this rank's device."""
    from mmengine.dist import init_dist
    if device.startswith('cuda'):
        init_dist(launcher, backend='nccl')
        return f'cuda:{torch.cuda.current_device()}'
    # mmengine's init_dist always selects a CUDA device; on CPU join gloo directly
    # (validation.check_launcher refused other launchers on the CPU)
    torch.distributed.init_process_group(backend='gloo')
    return device


def check_arguments(args) -> None:
    """Everything that can be refused without the config or the model."""
    names = validation.cli_name
    validation.check_values(names, num_images=args.num_images, input_size=args.input_size,
                            batch_size=args.batch_size, num_workers=args.num_workers,
                            point=args.point, class_index=args.class_index,
                            targets=args.targets, save_every=args.save_every)
    from .segmentor import resolve_config
    args.config = resolve_config(args.config)  # mmseg::<family>/<config>.py names
    validation.check_config_path(args.config)
    if args.checkpoint:
        from .checkpoint import check_checkpoint_file
        check_checkpoint_file(args.checkpoint)
    if args.img_dir:
        validation.check_image_folder(args.img_dir)
    if args.resume and args.overwrite:
        raise ERFUsageError('--resume continues the run in --out-dir and --overwrite replaces '
                            'it; pass one of them')


def run(args) -> ERFResult:
    from mmengine.dist import get_dist_info
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope

    timer = PhaseTimer(IMPORT_STARTED)
    timer.mark('imports')
    check_arguments(args)
    from .point_doors import cli_points
    cli_points(args)  # a bad --points request costs no model
    device = validation.resolve_device(args.device, validation.cli_name)
    validation.check_launcher(args.launcher, device)
    base_cfg = validation.load_config_checked(args.config)
    cfg = validation.merge_options(base_cfg, args.cfg_options)
    config_name = osp.splitext(osp.basename(args.config))[0]
    out_dir = args.out_dir or osp.join('work_dirs', config_name, 'erf')
    validation.check_out_dir(out_dir)
    if args.launcher != 'none':
        device = _init_distributed(args.launcher, device)
    rank, world = get_dist_info()
    fingerprint = _fingerprint(args, world)
    state = RunState(out_dir, fingerprint, rank)
    protect_out_dir(out_dir, fingerprint, state, args.resume, args.overwrite)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    timer.mark('config')
    dataset = _dataset(cfg, args)  # before the build: a missing test set costs no model
    timer.mark('dataset')

    logger = MMLogger.get_instance('mmseg_erf', log_level='INFO')
    model, cfg, report = validation.build_model_checked(
        base_cfg, args.cfg_options, checkpoint=args.checkpoint, device=device,
        trust_checkpoint=args.trust_checkpoint, allow_partial=args.allow_partial,
        seed=args.seed, on_phase=timer.mark)
    _log_weights(logger, model, report, args.checkpoint)
    from .point_doors import cli_points, dataset_classes, make_session, with_class_names
    spec = cli_points(args)
    session = ERFSession(model, args.targets, args.num_images, args.point, args.class_index,
                         head_runner_for(model)) \
        if spec is None else make_session(model, args.targets, args.num_images, spec,
                                          args.class_index)
    if spec is not None:
        session.points = with_class_names(session.points,
                                          args.class_names or dataset_classes(dataset))
    # the first batch checks the input size; a resumed run probes first, since the
    # saved sums are matched against the resolved target names (all, backbone.-1)
    validation.check_model(model, session.taps, args.targets, args.class_index,
                           args.input_size, device, validation.cli_name,
                           probe_forward=args.resume)
    check_memory(session, args.input_size, args.batch_size, device, warn=logger.warning)
    timer.mark('model checks')
    seen = _resume(state, session, logger) if args.resume else 0
    meta = dict(config=osp.abspath(args.config), checkpoint=args.checkpoint, seed=args.seed,
                batch_size=args.batch_size, world_size=world, options=run_options(fingerprint))
    return _compute(args, model, session, dataset, state, seen, out_dir, config_name, meta,
                    device, logger, timer)


def _log_weights(logger, model, report, checkpoint) -> None:
    if report is None and model.pretrained_files:
        logger.info(f'no checkpoint: initial weights from {", ".join(model.pretrained_files)} '
                    '(pretrained in the config), the rest random')
    elif report is None:
        logger.warning('NO CHECKPOINT: the model has RANDOM initial weights; this is the '
                       '"before training" ERF, not the ERF of a trained model')
    elif report.missing_keys or report.unexpected_keys or report.shape_mismatches:
        logger.warning(f'partial load of {checkpoint}: {report}')


def _compute(args, model, session, dataset, state, seen, out_dir, config_name, meta,
             device, logger, timer: Optional[PhaseTimer] = None) -> ERFResult:
    """The images through the session, with periodic saves; the result written."""
    from mmengine.dataset import DefaultSampler, pseudo_collate
    from mmengine.dist import get_dist_info, is_main_process
    from mmengine.utils import ProgressBar
    _, world = get_dist_info()
    timer = timer or PhaseTimer()
    spec = getattr(session, 'points', None)  # a PointSession's PointSpec
    sampler = list(DefaultSampler(dataset, shuffle=False, round_up=True))[seen:]
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, num_workers=args.num_workers, sampler=sampler,
        collate_fn=pseudo_collate, persistent_workers=False)
    total = min(args.num_images, len(dataset))
    logger.info(f'ERF of {config_name}: targets {" ".join(args.targets)}, {total} images '
                f'at {args.input_size}x{args.input_size}, batch {args.batch_size}, '
                f'{world} process(es) on {device}')
    if spec is not None:
        from .point_doors import cost_line
        logger.info(f'cost: {cost_line(session.points, total, session.taps.names)}')
    bar = ProgressBar(total) if is_main_process() else None
    if bar is not None and seen:
        bar.update(min(seen * world, total))
    # (samples consumed, a copy of the sums of exactly those): Ctrl-C can land after a
    # batch is summed and before it is recorded; one assignment keeps the pair whole
    progress = dict(committed=(seen, copy.deepcopy(session.accumulator)), saved=seen)

    def after_batch(used, consumed):
        timer.mark_once('first batch ERF')
        progress['committed'] = (consumed, copy.deepcopy(session.accumulator))
        if bar is not None and used:
            bar.update(min(used * world, total - bar.completed))
        if spec is None and args.save_every and \
                consumed - progress['saved'] >= args.save_every:
            state.save(session, consumed)
            progress['saved'] = consumed

    try:
        accumulate(model, session, _mark_first(loader, timer, 'first batch loaded'),
                   args.input_size, len(dataset), after_batch, seen)
    except KeyboardInterrupt:
        consumed, session.accumulator = progress['committed']
        if spec is None:  # point runs save no running sums (no --resume)
            state.save(session, consumed)
        if world == 1 and session.accumulator is not None:
            partial = session.result(config_name, dict(meta, partial=True))
            partial.write(out_dir)
        print(f'\ninterrupted: the sums of {consumed} samples are saved in {out_dir}'
              f'{" (metrics.json: partial)" if world == 1 else ""}; continue with --resume',
              file=sys.stderr)
        raise
    except (RuntimeError, MemoryError) as error:
        if not _out_of_memory(error):
            raise
        consumed, session.accumulator = progress['committed']
        if spec is not None:
            raise ERFUsageError(
                f'out of memory at --input-size {args.input_size} with --batch-size '
                f'{args.batch_size} on {device}; rerun with a smaller --batch-size or '
                f'--input-size (point runs cannot be resumed)') from error
        state.save(session, consumed)
        raise ERFUsageError(
            f'out of memory at --input-size {args.input_size} with --batch-size '
            f'{args.batch_size} on {device} after {consumed} samples (saved in '
            f'{out_dir}); rerun with --resume and a smaller --batch-size, or a smaller '
            f'--input-size without --resume') from error
    if bar is not None:
        sys.stdout.write('\n')
    if args.verbose and is_main_process():
        logger.info(timer.summary())
        logger.info(wait_policy_summary())
    reduce_session(session)
    result = session.result(config_name, meta)
    if is_main_process():
        result.write(out_dir)
        if spec is None:
            print(f'\n{summary_table(result)}\n')
        else:
            from .point_doors import point_summary_table
            print(f'\n{point_summary_table(result)}\n')
            print(f'{result.meta["backwards"]} backward passes per target, each over a '
                  f'whole batch, for {result.meta["points_computed"]} points of '
                  f'{result.num_images} images')
        print(f'{result.num_images} images averaged, {result.skipped} skipped; '
              f'written to {out_dir}')
    state.clear()
    return result


def _mark_first(batches, timer: PhaseTimer, label: str):
    """The batches, with ``timer.mark(label)`` once the first has arrived."""
    for batch in batches:
        timer.mark_once(label)
        yield batch


def _out_of_memory(error: BaseException) -> bool:
    oom = getattr(torch, 'OutOfMemoryError', None)
    return (isinstance(error, MemoryError) or (oom is not None and isinstance(error, oom))
            or any(text in str(error) for text in ('out of memory', "can't allocate memory")))


def _fingerprint(args, world: int) -> dict:
    """What shapes the maps; a resumed run must match it."""
    def absolute(path):
        return osp.abspath(path) if path else path

    return dict(config=osp.abspath(args.config), checkpoint=absolute(args.checkpoint),
                img_dir=absolute(args.img_dir), targets=list(args.targets), input_size=args.input_size,
                num_images=args.num_images, point=list(args.point),
                class_index=args.class_index, seed=args.seed, world_size=world,
                cfg_options=args.cfg_options, points=args.points)


def _resume(state: RunState, session: ERFSession, logger) -> int:
    if not state.exists():
        logger.warning(f'--resume: no saved state at {state.path}; starting from the first '
                       f'image')
        return 0
    seen = state.restore(session)
    logger.info(f'resuming from {state.path}: {seen} samples of this process done')
    return seen


def user_errors() -> tuple:
    """What a user's input causes; reported in one sentence, exit status 2.

    OSError covers the disk (full, read-only, permissions) as well as missing files.
    """
    from .checkpoint import CheckpointMismatchError, UntrustedCheckpointError
    from .engine import MissingLabelsError
    return (OSError, TargetError, ERFUsageError, NoImagesError, MissingLabelsError,
            CheckpointMismatchError, UntrustedCheckpointError)


def debugging(args=None) -> bool:
    return bool(getattr(args, 'debug', False)) or os.environ.get(DEBUG_ENV, '') not in ('', '0')


def one_sentence(prog: str, error: BaseException) -> str:
    return f'{prog}: error: {" ".join(str(error).split())}'


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except KeyboardInterrupt:
        return 130
    except user_errors() as error:
        if debugging(args):
            raise
        print(one_sentence('erf_seg.py', error), file=sys.stderr)
        return 2
    _leave_distributed()
    return 0


def _leave_distributed() -> None:
    """Leave the process group together after a successful run: a rank that exits
    while the group is alive can abort in the backend's threads (seen with gloo when
    one rank had no image). After an error the rank just exits, and torchrun stops
    the others instead of leaving them waiting."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
