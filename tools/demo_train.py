#!/usr/bin/env python
"""A short CPU training run of the small demo segmentor, with ERFHook on: before vs after.

    python tools/demo_train.py WORK_DIR [--iters 300] [--val-interval 150]

Data: synthetic labelled images (coloured rectangles of 3 classes on a black
background, noise added; classes background/red/green/blue), 64 x 64, written to
WORK_DIR/data in the VOC-like layout. Model: configs/demo/upernet_r18-tiny_imagefolder.py
(random initial weights). Two ERFHooks: centre-point ERFs of backbone.3 and decode_head
(WORK_DIR/erf/iter_<n>/, for ``erf_compare.py --evolution``) and per-class ERFs of
decode_head (WORK_DIR/erf_classes/iter_<n>/). One validation runs before training
(iter_0: the "before" ERFs), then one every ``--val-interval`` iterations.
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
CONFIG = os.path.join(REPO, 'configs', 'demo', 'upernet_r18-tiny_imagefolder.py')
COLOURS = np.array([[0, 0, 0], [220, 30, 30], [30, 220, 30], [30, 30, 220]], np.uint8)


def write_data(root: str, size: int = 64, counts=(('train', 64), ('val', 8))) -> None:
    rng = np.random.default_rng(0)
    for split, count in counts:
        for kind in ('images', 'labels'):
            os.makedirs(os.path.join(root, kind, split), exist_ok=True)
        for i in range(count):
            label = np.zeros((size, size), np.uint8)
            for cls in (1, 2, 3):
                h, w = rng.integers(8, size // 2, 2)
                y, x = rng.integers(0, size - h), rng.integers(0, size - w)
                label[y:y + h, x:x + w] = cls
            image = COLOURS[label].astype(np.int64) + rng.integers(0, 60, (size, size, 3))
            name = f'{split}_{i:03d}'
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
                os.path.join(root, 'images', split, name + '.jpg'))
            Image.fromarray(label).save(os.path.join(root, 'labels', split, name + '.png'))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('work_dir')
    parser.add_argument('--iters', type=int, default=300)
    parser.add_argument('--val-interval', type=int, default=150)
    args = parser.parse_args()
    # first: registers ERFHook and sets the OpenMP wait policy before torch loads it
    import mmseg_erf  # noqa: F401
    from mmengine.config import Config
    from mmengine.runner import Runner
    data = os.path.join(args.work_dir, 'data')
    write_data(data)
    cfg = Config.fromfile(CONFIG)
    test_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                     dict(type='PackSegInputs')]
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader]['dataset']['data_root'] = data
    cfg.val_dataloader.dataset.pipeline = test_pipeline
    cfg.test_dataloader = cfg.val_dataloader
    cfg.train_dataloader.batch_size = 4
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=args.iters,
                         val_interval=args.val_interval)
    cfg.default_hooks.logger.interval = 50
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False,
                                        interval=args.iters)
    cfg.work_dir = args.work_dir
    cfg.launcher = 'none'
    cfg.randomness = dict(seed=0)
    common = dict(num_images=8, input_size=64)
    cfg.custom_hooks = [
        dict(type='ERFHook', targets=['backbone.3', 'decode_head'], **common),
        dict(type='ERFHook', targets=['decode_head'], points=dict(kind='per-class', cap=4),
             out_dir=os.path.join(args.work_dir, 'erf_classes'), **common)]
    runner = Runner.from_cfg(cfg)
    runner.val()      # iter_0: before training
    runner.train()
    return 0


if __name__ == '__main__':
    sys.exit(main())
