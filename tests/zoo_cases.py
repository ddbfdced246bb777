"""One representative config of each model family in mmseg 1.2.2's ``configs/``.

Used by ``tests/test_model_zoo.py`` and listed in the README's model-zoo table.
Each case: the family, its config (``mmseg::<family>/<config>``), the input side
of the test, config overrides that keep the test small, and, for a family that
cannot run here, the start of the one-sentence refusal it must end in.
"""
from dataclasses import dataclass, field
from typing import Dict, Optional


@dataclass(frozen=True)
class ZooCase:
    family: str
    config: str
    size: int = 64
    options: Dict = field(default_factory=dict)
    refusal: Optional[str] = None  # expected start of the error, for families that refuse
    needs: Optional[str] = None  # an optional package; refused in one sentence without it

    @property
    def name(self) -> str:
        return f'mmseg::{self.family}/{self.config}'


ZOO = (
    ZooCase('ann', 'ann_r50-d8_4xb4-80k_ade20k-512x512.py'),
    ZooCase('apcnet', 'apcnet_r50-d8_4xb4-80k_ade20k-512x512.py'),
    # BEiT and MAE take exactly their img_size (relative position tables): built at 64 here
    ZooCase('beit', 'beit-base_upernet_8xb2-160k_ade20k-640x640.py',
            options={'model.backbone.img_size': (64, 64)}),
    ZooCase('bisenetv1', 'bisenetv1_r18-d32_4xb4-160k_cityscapes-1024x1024.py'),
    ZooCase('bisenetv2', 'bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024.py'),
    ZooCase('ccnet', 'ccnet_r50-d8_4xb4-80k_ade20k-512x512.py'),
    ZooCase('cgnet', 'cgnet_fcn_4xb8-60k_cityscapes-512x1024.py'),
    ZooCase('convnext', 'convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py',
            needs='mmpretrain'),
    ZooCase('danet', 'danet_r50-d8_4xb4-80k_ade20k-512x512.py'),
    ZooCase('ddrnet', 'ddrnet_23-slim_in1k-pre_2xb6-120k_cityscapes-1024x1024.py'),
    ZooCase('deeplabv3', 'deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py'),
    ZooCase('deeplabv3plus', 'deeplabv3plus_r18-d8_4xb2-80k_cityscapes-512x1024.py'),
    ZooCase('dmnet', 'dmnet_r50-d8_4xb4-80k_ade20k-512x512.py'),
    ZooCase('dnlnet', 'dnl_r50-d8_4xb4-80k_ade20k-512x512.py'),
    ZooCase('dpt', 'dpt_vit-b16_8xb2-160k_ade20k-512x512.py'),
    ZooCase('emanet', 'emanet_r50-d8_4xb2-80k_cityscapes-512x1024.py'),
    ZooCase('encnet', 'encnet_r50-d8_4xb4-80k_ade20k-512x512.py'),
    ZooCase('erfnet', 'erfnet_fcn_4xb4-160k_cityscapes-512x1024.py'),
    ZooCase('fastfcn', 'fastfcn_r50-d32_jpu_enc_4xb4-80k_ade20k-512x512.py'),
    ZooCase('fastscnn', 'fast_scnn_8xb4-160k_cityscapes-512x1024.py'),
    ZooCase('fcn', 'fcn_r18-d8_4xb2-80k_cityscapes-512x1024.py'),
    ZooCase('gcnet', 'gcnet_r50-d8_4xb4-80k_ade20k-512x512.py'),
    ZooCase('hrnet', 'fcn_hr18s_4xb4-80k_ade20k-512x512.py'),
    ZooCase('icnet', 'icnet_r18-d8_4xb2-80k_cityscapes-832x832.py'),
    ZooCase('isanet', 'isanet_r50-d8_4xb4-80k_ade20k-512x512.py'),
    ZooCase('knet', 'knet-s3_r50-d8_fcn_8xb2-adamw-80k_ade20k-512x512.py'),
    ZooCase('mae', 'mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py',
            options={'model.backbone.img_size': (64, 64)}),
    ZooCase('mask2former', 'mask2former_r50_8xb2-160k_ade20k-512x512.py'),
    ZooCase('maskformer', 'maskformer_r50-d32_8xb2-160k_ade20k-512x512.py'),
    ZooCase('mobilenet_v2', 'mobilenet-v2-d8_fcn_4xb4-160k_ade20k-512x512.py'),
    # LR-ASPP pools 49 x 49 windows at 1/8 (stride 8): the input needs 392 or more
    ZooCase('mobilenet_v3', 'mobilenet-v3-d8-s_lraspp_4xb4-320k_cityscapes-512x1024.py',
            size=416),
    ZooCase('nonlocal_net', 'nonlocal_r50-d8_4xb4-80k_ade20k-512x512.py'),
    ZooCase('ocrnet', 'ocrnet_hr18s_4xb4-80k_ade20k-512x512.py'),
    ZooCase('pidnet', 'pidnet-s_2xb6-120k_1024x1024-cityscapes.py'),
    ZooCase('point_rend', 'pointrend_r50_4xb4-160k_ade20k-512x512.py'),
    ZooCase('poolformer', 'fpn_poolformer_s12_8xb4-40k_ade20k-512x512.py',
            needs='mmpretrain'),
    ZooCase('psanet', 'psanet_r50-d8_4xb4-80k_ade20k-512x512.py'),
    ZooCase('pspnet', 'pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py'),
    ZooCase('resnest', 'resnest_s101-d8_fcn_4xb4-160k_ade20k-512x512.py'),
    # SAN's MultimodalEncoderDecoder has an image and a text encoder, no backbone, and its
    # head reads the input image too: the logit targets (backbone, neck, then the head
    # on their features) are refused in one sentence; module paths run
    ZooCase('san', 'san-vit-b16_voc12aug-640x640.py',
            refusal="target 'all' needs a segmentor"),
    ZooCase('segformer', 'segformer_mit-b0_8xb2-160k_ade20k-512x512.py'),
    ZooCase('segmenter', 'segmenter_vit-t_mask_8xb1-160k_ade20k-512x512.py'),
    ZooCase('segnext', 'segnext_mscan-t_1xb16-adamw-160k_ade20k-512x512.py'),
    ZooCase('sem_fpn', 'fpn_r50_4xb4-160k_ade20k-512x512.py'),
    # ViT-L's 24 layers cut to 4 (the outputs the heads read become layers 0-3): the
    # width, the naive head and its auxiliary heads stay; this family's build was 40 s
    ZooCase('setr', 'setr_vit-l_naive_8xb2-160k_ade20k-512x512.py',
            options={'model.backbone.num_layers': 4,
                     'model.backbone.out_indices': (0, 1, 2, 3)}),
    ZooCase('stdc', 'stdc1_4xb12-80k_cityscapes-512x1024.py'),
    ZooCase('swin', 'swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'),
    ZooCase('twins', 'twins_pcpvt-s_fpn_fpnhead_8xb4-80k_ade20k-512x512.py'),
    ZooCase('unet', 'unet-s5-d16_fcn_4xb4-40k_drive-64x64.py'),
    ZooCase('upernet', 'upernet_r18_4xb4-80k_ade20k-512x512.py'),
    ZooCase('vit', 'vit_deit-s16_upernet_8xb2-80k_ade20k-512x512.py'),
)
