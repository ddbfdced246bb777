from .image_folder import (IMAGE_SUFFIXES, ImageFolderDataset, list_images,
                           unreadable_placeholder)
from .transforms import ERFResizeCrop

__all__ = [
    'ERFResizeCrop', 'IMAGE_SUFFIXES', 'ImageFolderDataset', 'list_images',
    'unreadable_placeholder'
]
