# First-generation VMamba-S: VMamba's segmentation/configs/vssm/upernet_vssm_4xb4-160k_ade20k-512x512_small.py.
# Checkpoint: vssmsmall_upernet_4xb4-160k_ade20k-512x512_iter_160000.pth
_base_ = ['../_base_/upernet_vssm.py']
model = dict(backbone=dict(depths=(2, 2, 27, 2)))
