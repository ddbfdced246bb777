# First-generation VMamba (v0: z-gated SS2D with d_state 16, no MLP, patch merging)
# + UperNet on ADE20K, what every release of VMamba's segmentation/configs/vssm shares.
# The values are those of its tiny release; the release files hold what differs.
# VMamba's files leave forward_type at its default 'v2' (same model and computation,
# another state-dict order, and an assertion at HEAD); 'v0' is the path the
# checkpoints were trained with and the order of its parameter manifests.
# Like VMamba's, it inherits mmseg's Swin UperNet config (data, schedule, heads;
# drop_path_rate 0.3 is the Swin value VMamba's files inherit).
_base_ = ['mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['mmseg_erf'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmseg_erf.MM_VSSM',
        out_indices=(0, 1, 2, 3),
        # VMamba's files name ImageNet checkpoints of the authors' machine here
        # (vssmtiny_dp01_ckpt_epoch_292.pth, ...): set your local copy or keep None
        pretrained=None,
        dims=96,
        depths=(2, 2, 9, 2),
        ssm_d_state=16,
        ssm_dt_rank='auto',
        ssm_ratio=2.0,
        ssm_conv=3,
        ssm_conv_bias=True,
        forward_type='v0',
        mlp_ratio=0.0,
        downsample_version='v1',
        patchembed_version='v1',
        drop_path_rate=0.3,
        norm_layer='ln'),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
