"""VMamba backbone for MMSegmentation: ``MM_VSSM``, both released generations.

Takes the constructor arguments of VMamba's released UperNet/ADE20K configs
(segmentation/configs/vssm and vssm1) and reproduces ``Backbone_VSSM`` of
classification/models/vmamba.py for the two variants those checkpoints use
(see generations.py). State-dict names and shapes are VMamba's, so its
segmentation checkpoints load with ``strict=True``; the January 2024 names of
first-generation checkpoints are renamed on load as VMamba does it. Other
variants are refused with a ValueError rather than approximated.
"""
from collections import OrderedDict

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule

from ...registry import MODELS
from .generations import Generation, generation_of
from .names import rename_legacy_keys
from .pretrained import load_backbone_weights

__all__ = ['MM_VSSM', 'rename_legacy_keys']

#: backend of the selective scan (see selective_scan.py)
SCAN_BACKENDS = ('auto', 'torch', 'cpu', 'cuda')
# Switches with one accepted value in both generations, by argument name.
SUPPORTED = dict(
    ssm_act_layer=('silu', ),
    mlp_act_layer=('gelu', ),
    ssm_init=('v0', ),
    gmlp=(False, ),
    patch_norm=(True, ),
    posembed=(False, ),
    patch_size=(4, ),
)
# Backbone keys of mmseg's Swin UperNet config that reach MM_VSSM when a config
# inherits it without ``_delete_=True`` in model.backbone.
_SWIN_KEYS = frozenset(('embed_dims', 'num_heads', 'window_size', 'qkv_bias', 'qk_scale',
                        'drop_rate', 'attn_drop_rate', 'use_abs_pos_embed', 'act_cfg',
                        'norm_cfg', 'pretrain_img_size', 'strides', 'with_cp',
                        'frozen_stages'))
# VMamba lower-cases these names before looking them up
_CASE_INSENSITIVE = ('norm_layer', 'ssm_act_layer', 'mlp_act_layer')


def _normalised(name, value):
    return value.lower() if name in _CASE_INSENSITIVE and isinstance(value, str) else value


def _check_choice(name, value):
    supported = SUPPORTED[name]
    if _normalised(name, value) not in supported:
        raise ValueError(f'MM_VSSM: {name}={value!r} is not supported; supported: '
                         f'{", ".join(map(repr, supported))} (the values of the released '
                         f'VMamba checkpoints)')


def _check_generation(generation: Generation, forward_type, mlp_ratio, values: dict):
    """Every switch at the value of the generation ``forward_type`` names."""
    for name, expected in generation.switches.items():
        if _normalised(name, values[name]) != expected:
            raise ValueError(
                f'MM_VSSM: {name}={values[name]!r} does not go with forward_type='
                f'{forward_type!r}: the {generation.title} has {name}={expected!r} (no '
                'released checkpoint mixes the generations)')
    if generation.has_mlp != (mlp_ratio > 0):
        need = '> 0' if generation.has_mlp else '0.0'
        raise ValueError(f'MM_VSSM: mlp_ratio={mlp_ratio!r} does not go with forward_type='
                         f'{forward_type!r}: the {generation.title} has mlp_ratio {need}')


