"""VMamba v2 backbone for MMSegmentation, registered as ``MM_VSSM``.

Takes the constructor arguments of VMamba's released UperNet/ADE20K configs
(segmentation/configs/vssm1) and reproduces ``Backbone_VSSM`` of
classification/models/vmamba.py for the variant those checkpoints use:
forward_type 'v05_noz', downsample 'v3', patchembed 'v2', norm_layer 'ln2d'.
State-dict names and shapes are VMamba's, so its segmentation checkpoints
load with ``strict=True``. Other variants are refused with a ValueError
rather than approximated.
"""
import os
from collections import OrderedDict
from typing import Mapping

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn.bricks import DropPath
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmseg.registry import MODELS

from .layers import DownsampleV3, LayerNorm2d, Mlp, PatchEmbedV2
from .ss2d import SS2D

__all__ = ['MM_VSSM', 'VSSBlock']

# The only values the released VMamba v2 checkpoints use, by argument name.
SUPPORTED = dict(
    forward_type=('v05_noz', ),
    downsample_version=('v3', ),
    patchembed_version=('v2', ),
    norm_layer=('ln2d', ),
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


def _read_checkpoint(path, trust: bool = False):
    """Read a checkpoint file with the project's weights-only loader."""
    # imported here: mmseg_erf/__init__ imports this package before checkpoint
    from ...checkpoint import load_checkpoint_file
    return load_checkpoint_file(path, map_location='cpu', trust=trust)


# VMamba lower-cases these names before looking them up
_CASE_INSENSITIVE = ('norm_layer', 'ssm_act_layer', 'mlp_act_layer')


def _check_choice(name, value):
    supported = SUPPORTED[name]
    norm = value.lower() if name in _CASE_INSENSITIVE and isinstance(value, str) else value
    if norm not in supported:
        raise ValueError(f'MM_VSSM: {name}={value!r} is not supported; supported: '
                         f'{", ".join(map(repr, supported))} (the values of the released '
                         f'VMamba v2 checkpoints)')


class VSSBlock(nn.Module):
    """A VSS block: x + SS2D(LN(x)), then x + MLP(LN(x)), channel-first.

    Args:
        dim (int): Channels.
        drop_path (float): Stochastic depth rate.
        ssm_cfg (dict): Keyword arguments of :class:`SS2D` (without d_model).
        mlp_ratio (float): Hidden channels of the MLP per channel.
        mlp_drop_rate (float): Dropout inside the MLP.
        use_checkpoint (bool): Recompute the block in backward to save memory.
    """

    def __init__(self, dim, drop_path=0., ssm_cfg=None, mlp_ratio=4.0, mlp_drop_rate=0.,
                 use_checkpoint=False):
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.norm = LayerNorm2d(dim)
        self.op = SS2D(d_model=dim, **(ssm_cfg or {}))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = LayerNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=mlp_drop_rate)

    def _forward(self, x):
        x = x + self.drop_path(self.op(self.norm(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward(self, x):
        if self.use_checkpoint and x.requires_grad:
            return cp.checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)


@MODELS.register_module()
class MM_VSSM(BaseModule):
    """VMamba v2 backbone (``Backbone_VSSM``) with VMamba's config arguments.

    Returns the outputs of the stages in ``out_indices``, each normalised by
    its own ``outnorm{i}``, as (B, dims[i], H / 2**(i + 2), W / 2**(i + 2)).

    Args:
        dims (int | Sequence[int]): Channels per stage; an int d means
            (d, 2d, 4d, 8d). Defaults to 96.
        depths (Sequence[int]): Blocks per stage. Defaults to (2, 2, 8, 2).
        ssm_d_state (int): SSM state size. Defaults to 1.
        ssm_ratio (float): SS2D expansion. Defaults to 1.0.
        ssm_dt_rank (int | str): 'auto' or an int. Defaults to 'auto'.
        ssm_conv (int): Depthwise kernel size in SS2D (odd, >= 3). Defaults to 3.
        ssm_conv_bias (bool): Bias of that convolution. Defaults to False.
        ssm_drop_rate (float): Dropout after SS2D. Defaults to 0.
        mlp_ratio (float): MLP expansion (> 0). Defaults to 4.0.
        mlp_drop_rate (float): MLP dropout. Defaults to 0.
        drop_path_rate (float): Stochastic depth, linear over blocks. Defaults to 0.2.
        in_chans (int): Input channels. Defaults to 3.
        use_checkpoint (bool): Gradient checkpointing per block. Defaults to False.
        out_indices (Sequence[int]): Stages to return. Defaults to (0, 1, 2, 3).
        pretrained (str, optional): A VMamba classification checkpoint
            (``ckpt_epoch_*.pth``) loaded by :meth:`init_weights`; None or ''
            for none. Defaults to None.
        forward_type, downsample_version, patchembed_version, norm_layer,
        ssm_act_layer, mlp_act_layer, ssm_init, gmlp, patch_norm, posembed,
        patch_size: VMamba's variant switches; only the values of the
            released checkpoints are accepted (see ``SUPPORTED``).
        num_classes, imgsize: Accepted for VMamba compatibility and unused
            (the backbone has no classifier and no position embedding).
        scan_chunk_size (int): ``chunk_size`` of the selective scan.
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
                 scan_chunk_size=None,
                 init_cfg=None,
                 **kwargs):
        swin = sorted(_SWIN_KEYS.intersection(kwargs))
        if swin:
            raise TypeError(f'MM_VSSM got Swin backbone arguments {swin}: the config inherits '
                            "mmseg's Swin UperNet config; add _delete_=True to model.backbone "
                            '(see configs/vmamba/)')
        if kwargs:
            raise TypeError(f'MM_VSSM got unexpected arguments {sorted(kwargs)}')
        for name, value in (('forward_type', forward_type),
                            ('downsample_version', downsample_version),
                            ('patchembed_version', patchembed_version),
                            ('norm_layer', norm_layer), ('ssm_act_layer', ssm_act_layer),
                            ('mlp_act_layer', mlp_act_layer), ('ssm_init', ssm_init),
                            ('gmlp', gmlp), ('patch_norm', patch_norm), ('posembed', posembed),
                            ('patch_size', patch_size)):
            _check_choice(name, value)
        if not (isinstance(ssm_conv, int) and ssm_conv >= 3 and ssm_conv % 2):
            raise ValueError(f'MM_VSSM: ssm_conv={ssm_conv!r} must be an odd int >= 3')
        if not mlp_ratio > 0 or not ssm_ratio > 0:
            raise ValueError(f'MM_VSSM: mlp_ratio={mlp_ratio!r} and ssm_ratio={ssm_ratio!r} must '
                             'be > 0 (the released models have both branches)')
        if not (ssm_dt_rank == 'auto' or (isinstance(ssm_dt_rank, int) and ssm_dt_rank > 0)):
            raise ValueError(f"MM_VSSM: ssm_dt_rank={ssm_dt_rank!r} must be 'auto' or an int > 0")
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
        ssm_cfg = dict(d_state=ssm_d_state, ssm_ratio=ssm_ratio, dt_rank=ssm_dt_rank,
                       d_conv=ssm_conv, conv_bias=ssm_conv_bias, dropout=ssm_drop_rate)
        if scan_chunk_size is not None:
            ssm_cfg['chunk_size'] = scan_chunk_size
        rates = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()

        self.patch_embed = PatchEmbedV2(in_chans, self.dims[0])
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            first = sum(depths[:i])
            blocks = nn.Sequential(*[
                VSSBlock(self.dims[i], rates[first + j], ssm_cfg, mlp_ratio, mlp_drop_rate,
                         use_checkpoint) for j in range(depth)
            ])
            downsample = DownsampleV3(self.dims[i], self.dims[i + 1]) \
                if i < num_layers - 1 else nn.Identity()
            self.layers.append(nn.Sequential(OrderedDict(blocks=blocks, downsample=downsample)))
        for i in out_indices:
            self.add_module(f'outnorm{i}', LayerNorm2d(self.dims[i]))
        self.apply(self._init_weights)

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
            self.load_classification_checkpoint(self.pretrained)

    def forward(self, x: torch.Tensor):
        x = self.patch_embed(x)
        outs = []
        for i, layer in enumerate(self.layers):
            x = layer.blocks(x)
            if i in self.out_indices:
                outs.append(getattr(self, f'outnorm{i}')(x).contiguous())
            x = layer.downsample(x)
        return tuple(outs)

    def load_classification_checkpoint(self, path_or_state_dict, key: str = 'model',
                                       trust: bool = False):
        """Load a VMamba ImageNet checkpoint (``ckpt_epoch_*.pth``) into the backbone.

        ``classifier.*`` is dropped; ``outnorm*`` (absent from classification
        checkpoints) keeps its initial values, as in VMamba.

        Args:
            path_or_state_dict (str | PathLike | Mapping): The file, the loaded
                checkpoint dict, or a state dict.
            key (str): Entry holding the weights: 'model' or 'model_ema'.
            trust (bool): Unpickle the file with full trust (it can run code).

        Returns:
            dict: 'missing' and 'unexpected' key lists of the load.

        Raises:
            ValueError: When backbone parameters other than outnorm* are
                missing or shapes differ (a checkpoint of another variant).
        """
        if isinstance(path_or_state_dict, Mapping):
            ckpt, source = path_or_state_dict, 'the given checkpoint'
        else:
            source = os.fspath(path_or_state_dict)
            ckpt = _read_checkpoint(source, trust=trust)
        state = _select_state_dict(ckpt, key, source)
        state = OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v)
                            for k, v in state.items())
        skipped = [k for k in state if k.startswith('classifier.')]
        own = self.state_dict()
        unexpected = [k for k in state if k not in own and k not in skipped]
        missing = [k for k in own if k not in state]
        fatal = [k for k in missing if not k.startswith('outnorm')]
        if fatal:
            raise ValueError(
                f'{source} lacks {len(fatal)} of the {len(own)} MM_VSSM parameters (e.g. '
                f'{fatal[:3]}; it has e.g. {list(state)[:3]}): not a VMamba checkpoint of this '
                'variant; check dims, depths and ssm_ratio against the checkpoint')
        bad = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items()
               if k in state and tuple(state[k].shape) != tuple(v.shape)]
        if bad:
            raise ValueError(f'{source}: {len(bad)} shape mismatches (name, checkpoint, model), '
                             f'e.g. {bad[:3]}; check dims, depths and ssm_ratio')
        self.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
        print_log(f'MM_VSSM: loaded {len(own) - len(missing)} tensors from {source} '
                  f'[{key}]; skipped {len(skipped)} classifier.* entries', logger='current')
        if missing:
            print_log(f'MM_VSSM: {len(missing)} tensors not in the checkpoint keep their '
                      f'initial values: {missing}', logger='current')
        if unexpected:
            print_log(f'MM_VSSM: {len(unexpected)} checkpoint entries match no parameter '
                      f'and were ignored, e.g. {unexpected[:5]}', logger='current',
                      level=30)
        return dict(missing=missing, unexpected=unexpected)


def _select_state_dict(ckpt: Mapping, key: str, source: str) -> Mapping:
    """The weights inside a checkpoint: ``ckpt[key]``, or ckpt itself if it is one."""
    if key in ckpt and isinstance(ckpt[key], Mapping):
        return ckpt[key]
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return ckpt
    raise ValueError(f'{source} has no weights under {key!r}; its entries are '
                     f'{sorted(map(str, ckpt))[:10]} (VMamba checkpoints use key="model" '
                     'or key="model_ema")')
