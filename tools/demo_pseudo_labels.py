#!/usr/bin/env python
"""Pseudo-labels for the demo images: colour clusters shared by all images.

    python tools/demo_pseudo_labels.py IMAGE_DIR LABEL_DIR [--classes 4] [--seed 0]

The demo images have no ground truth. This writes, for every image, a label map
(same stem, .png) whose class is the nearest of K colour centres found by k-means
(Lloyd's iterations, fixed seed) over a subsample of the pixels of all images:
"class" i means "pixels of colour cluster i" in every image, nothing semantic.
It prints the class names (cluster<i>_<RRGGBB>, the centre colour) for
``--class-names`` of tools/erf_seg.py and writes them to LABEL_DIR/classes.txt.
"""
import argparse
import os

import numpy as np
from PIL import Image

SUFFIXES = ('.jpg', '.jpeg', '.png')


def kmeans(pixels: np.ndarray, k: int, seed: int, iterations: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = pixels[rng.choice(len(pixels), size=k, replace=False)]
    for _ in range(iterations):
        nearest = ((pixels[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        centres = np.stack([pixels[nearest == c].mean(0) if (nearest == c).any()
                            else centres[c] for c in range(k)])
    # order the clusters by brightness so names do not depend on the draw
    return centres[np.argsort(centres.sum(1))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('image_dir')
    parser.add_argument('label_dir')
    parser.add_argument('--classes', type=int, default=4)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--first-value', type=int, default=0,
                        help='label value of cluster 0; 1 for configs that read labels '
                             'with reduce_zero_label (ADE20K: value 0 is ignored, k is '
                             'class k - 1)')
    args = parser.parse_args()
    names = sorted(n for n in os.listdir(args.image_dir) if n.lower().endswith(SUFFIXES))
    images = [np.asarray(Image.open(os.path.join(args.image_dir, n)).convert('RGB'),
                         dtype=np.float64) for n in names]
    rng = np.random.default_rng(args.seed)
    sample = np.concatenate([img.reshape(-1, 3)[rng.choice(img.shape[0] * img.shape[1], 4000)]
                             for img in images])
    centres = kmeans(sample, args.classes, args.seed)
    os.makedirs(args.label_dir, exist_ok=True)
    for name, img in zip(names, images):
        flat = img.reshape(-1, 3)
        label = ((flat[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        label = label + args.first_value
        Image.fromarray(label.reshape(img.shape[:2]).astype(np.uint8)).save(
            os.path.join(args.label_dir, os.path.splitext(name)[0] + '.png'))
    classes = [f'cluster{i}_' + ''.join(f'{int(round(v)):02x}' for v in c)
               for i, c in enumerate(centres)]
    with open(os.path.join(args.label_dir, 'classes.txt'), 'w') as f:
        f.write(' '.join(classes) + '\n')
    print(' '.join(classes))


if __name__ == '__main__':
    main()
