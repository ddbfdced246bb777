# Swin-T UperNet exactly as mmseg ships it (ADE20K, 150 classes), for the demo:
# random initial weights unless a checkpoint is given, and no pretrained download.
_base_ = ['mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['mmseg_erf'], allow_failed_imports=False)
model = dict(backbone=dict(init_cfg=None), pretrained=None)
