# VMamba-T (v2: ssm_d_state=1, v05_noz) + UperNet on ADE20K 512x512, mirroring
# VMamba's segmentation/configs/vssm1/upernet_vssm_4xb4-160k_ade20k-512x512_tiny.py.
# Like VMamba's, it inherits mmseg's Swin-T UperNet config (data, schedule, heads).
_base_ = ['mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['mmseg_erf'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        # drop the Swin backbone arguments (and its Swin init_cfg) of the base config
        _delete_=True,
        type='MM_VSSM',
        out_indices=(0, 1, 2, 3),
        # a VMamba ImageNet checkpoint (ckpt_epoch_*.pth) to start from, or None;
        # a trained segmentor checkpoint is loaded into the whole model instead
        pretrained=None,
        dims=96,
        depths=(2, 2, 8, 2),
        ssm_d_state=1,
        ssm_dt_rank='auto',
        ssm_ratio=1.0,
        ssm_conv=3,
        ssm_conv_bias=False,
        forward_type='v05_noz',
        mlp_ratio=4.0,
        downsample_version='v3',
        patchembed_version='v2',
        drop_path_rate=0.2,
        norm_layer='ln2d'),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