@MODELS.register_module()
class MM_VSSM(BaseModule):
    """VMamba backbone (``Backbone_VSSM``) with VMamba's config arguments.

    Returns the outputs of the stages in ``out_indices``, each normalised by
    its own ``outnorm{i}``, as (B, dims[i], H / 2**(i + 2), W / 2**(i + 2)).
    ``forward_type`` picks the generation (see ``generations.py``): 'v05_noz'
    the new one (defaults below), 'v0' or 'v2' the first (d_state 16, z-gated
    SS2D, no MLP, patch merging; 'v2' is the same model in VMamba's other
    state-dict order).

    Args:
        dims (int | Sequence[int]): Channels per stage; an int d means
            (d, 2d, 4d, 8d). Defaults to 96.
        depths (Sequence[int]): Blocks per stage. Defaults to (2, 2, 8, 2).
        ssm_d_state (int): SSM state size. Defaults to 1.
        ssm_ratio (float): SS2D expansion. Defaults to 1.0.
        ssm_dt_rank (int | str): 'auto' or an int. Defaults to 'auto'.
        ssm_conv (int): Depthwise kernel size in SS2D (odd, >= 3; 3 in the
            first generation). Defaults to 3.
        ssm_conv_bias (bool): Bias of that convolution (True in the first
            generation). Defaults to False.
        ssm_drop_rate (float): Dropout after SS2D. Defaults to 0.
        mlp_ratio (float): MLP expansion (> 0 in the new generation, 0.0 in
            the first). Defaults to 4.0.
        mlp_drop_rate (float): MLP dropout. Defaults to 0.
        drop_path_rate (float): Stochastic depth, linear over blocks. Defaults to 0.2.
        in_chans (int): Input channels. Defaults to 3.
        use_checkpoint (bool): Gradient checkpointing per block. Defaults to False.
        out_indices (Sequence[int]): Stages to return. Defaults to (0, 1, 2, 3).
        pretrained (str, optional): A VMamba classification checkpoint
            (``ckpt_epoch_*.pth``) or VMamba Mask R-CNN checkpoint loaded by
            :meth:`init_weights`; None or '' for none. Defaults to None.
        pretrained_key (str): Entry of a classification checkpoint to use:
            'model' or 'model_ema'. Defaults to 'model'.
        forward_type, downsample_version, patchembed_version, norm_layer:
            VMamba's generation switches (see ``generations.py``).
        ssm_act_layer, mlp_act_layer, ssm_init, gmlp, patch_norm, posembed,
        patch_size: VMamba's other switches; only the values of the released
            checkpoints are accepted (see ``SUPPORTED``).
        num_classes, imgsize: Accepted for VMamba compatibility and unused
            (the backbone has no classifier and no position embedding).
        scan_chunk_size (int): ``chunk_size`` of the selective scan.
        scan_backend (str): How the selective scan runs: 'auto' (a CUDA kernel
            on the GPU when installed, the compiled CPU kernel on the CPU where
            a C compiler is found, else PyTorch), 'torch' (PyTorch operations
            only), 'cpu' or 'cuda'. Defaults to 'auto'.
        init_cfg (dict, optional): mmengine initialisation config.
    """

    def __init__(self,
                 dims=96,
                 depths=(2, 2, 8, 2),
                 ssm_d_state=1,
                 ssm_ratio=1.0,
                 ssm_dt_rank='auto',
                 ssm_act_layer='silu',
                 ssm_conv=3,
                 ssm_conv_bias=False,
                 ssm_drop_rate=0.,
                 ssm_init='v0',
                 forward_type='v05_noz',
                 mlp_ratio=4.0,
                 mlp_act_layer='gelu',
                 mlp_drop_rate=0.,
                 gmlp=False,
                 drop_path_rate=0.2,
                 patch_size=4,
                 in_chans=3,
                 num_classes=1000,
                 patch_norm=True,
                 norm_layer='ln2d',
                 downsample_version='v3',
                 patchembed_version='v2',
                 use_checkpoint=False,
                 posembed=False,
                 imgsize=224,
                 out_indices=(0, 1, 2, 3),
                 pretrained=None,
                 pretrained_key='model',
                 scan_chunk_size=None,
                 scan_backend='auto',
                 init_cfg=None,
                 **kwargs):
        swin = sorted(_SWIN_KEYS.intersection(kwargs))
        if swin:
            raise TypeError(f'MM_VSSM got Swin backbone arguments {swin}: the config inherits '
                            "mmseg's Swin UperNet config; add _delete_=True to model.backbone "
                            '(see configs/vmamba/)')
        if kwargs:
            raise TypeError(f'MM_VSSM got unexpected arguments {sorted(kwargs)}')
        generation = generation_of(forward_type)
        for name, value in (('ssm_act_layer', ssm_act_layer), ('mlp_act_layer', mlp_act_layer),
                            ('ssm_init', ssm_init), ('gmlp', gmlp), ('patch_norm', patch_norm),
                            ('posembed', posembed), ('patch_size', patch_size)):
            _check_choice(name, value)
        if not (isinstance(ssm_conv, int) and ssm_conv >= 3 and ssm_conv % 2):
            raise ValueError(f'MM_VSSM: ssm_conv={ssm_conv!r} must be an odd int >= 3')
        _check_generation(generation, forward_type, mlp_ratio, dict(
            downsample_version=downsample_version, patchembed_version=patchembed_version,
            norm_layer=norm_layer, ssm_conv=ssm_conv, ssm_conv_bias=ssm_conv_bias))
        if not ssm_ratio > 0:
            raise ValueError(f'MM_VSSM: ssm_ratio={ssm_ratio!r} must be > 0 (the released '
                             'models have the SS2D branch)')
        if not (ssm_dt_rank == 'auto' or (isinstance(ssm_dt_rank, int) and ssm_dt_rank > 0)):
            raise ValueError(f"MM_VSSM: ssm_dt_rank={ssm_dt_rank!r} must be 'auto' or an int > 0")
        if scan_backend not in SCAN_BACKENDS:
            raise ValueError(f'MM_VSSM: scan_backend={scan_backend!r} must be one of '
                             f'{SCAN_BACKENDS}')
        if pretrained_key not in ('model', 'model_ema'):
            raise ValueError(f"MM_VSSM: pretrained_key={pretrained_key!r} must be 'model' or "
                             "'model_ema'")
        pretrained = pretrained or None  # VMamba's configs write pretrained=""
        if pretrained is not None and init_cfg is not None:
            raise ValueError('MM_VSSM: give either pretrained (a VMamba classification '
                             'checkpoint) or init_cfg, not both')
        super().__init__(init_cfg=init_cfg)

        num_layers = len(depths)
        if isinstance(dims, int):
            dims = [dims * 2**i for i in range(num_layers)]
        if len(dims) != num_layers:
            raise ValueError(f'MM_VSSM: dims {list(dims)} and depths {list(depths)} differ in '
                             'length')
        out_indices = tuple(out_indices)
        if not out_indices or any(not 0 <= i < num_layers for i in out_indices):
            raise ValueError(f'MM_VSSM: out_indices={out_indices} must be a non-empty subset of '
                             f'0..{num_layers - 1}')
        self.dims, self.out_indices, self.pretrained = list(dims), out_indices, pretrained
        self.pretrained_key, self.generation = pretrained_key, generation
        ssm_cfg = dict(d_state=ssm_d_state, ssm_ratio=ssm_ratio, dt_rank=ssm_dt_rank,
                       dropout=ssm_drop_rate)
        if generation.has_mlp:  # the first generation's SS2D fixes the convolution
            ssm_cfg.update(d_conv=ssm_conv, conv_bias=ssm_conv_bias)
        if scan_chunk_size is not None:
            ssm_cfg['chunk_size'] = scan_chunk_size
        ssm_cfg['scan_backend'] = scan_backend
        block_cfg = dict(ss2d=generation.ss2d[forward_type], ssm_cfg=ssm_cfg,
                         use_checkpoint=use_checkpoint)
        if generation.has_mlp:
            block_cfg.update(mlp_ratio=mlp_ratio, mlp_drop_rate=mlp_drop_rate)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()

        self.patch_embed = generation.patch_embed(in_chans, self.dims[0])
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            first = sum(depths[:i])
            blocks = nn.Sequential(*[
                generation.block(self.dims[i], rates[first + j], **block_cfg)
                for j in range(depth)
            ])
            downsample = generation.downsample(self.dims[i], self.dims[i + 1]) \
                if i < num_layers - 1 else nn.Identity()
            self.layers.append(nn.Sequential(OrderedDict(blocks=blocks, downsample=downsample)))
        for i in out_indices:
            self.add_module(f'outnorm{i}', generation.out_norm(self.dims[i]))
        self.apply(self._init_weights)

    def rename_legacy_keys(self, state_dict: dict, prefix: str = '') -> int:
        """Rename VMamba's January 2024 names under ``prefix`` in place and log it;
        see :func:`rename_legacy_keys`."""
        renamed = rename_legacy_keys(state_dict, prefix)
        if renamed:
            print_log(f'MM_VSSM: renamed {renamed} parameters from VMamba\'s January 2024 '
                      'names (patch_embed.proj/norm, blocks.*.ln_1, blocks.*.self_attention) '
                      'to the current ones', logger='current')
        return renamed

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # old names first, as VMamba's own VSSM._load_from_state_dict does
        self.rename_legacy_keys(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @staticmethod
    def _init_weights(m: nn.Module):
        """VSSM._init_weights: Linear (incl. Linear2d) ~ trunc normal 0.02, LN = (1, 0)."""
        if any(p.is_meta for p in m.parameters(recurse=False)):
            return
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def init_weights(self):
        """mmengine init_cfg handling, then ``pretrained`` if one was given."""
        super().init_weights()
        if self.pretrained is not None:
            self.load_pretrained(self.pretrained)

    def forward(self, x: torch.Tensor):
        x = self.patch_embed(x)
        outs = []
        for i, layer in enumerate(self.layers):
            x = layer.blocks(x)
            if i in self.out_indices:
                outs.append(getattr(self, f'outnorm{i}')(x).contiguous())
            x = layer.downsample(x)
        return tuple(outs)

    def load_pretrained(self, path_or_checkpoint, key=None, trust: bool = False):
        """Load the backbone of a VMamba ImageNet, COCO or ADE20K checkpoint.

        See :func:`~.pretrained.load_backbone_weights`; ``key`` defaults to
        ``pretrained_key``.
        """
        return load_backbone_weights(self, path_or_checkpoint, key or self.pretrained_key,
                                     trust=trust)
