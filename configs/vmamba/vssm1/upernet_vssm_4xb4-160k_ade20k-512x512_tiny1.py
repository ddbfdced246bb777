# VMamba-T s2l5: VMamba's segmentation/configs/vssm1/upernet_vssm_4xb4-160k_ade20k-512x512_tiny1.py.
# Checkpoint: upernet_vssm_4xb4-160k_ade20k-512x512_tiny_iter_160000.pth (VMamba's
# performance.md links it to tiny.py, but its architecture is this one's).
_base_ = ['../_base_/upernet_vssm1.py']
model = dict(backbone=dict(depths=(2, 2, 5, 2), ssm_ratio=2.0))
