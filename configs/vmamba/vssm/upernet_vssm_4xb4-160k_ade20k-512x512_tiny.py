# First-generation VMamba-T: VMamba's segmentation/configs/vssm/upernet_vssm_4xb4-160k_ade20k-512x512_tiny.py,
# which is its generation's base.
# Checkpoint: vssmtiny_upernet_4xb4-160k_ade20k-512x512_iter_160000.pth
_base_ = ['../_base_/upernet_vssm.py']
