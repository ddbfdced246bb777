"""Say what a VMamba checkpoint is and which config of this repo loads it.

    python tools/vmamba_ckpt.py CKPT [CKPT ...] [--trust-checkpoint]

Reads segmentation (mmseg), detection (mmdet Mask R-CNN) and ImageNet
classification checkpoints of both VMamba generations, current or January
2024 names, and prints the generation, dims, depths, d_state, ssm_ratio,
the matching config under configs/vmamba and the tools/erf_seg.py command.
"""
import argparse
import pickle
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('checkpoints', nargs='+', metavar='CKPT')
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help='unpickle with full trust (only for files from a trusted source)')
    args = parser.parse_args(argv)
    from mmseg_erf.checkpoint import UntrustedCheckpointError, load_checkpoint_file
    from mmseg_erf.models.vmamba.detect import checkpoint_report
    status = 0
    for path in args.checkpoints:
        try:
            try:
                checkpoint = load_checkpoint_file(path, trust=args.trust_checkpoint)
            except (RuntimeError, EOFError, IndexError, pickle.UnpicklingError) as error:
                raise ValueError(f'{path} is not a readable torch checkpoint '
                                 f'({type(error).__name__}: {error})') from None
            if not isinstance(checkpoint, dict):
                raise ValueError(f'{path} holds a {type(checkpoint).__name__}, not a '
                                 'checkpoint dict')
            print('\n'.join(checkpoint_report(checkpoint, path)))
        except (FileNotFoundError, UntrustedCheckpointError, ValueError) as error:
            print(f'vmamba_ckpt.py: error: {error}', file=sys.stderr)
            status = 2
    return status


if __name__ == '__main__':
    sys.exit(main())
