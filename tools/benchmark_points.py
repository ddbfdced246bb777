#!/usr/bin/env python
"""Cost of a per-class point run against centre-point ERFs, measured side by side.

    python tools/benchmark_points.py [--images 50] [--classes 20] [--cap 4] [--size 128]
                                     [--batch-size 10] [--repeats 3]

A per-class run with C classes x cap points per image computes C x cap maps per
image; the same number of maps as C x cap centre-point ERFs over the same images.
The script times, on the small UperNet of configs/demo (ResNet-18 layout at 1/4
width, decode head with C classes, random weights), alternating:

- one per-class run (ERFSession, cap per class, synthetic labels with every class
  in every image), target decode_head;
- one centre-point run (ERFSession) on the same images and target
(after one untimed warm-up run on two images).

It prints best and median of each and the ratio per-class / (C x cap x centre).
Images and labels are synthetic tensors fed straight to the sessions: the data
pipeline costs the same in both and is left out.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# first: importing the package sets the OpenMP wait policy before torch loads it
from mmseg_erf.engine import ERFSession, PointSpec  # noqa: E402
import torch  # noqa: E402
from mmseg_erf.segmentor import build_segmentor  # noqa: E402

CONFIG = os.path.join(REPO, 'configs', 'demo', 'upernet_r18-tiny_imagefolder.py')


def synthetic_labels(count: int, size: int, classes: int, seed: int = 0) -> np.ndarray:
    """Every class in every image: a grid of blocks in a random class order."""
    rng = np.random.default_rng(seed)
    rows = int(np.ceil(np.sqrt(classes)))
    cols = int(np.ceil(classes / rows))
    labels = np.zeros((count, size, size), dtype=np.int64)
    for i in range(count):
        order = rng.permutation(rows * cols) % classes
        for cell, cls in enumerate(order):
            r, c = divmod(cell, cols)
            labels[i, r * size // rows:(r + 1) * size // rows,
                   c * size // cols:(c + 1) * size // cols] = cls
    return labels


def time_run(session, images, labels, batch_size) -> float:
    start = time.perf_counter()
    for b in range(0, len(images), batch_size):
        extra = {} if labels is None else dict(labels=list(labels[b:b + batch_size]))
        session.process(images[b:b + batch_size], **extra)
    session.result()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[1])
    parser.add_argument('--images', type=int, default=50)
    parser.add_argument('--classes', type=int, default=20)
    parser.add_argument('--cap', type=int, default=4)
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--batch-size', type=int, default=10)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = {'model.decode_head.num_classes': args.classes,
               'model.auxiliary_head.num_classes': args.classes}
    model = build_segmentor(CONFIG, cfg_options=options)[0].eval()
    torch.manual_seed(0)
    images = torch.randn(args.images, 3, args.size, args.size)
    labels = synthetic_labels(args.images, args.size, args.classes)
    spec = PointSpec('per-class', cap=args.cap)
    maps_per_image = args.classes * args.cap
    # warm-up: the first forward and backward allocate and initialise kernels
    time_run(ERFSession(model, ['decode_head'], 2), images[:2], None, 2)
    point_times, centre_times = [], []
    for _ in range(args.repeats):
        session = ERFSession(model, ["decode_head"], args.images, spec)
        point_times.append(time_run(session, images, labels, args.batch_size))
        centre = ERFSession(model, ['decode_head'], args.images)
        centre_times.append(time_run(centre, images, None, args.batch_size))
    points = session.point_count
    assert points == args.images * maps_per_image, (points, args.images * maps_per_image)
    print(f'{args.images} images {args.size}x{args.size}, batch {args.batch_size}, '
          f'{args.classes} classes x {args.cap} points = {maps_per_image} maps per image, '
          f'{args.threads} threads, {args.repeats} repeats (alternating)')
    print(f'backward passes per target: per-class run {session.backwards} '
          f'({session.backwards / args.images:.1f} per image), one centre run '
          f'{args.images // args.batch_size} ({1 / args.batch_size:.2f} per image)')
    for name, values in (('per-class run', point_times), ('one centre run', centre_times)):
        print(f'{name:>16}: best {min(values):.2f} s, median {statistics.median(values):.2f} s')
    best = min(point_times) / (maps_per_image * min(centre_times))
    median = statistics.median(point_times) / (maps_per_image *
                                               statistics.median(centre_times))
    print(f'per-class run / {maps_per_image} centre runs: best {best:.2f}, median {median:.2f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
