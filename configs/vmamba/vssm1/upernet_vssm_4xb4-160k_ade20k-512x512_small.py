# VMamba-S: VMamba's segmentation/configs/vssm1/upernet_vssm_4xb4-160k_ade20k-512x512_small.py.
# Checkpoint: upernet_vssm_4xb4-160k_ade20k-512x512_small_iter_144000.pth
_base_ = ['../_base_/upernet_vssm1.py']
model = dict(backbone=dict(depths=(2, 2, 15, 2), ssm_ratio=2.0, drop_path_rate=0.3))
