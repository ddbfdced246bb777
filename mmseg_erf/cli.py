"""The command-line door (``tools/erf_seg.py``): parse, call the engine, print."""
import argparse
import os.path as osp
import sys
from typing import List, Optional

import torch
from mmengine.config import DictAction

from .api import DEFAULT_TARGETS, accumulate, reduce_session
from .engine import ERFResult, ERFSession, NoImagesError, TargetError
from .errors import ERFUsageError
from .run_state import RunState
from .segmentor import check_input_size



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='erf_seg.py',
        description='Effective receptive fields of an mmseg segmentor on its own val '
                    'pipeline. Writes erf_<target>.npy/.png and metrics.json.')
    parser.add_argument('config', help='mmseg config file')
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
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
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
    pipeline = erf_pipeline(config_pipeline(cfg), args.input_size)
    source = (cfg.get('test_dataloader') or cfg.get('val_dataloader') or {}).get('dataset')
    classes = None
    if source is not None and isinstance(source.get('type'), str):
        dataset_type = DATASETS.get(source['type'])
        classes = getattr(dataset_type, 'METAINFO', {}).get('classes')
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
    if launcher != 'pytorch':
        raise ERFUsageError(f'--launcher {launcher} needs CUDA; on the CPU use torchrun '
                            f'(--launcher pytorch)')
    torch.distributed.init_process_group(backend='gloo')
    return device


def run(args) -> ERFResult:
    from mmengine.dataset import DefaultSampler, pseudo_collate
    from mmengine.dist import get_dist_info, is_main_process
    from mmengine.logging import MMLogger
    from mmengine.utils import ProgressBar

    from .segmentor import build_segmentor
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config {args.config} does not exist; pass the path of '
                                f'an mmseg config file')
    if args.checkpoint and not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint {args.checkpoint} does not exist; pass a '
                                f'.pth file or omit it for random weights')
    if args.img_dir and not osp.isdir(args.img_dir):
        raise FileNotFoundError(f'image folder {args.img_dir} does not exist; pass '
                                f'--img-dir with a folder of images')
    for name, value in (('--num-images', args.num_images), ('--batch-size', args.batch_size),
                        ('--input-size', args.input_size)):
        if value < 1:
            raise ERFUsageError(f'{name} must be a positive integer, got {value}')
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if args.launcher != 'none':
        device = _init_distributed(args.launcher, device)
    logger = MMLogger.get_instance('mmseg_erf', log_level='INFO')
    config_name = osp.splitext(osp.basename(args.config))[0]
    out_dir = args.out_dir or osp.join('work_dirs', config_name, 'erf')

    model, cfg, report = build_segmentor(args.config, args.checkpoint, device,
                                         args.cfg_options, args.trust_checkpoint,
                                         args.allow_partial, args.seed)
    if report is None and model.pretrained_files:
        logger.info(f'no checkpoint: initial weights from {", ".join(model.pretrained_files)} '
                    '(pretrained in the config), the rest random')
    elif report is None:
        logger.warning('NO CHECKPOINT: the model has RANDOM initial weights; this is the '
                       '"before training" ERF, not the ERF of a trained model')
    elif report.missing_keys or report.unexpected_keys or report.shape_mismatches:
        logger.warning(f'partial load of {args.checkpoint}: {report}')
    session = ERFSession(model, args.targets, args.num_images, args.point, args.class_index)
    check_input_size(session.taps, args.input_size, device)
    dataset = _dataset(cfg, args)
    rank, world = get_dist_info()
    state = RunState(out_dir, _fingerprint(args, world), rank)
    seen = _resume(state, session, logger) if args.resume else 0
    sampler = list(DefaultSampler(dataset, shuffle=False, round_up=True))[seen:]
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, num_workers=args.num_workers, sampler=sampler,
        collate_fn=pseudo_collate, persistent_workers=False)
    total = min(args.num_images, len(dataset))
    logger.info(f'ERF of {config_name}: targets {" ".join(args.targets)}, {total} images '
                f'at {args.input_size}x{args.input_size}, batch {args.batch_size}, '
                f'{world} process(es) on {device}')
    bar = ProgressBar(total) if is_main_process() else None
    if bar is not None and seen:
        bar.update(min(seen * world, total))
    progress = dict(consumed=seen, saved=seen)

    def after_batch(used, consumed):
        progress['consumed'] = consumed
        if bar is not None and used:
            bar.update(min(used * world, total - bar.completed))
        if args.save_every and consumed - progress['saved'] >= args.save_every:
            state.save(session, consumed)
            progress['saved'] = consumed

    try:
        accumulate(model, session, loader, args.input_size, len(dataset), after_batch, seen)
    except KeyboardInterrupt:
        state.save(session, progress['consumed'])
        if world == 1 and session.accumulator is not None:
            partial = session.result(config_name, dict(partial=True))
            partial.write(out_dir)
        print(f'\ninterrupted: the sums of {progress["consumed"]} samples are saved in {out_dir}'
              f'{" (metrics.json: partial)" if world == 1 else ""}; continue with --resume',
              file=sys.stderr)
        raise
    if bar is not None:
        sys.stdout.write('\n')
    reduce_session(session)
    meta = dict(config=osp.abspath(args.config), checkpoint=args.checkpoint, seed=args.seed,
                batch_size=args.batch_size, world_size=world)
    result = session.result(config_name, meta)
    if is_main_process():
        result.write(out_dir)
        print(f'\n{summary_table(result)}\n')
        print(f'{result.num_images} images averaged, {result.skipped} skipped; '
              f'written to {out_dir}')
    state.clear()
    return result


def _fingerprint(args, world: int) -> dict:
    """What shapes the maps; a resumed run must match it."""
    return dict(config=osp.abspath(args.config), checkpoint=args.checkpoint,
                img_dir=args.img_dir, targets=list(args.targets), input_size=args.input_size,
                num_images=args.num_images, point=list(args.point),
                class_index=args.class_index, seed=args.seed, world_size=world,
                cfg_options=args.cfg_options)


def _resume(state: RunState, session: ERFSession, logger) -> int:
    if not state.exists():
        logger.warning(f'--resume: no saved state at {state.path}; starting from the first '
                       f'image')
        return 0
    seen = state.restore(session)
    logger.info(f'resuming from {state.path}: {seen} samples of this process done')
    return seen


def user_errors() -> tuple:
    from .checkpoint import CheckpointMismatchError, UntrustedCheckpointError
    return (FileNotFoundError, TargetError, ERFUsageError, NoImagesError,
            CheckpointMismatchError, UntrustedCheckpointError)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except user_errors() as error:
        print(f'erf_seg.py: error: {error}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
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
