# VMamba-T s1l8 (dims 96, depths (2, 2, 8, 2), ssm_ratio 1.0): VMamba's
# segmentation/configs/vssm1/upernet_vssm_4xb4-160k_ade20k-512x512_tiny.py, which is its
# generation's base. Checkpoint: upernet_vssm_4xb4-160k_ade20k-512x512_tiny_s_iter_160000.pth
_base_ = ['../_base_/upernet_vssm1.py']
