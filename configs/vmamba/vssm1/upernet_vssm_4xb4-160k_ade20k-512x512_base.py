# VMamba-B: VMamba's segmentation/configs/vssm1/upernet_vssm_4xb4-160k_ade20k-512x512_base.py.
# Checkpoint: upernet_vssm_4xb4-160k_ade20k-512x512_base_iter_160000.pth
_base_ = ['../_base_/upernet_vssm1.py']
model = dict(
    backbone=dict(dims=128, depths=(2, 2, 15, 2), ssm_ratio=2.0, drop_path_rate=0.6),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
