#!/usr/bin/env python
"""Pseudo-labels for the demo images: colour clusters shared by all images.

    python tools/demo_pseudo_labels.py IMAGE_DIR LABEL_DIR [--classes 4] [--seed 0]

The demo images have no ground truth. This writes, for every image, a label map
(same stem, .png) whose class is the nearest of K colour centres found by k-means
(Lloyd's iterations, fixed seed) over a subsample of the pixels of all images:
"class" i means "pixels of colour cluster i" in every image, nothing semantic.
It prints the class names (the colour name nearest each centre, such as
``sky-blue`` or ``dark-green``, so a figure reads by what the class shows) for
``--class-names`` of tools/erf_seg.py and writes them to LABEL_DIR/classes.txt.
"""
import argparse
import os

import numpy as np
from PIL import Image

SUFFIXES = ('.jpg', '.jpeg', '.png')
# everyday colour names (hyphenated: classes.txt is split on whitespace); RGB
COLOUR_NAMES = {
    'black': (0, 0, 0), 'dark-grey': (70, 70, 70), 'grey': (128, 128, 128),
    'light-grey': (190, 190, 190), 'white': (245, 245, 245),
    'dark-red': (120, 15, 20), 'red': (210, 35, 35), 'pink': (240, 160, 180),
    'brown': (120, 75, 40), 'orange': (235, 130, 30), 'beige': (215, 195, 155),
    'skin': (225, 170, 140), 'tan': (185, 140, 110), 'yellow': (235, 215, 50),
    'olive': (120, 120, 40),
    'dark-green': (20, 80, 35), 'green': (50, 160, 60), 'light-green': (150, 210, 120),
    'teal': (20, 120, 120), 'cyan': (40, 200, 215), 'sky-blue': (125, 180, 230),
    'azure': (40, 140, 230),
    'blue': (35, 70, 200), 'navy': (20, 30, 90), 'purple': (110, 50, 140),
    'magenta': (210, 50, 180),
}


def kmeans(pixels: np.ndarray, k: int, seed: int, iterations: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = pixels[rng.choice(len(pixels), size=k, replace=False)]
    for _ in range(iterations):
        nearest = ((pixels[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        centres = np.stack([pixels[nearest == c].mean(0) if (nearest == c).any()
                            else centres[c] for c in range(k)])
    # order the clusters by brightness so names do not depend on the draw
    return centres[np.argsort(centres.sum(1))]


def colour_name(rgb) -> str:
    """The nearest everyday colour name ("redmean" weighted RGB distance, which follows
    the eye better than the plain one at no cost)."""
    r, g, b = (float(v) for v in rgb)

    def distance(ref):
        mean = (r + ref[0]) / 2
        dr, dg, db = r - ref[0], g - ref[1], b - ref[2]
        return (2 + mean / 256) * dr * dr + 4 * dg * dg + (2 + (255 - mean) / 256) * db * db
    return min(COLOUR_NAMES, key=lambda name: distance(COLOUR_NAMES[name]))


def class_names(centres) -> list:
    """One colour name per centre; a name two centres share is numbered (green, green-2)."""
    names = []
    for centre in centres:
        name = colour_name(centre)
        names.append(name if name not in names else
                     f'{name}-{sum(n == name or n.startswith(name + "-") for n in names) + 1}')
    return names


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
    classes = class_names(centres)
    with open(os.path.join(args.label_dir, 'classes.txt'), 'w') as f:
        f.write(' '.join(classes) + '\n')
    print(' '.join(classes))


if __name__ == '__main__':
    main()
