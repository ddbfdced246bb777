#!/usr/bin/env python
"""Write the demo's images: crops of the photographs bundled with matplotlib.

    python tools/demo_images.py OUT_DIR [--count 8]

No download: matplotlib ships these files in ``mpl-data/sample_data``.
"""
import argparse
import os

import numpy as np
from matplotlib import cbook
from PIL import Image

SOURCES = ('grace_hopper.jpg', 'Minduka_Present_Blue_Pack.png')


def demo_images(count: int = 8):
    """Deterministic RGB images of varied size and aspect ratio."""
    photos = []
    for name in SOURCES:
        with cbook.get_sample_data(name, asfileobj=True) as f:
            photos.append(np.asarray(Image.open(f).convert('RGB')))
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        frac = 0.6 + 0.4 * ((i * 37) % 10) / 10       # 60-100 % of the photo
        ch, cw = int(h * frac), int(w * frac * (1.25 if i % 3 == 0 else 1.0))
        cw = min(cw, w)
        top, left = (i * 53) % (h - ch + 1), (i * 71) % (w - cw + 1)
        crop = photo[top:top + ch, left:left + cw]
        yield crop[:, ::-1] if i % 2 else crop


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out_dir')
    parser.add_argument('--count', type=int, default=8)
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    for i, image in enumerate(demo_images(args.count)):
        Image.fromarray(np.ascontiguousarray(image)).save(
            os.path.join(args.out_dir, f'demo_{i:02d}.jpg'), quality=92)
    print(f'{args.count} demo images in {args.out_dir}')


if __name__ == '__main__':
    main()
