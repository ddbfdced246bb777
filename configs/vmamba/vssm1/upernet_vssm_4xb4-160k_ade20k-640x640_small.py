# VMamba-S at 640 x 640: VMamba's segmentation/configs/vssm1/upernet_vssm_4xb4-160k_ade20k-640x640_small.py.
# No released checkpoint.
# Differs from the 512 release only in the crop size (mmseg's ADE20K pipelines at 640).
_base_ = ['./upernet_vssm_4xb4-160k_ade20k-512x512_small.py']
crop_size = (640, 640)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(2560, 640), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2560, 640), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
model = dict(data_preprocessor=dict(size=crop_size))
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
