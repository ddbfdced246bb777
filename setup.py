"""mmseg-erf: effective receptive fields for MMSegmentation models."""
from setuptools import find_packages, setup

# torch is deliberately absent: like mmcv and mmsegmentation we leave the choice of
# build (CPU or a CUDA version) to the user; tools/setup_env.sh installs a CPU build
# only when no torch is present.
install_requires = [
    'mmsegmentation==1.2.2',
    'mmengine>=0.10.0,<0.11',
    # 2.2.0 is refused by mmseg 1.2.2's version check; mmcv-lite lacks mmcv._ext.
    'mmcv>=2.0.0rc4,<2.2.0',
    # mmengine 0.10 resolves `mmseg::` config paths with pkg_resources, which
    # setuptools removed in later releases (84 has none); 69.x also builds mmcv 2.1.0.
    'setuptools<70',
    # numpy 2 works across this stack (training, checkpoints, safe loading: tested).
    'numpy>=1.23',
    'matplotlib>=3.5',
    # mmseg.utils imports these at import time of mmseg.models (its CLIP tokenizer).
    'ftfy',
    'regex',
]

setup(
    name='mmseg_erf',
    version='0.1.0',
    description='Effective receptive fields for MMSegmentation models',
    long_description=open('README.md').read() if __import__('os').path.exists('README.md') else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmseg_erf', 'mmseg_erf.*']),
    # the CPU selective-scan kernel is compiled from its source at first use
    package_data={'mmseg_erf.models.vmamba': ['cpu_scan.c']},
    python_requires='>=3.8',
    install_requires=install_requires,
    extras_require={
        'tests': ['pytest>=7', 'tensorboard'],
        # MaskFormer and Mask2Former configs build mmdet's heads; 3.3.0 accepts
        # mmcv 2.1.0 and mmengine 0.10 and installs without a rebuild
        'mmdet': ['mmdet==3.3.0'],
        # ConvNeXt and PoolFormer configs use mmpretrain's backbones; mmpretrain.models
        # imports torchvision, which must be built for the installed torch (PyPI's
        # builds need a CUDA torch), so tools/setup_env.sh leaves it out
        'mmpretrain': ['mmpretrain==1.2.0'],
        # WandbVisBackend (offline runs are tested)
        'wandb': ['wandb'],
    },
    entry_points={'console_scripts': ['mmseg-erf = mmseg_erf.cli:main',
                                      'erf_compare = mmseg_erf.compare:main']},
    license='Apache-2.0',
)
