# First-generation VMamba-B: VMamba's segmentation/configs/vssm/upernet_vssm_4xb4-160k_ade20k-512x512_base.py.
# Checkpoint: vssmbase_upernet_4xb4-160k_ade20k-512x512_iter_128000.pth
_base_ = ['../_base_/upernet_vssm.py']
model = dict(
    backbone=dict(dims=128, depths=(2, 2, 27, 2)),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
