"""Channel-first building blocks of VMamba v2 (norm_layer='ln2d').

Module and parameter names, and the positions of modules inside
``nn.Sequential`` containers, follow VMamba so that its checkpoints load with
``strict=True``: e.g. the patch embedding's convolutions are ``patch_embed.0``
and ``patch_embed.5``, which is why the sequences below keep VMamba's
placeholder ``nn.Identity`` slots.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['LayerNorm2d', 'Linear2d', 'Mlp', 'PatchEmbedV2', 'DownsampleV3']


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dim of an (N, C, H, W) tensor.

    Args:
        num_channels (int): C.
        eps (float): Same as :class:`torch.nn.LayerNorm`. Defaults to 1e-5.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5):
        super().__init__(num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                         self.eps)
        return x.permute(0, 3, 1, 2)


class Linear2d(nn.Linear):
    """A per-pixel linear layer on (N, C, H, W) tensors, i.e. a 1x1 convolution.

    Subclasses :class:`torch.nn.Linear` so that the weight keeps the
    (out_features, in_features) shape of VMamba's checkpoints and gets the
    Linear initialisation of :meth:`MM_VSSM._init_weights`. Computed as a
    matrix product over the pixels of a channels-last view, so activations
    stay channels-last (NCHW views of NHWC memory), the layout in which the
    LayerNorms, projections and depthwise convolutions of the network are
    fastest on CPU.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.permute(0, 2, 3, 1), self.weight, self.bias).permute(0, 3, 1, 2)


class Mlp(nn.Module):
    """Channel-first two-layer MLP of a VSS block (``fc1`` -> GELU -> ``fc2``).

    Args:
        in_features (int): Input and output channels.
        hidden_features (int): Hidden channels.
        drop (float): Dropout after each layer. Defaults to 0.
    """

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.):
        super().__init__()
        self.fc1 = Linear2d(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = Linear2d(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.fc1(x)))
        return self.drop(self.fc2(x))


class PatchEmbedV2(nn.Sequential):
    """VMamba's ``patchembed_version='v2'``: two overlapping stride-2 3x3 convolutions.

    conv(in, dim/2) -> LN2d -> GELU -> conv(dim/2, dim) -> LN2d, a total stride
    of 4 (the only patch size the released models use).

    Args:
        in_chans (int): Input channels.
        embed_dim (int): Output channels (dims of stage 0).
    """

    def __init__(self, in_chans: int, embed_dim: int):
        super().__init__(
            nn.Conv2d(in_chans, embed_dim // 2, kernel_size=3, stride=2, padding=1),  # 0
            nn.Identity(),
            LayerNorm2d(embed_dim // 2),  # 2
            nn.Identity(),
            nn.GELU(),
            nn.Conv2d(embed_dim // 2, embed_dim, kernel_size=3, stride=2, padding=1),  # 5
            nn.Identity(),
            LayerNorm2d(embed_dim),  # 7
        )


class DownsampleV3(nn.Sequential):
    """VMamba's ``downsample_version='v3'``: a stride-2 3x3 convolution and LN2d.

    Args:
        dim (int): Input channels.
        out_dim (int): Output channels.
    """

    def __init__(self, dim: int, out_dim: int):
        super().__init__(
            nn.Identity(),
            nn.Conv2d(dim, out_dim, kernel_size=3, stride=2, padding=1),  # 1
            nn.Identity(),
            LayerNorm2d(out_dim),  # 3
        )
