"""The command-line door (``tools/erf_seg.py``): argparse -> request -> the run loop,
plus what only a command line has: saves every N images, --resume, Ctrl-C."""
import argparse
import copy
import os
import os.path as osp
import sys
from typing import List, Optional

import torch
from mmengine.config import DictAction

from . import validation
from .engine import ClassRangeError, ERFResult, NoImagesError, TargetError
from .errors import ERFUsageError
from .input_size import check_memory
from .run import DEFAULT_TARGETS, ERFRequest, accumulate, open_session, reduce_session
from .run.loop import images_meta
from .run.data import build_dataset, dataset_classes, loader_for
from .run.state import RunState, protect_out_dir, run_options
from .run.stopping import StopRule, add_interval_arguments
from .run.summary import summary_table
from .run.sweep import one_size, run_sizes
from .startup import IMPORT_STARTED, PhaseTimer, wait_policy_summary

# set to 1 to see the traceback behind a one-sentence error (like --debug)
DEBUG_ENV = 'MMSEG_ERF_DEBUG'


class KeyValueAction(DictAction):
    """mmengine's ``DictAction``, with an entry that is not ``key=value`` refused as a
    usage error (exit status 2) instead of a traceback."""

    def __call__(self, parser, namespace, values, option_string=None):
        bad = [v for v in values if '=' not in v]
        if bad:
            parser.error(f'{option_string} {bad[0]!r} is not key=value; write e.g. '
                         f'model.backbone.depth=18')
        super().__call__(parser, namespace, values, option_string)


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
    parser.add_argument('--input-size', type=int, nargs='+', default=[1024], metavar='S',
                        help='side S: short side resized to S, centre crop S x S; several '
                             'sizes: one run each in --out-dir/size_<S>, and a table and '
                             'figure of each metric against the size')
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
    add_interval_arguments(parser)
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
    parser.add_argument('--cfg-options', nargs='+', action=KeyValueAction,
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


def request_from_args(args) -> ERFRequest:
    """The run the command line asks for; every value checked (one sentence on error)."""
    if args.label_dir and not args.img_dir:
        raise ERFUsageError('--label-dir goes with --img-dir (the images it labels); the '
                            "config's dataset brings its own labels")
    if args.label_dir and not os.path.isdir(args.label_dir):
        raise FileNotFoundError(f'label folder {args.label_dir} does not exist; pass '
                                f'--label-dir with the folder of label maps')
    return ERFRequest.create(
        validation.cli_name, points=args.points, point=args.point, cap=args.points_cap,
        points_seed=args.points_seed, boundary_px=args.boundary_px, window=args.window,
        class_names=args.class_names, targets=args.targets, num_images=args.num_images,
        input_size=one_size(args.input_size), batch_size=args.batch_size,
        num_workers=args.num_workers,
        class_index=args.class_index, images=args.img_dir, labels=args.label_dir,
        recursive=args.recursive, config=args.config, checkpoint=args.checkpoint,
        cfg_options=args.cfg_options, seed=args.seed, trust_checkpoint=args.trust_checkpoint,
        allow_partial=args.allow_partial, ci_buckets=args.ci_buckets,
        ci_replicates=args.ci_replicates, ci_width=args.ci_width,
        ci_metrics=tuple(args.ci_metrics))


def check_arguments(args) -> ERFRequest:
    """Everything that can be refused without the config or the model."""
    validation.check_values(validation.cli_name, save_every=args.save_every)
    request = request_from_args(args)
    from .segmentor import resolve_config
    args.config = resolve_config(args.config)  # mmseg::<family>/<config>.py names
    validation.check_config_path(args.config)
    if args.checkpoint:
        from .checkpoint import check_checkpoint_file
        check_checkpoint_file(args.checkpoint)
    if args.img_dir:
        validation.check_image_folder(args.img_dir)
    if args.ci_width is not None and args.launcher != 'none':
        raise ERFUsageError('--ci-width decides after each batch on the sums of one process; '
                            'run it without --launcher, or drop --ci-width')
    if args.resume and args.overwrite:
        raise ERFUsageError('--resume continues the run in --out-dir and --overwrite replaces '
                            'it; pass one of them')
    return request.replace(config=args.config)


def _fingerprint(args, world: int) -> dict:
    """What shapes the maps (the request's fingerprint) and the number of processes."""
    return dict(request_from_args(args).replace(config=args.config).fingerprint(),
                world_size=world)


def run(args) -> ERFResult:
    from mmengine.dist import get_dist_info
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope

    timer = PhaseTimer(IMPORT_STARTED)
    timer.mark('imports')
    request = check_arguments(args)
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
    fingerprint = dict(request.fingerprint(), world_size=world)
    state = RunState(out_dir, fingerprint, rank)
    protect_out_dir(out_dir, fingerprint, state, args.resume, args.overwrite)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    timer.mark('config')
    dataset = build_dataset(request, cfg)  # before the build: a missing test set costs no model
    timer.mark('dataset')

    logger = MMLogger.get_instance('mmseg_erf', log_level='INFO')
    model, cfg, report = validation.build_model_checked(
        base_cfg, args.cfg_options, checkpoint=args.checkpoint, device=device,
        trust_checkpoint=args.trust_checkpoint, allow_partial=args.allow_partial,
        seed=args.seed, on_phase=timer.mark)
    _log_weights(logger, model, report, args.checkpoint)
    request = request.with_class_names(dataset_classes(dataset))
    session = open_session(model, request)
    # the first batch checks the input size; a resumed run probes first, since the
    # saved sums are matched against the resolved target names (all, backbone.-1)
    validation.check_model(model, session.taps, request.targets, request.class_index,
                           request.input_size, device, validation.cli_name,
                           probe_forward=args.resume)
    check_memory(session, request.input_size, request.batch_size, device, warn=logger.warning)
    timer.mark('model checks')
    seen = _resume(state, session, logger) if args.resume else 0
    meta = dict(config=osp.abspath(args.config), checkpoint=args.checkpoint, seed=args.seed,
                batch_size=args.batch_size, world_size=world, options=run_options(fingerprint))
    return _compute(args, request, model, session, dataset, state, seen, out_dir,
                    config_name, meta, device, logger, timer)


def _log_weights(logger, model, report, checkpoint) -> None:
    if report is None and model.pretrained_files:
        logger.info(f'no checkpoint: initial weights from {", ".join(model.pretrained_files)} '
                    '(pretrained in the config), the rest random')
    elif report is None:
        logger.warning('NO CHECKPOINT: the model has RANDOM initial weights; this is the '
                       '"before training" ERF, not the ERF of a trained model')
    elif getattr(report, 'note', None):
        pass  # the checkpoint loader logged what it loaded and what stays random
    elif report.missing_keys or report.unexpected_keys or report.shape_mismatches:
        logger.warning(f'partial load of {checkpoint}: {report}')


def _compute(args, request, model, session, dataset, state, seen, out_dir, config_name,
             meta, device, logger, timer: Optional[PhaseTimer] = None) -> ERFResult:
    """The images through the session, with periodic saves; the result written."""
    from mmengine.dist import get_dist_info, is_main_process
    from mmengine.utils import ProgressBar
    _, world = get_dist_info()
    timer = timer or PhaseTimer()
    loader = loader_for(dataset, request, seen)
    total = min(request.num_images, len(dataset))
    size = request.input_size
    logger.info(f'ERF of {config_name}: targets {" ".join(request.targets)}, {total} images '
                f'at {size}x{size}, batch {request.batch_size}, {world} process(es) on '
                f'{device}')
    if not request.points.fixed_anchor:
        logger.info('cost: ' + request.points.cost_sentence(
            total, len(session.taps.names), len(request.points.class_names) or None))
    bar = ProgressBar(total) if is_main_process() else None
    if bar is not None and seen:
        bar.update(min(seen * world, total))
    # (samples consumed, a copy of the sums of exactly those): Ctrl-C can land after a
    # batch is summed and before it is recorded; one assignment keeps the pair whole
    progress = dict(committed=(seen, copy.deepcopy(session.accumulator)), saved=seen)
    rule = StopRule(request.ci_width, request.ci_metrics, request.num_images) \
        if request.ci_width else None

    def after_batch(used, consumed):
        timer.mark_once('first batch ERF')
        progress['committed'] = (consumed, copy.deepcopy(session.accumulator))
        if bar is not None and used:
            bar.update(min(used * world, total - bar.completed))
        if args.save_every and consumed - progress['saved'] >= args.save_every:
            state.save(session, consumed)
            progress['saved'] = consumed
        return rule is not None and rule.check(session.accumulator)

    try:
        accumulate(model, session, _mark_first(loader, timer, 'first batch loaded'),
                   size, len(dataset), after_batch, seen)
    except KeyboardInterrupt:
        consumed, session.accumulator = progress['committed']
        state.save(session, consumed)
        if world == 1 and session.accumulator is not None:
            session.result(config_name, dict(meta, partial=True)).write(out_dir)
        print(f'\ninterrupted: the sums of {consumed} samples are saved in {out_dir}'
              f'{" (metrics.json: partial)" if world == 1 else ""}; continue with --resume',
              file=sys.stderr)
        raise
    except (RuntimeError, MemoryError) as error:
        if not _out_of_memory(error):
            raise
        consumed, session.accumulator = progress['committed']
        state.save(session, consumed)
        raise ERFUsageError(
            f'out of memory at --input-size {size} with --batch-size '
            f'{request.batch_size} on {device} after {consumed} samples (saved in '
            f'{out_dir}); rerun with --resume and a smaller --batch-size, or a smaller '
            f'--input-size without --resume') from error
    if bar is not None:
        sys.stdout.write('\n')
    if args.verbose and is_main_process():
        logger.info(timer.summary())
        logger.info(wait_policy_summary())
    reduce_session(session)
    result = session.result(config_name, dict(meta, **images_meta(
        session, dataset, request.num_images, rule)))
    if is_main_process():
        result.write(out_dir)
        print(f'\n{summary_table(result)}\n')
        if not result.is_classic:
            print(f'{result.meta["backwards"]} backward passes per target, each over a '
                  f'whole batch, for {result.meta["points_computed"]} points of '
                  f'{result.num_images} images')
        print(f'{result.num_images} images averaged, {result.skipped} skipped; '
              f'written to {out_dir}')
        if rule is not None:
            print(f'stopped: {result.meta["stopping"]["reason"]}')
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


def _resume(state: RunState, session, logger) -> int:
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
            ClassRangeError, CheckpointMismatchError, UntrustedCheckpointError)


def debugging(args=None) -> bool:
    return bool(getattr(args, 'debug', False)) or os.environ.get(DEBUG_ENV, '') not in ('', '0')


def one_sentence(prog: str, error: BaseException) -> str:
    return f'{prog}: error: {" ".join(str(error).split())}'


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if len(args.input_size) == 1:
            run(args)
        else:
            run_sizes(args, run)
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
