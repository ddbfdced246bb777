# First-generation VMamba-S at 896 x 896: VMamba's segmentation/configs/vssm/upernet_vssm_4xb4-160k_ade20k-896x896_small.py.
# No released checkpoint.
# Differs from the 512 release only in the crop size (mmseg's ADE20K pipelines at 896). VMamba's
# 896 file inherits 19 classes (sic) from an InternImage base; mirrored here.
_base_ = ['./upernet_vssm_4xb4-160k_ade20k-512x512_small.py']
crop_size = (896, 896)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(3584, 896), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(3584, 896), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(num_classes=19),
    auxiliary_head=dict(num_classes=19))
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
