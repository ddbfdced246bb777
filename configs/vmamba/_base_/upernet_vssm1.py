# New-generation VMamba (v2: forward_type 'v05_noz', d_state 1, MLP, conv downsampling)
# + UperNet on ADE20K, what every release of VMamba's segmentation/configs/vssm1 shares.
# The values are those of its tiny release (s1l8); the release files hold what differs.
# Like VMamba's, it inherits mmseg's Swin UperNet config (data, schedule, heads).
_base_ = ['mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['mmseg_erf'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        # drop the Swin backbone arguments (and its Swin init_cfg) of the base config
        _delete_=True,
        # this package's MM_VSSM, whatever else a host registers as 'MM_VSSM'
        type='mmseg_erf.MM_VSSM',
        out_indices=(0, 1, 2, 3),
        # a VMamba ImageNet (ckpt_epoch_*.pth) or Mask R-CNN checkpoint to start the
        # backbone from, or None; a trained segmentor checkpoint is loaded into the
        # whole model instead
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
