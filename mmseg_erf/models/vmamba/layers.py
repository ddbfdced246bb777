"""Building blocks of VMamba: channel-first ones of the new generation
(norm_layer='ln2d') and channels-last ones of the first (norm_layer='ln').

Module and parameter names, and the positions of modules inside
``nn.Sequential`` containers, follow VMamba so that its checkpoints load with
``strict=True``: e.g. the patch embedding's convolutions are ``patch_embed.0``
and ``patch_embed.5``, which is why the sequences below keep VMamba's
placeholder ``nn.Identity`` slots.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    'LayerNorm2d', 'Linear2d', 'Mlp', 'PatchEmbedV2', 'DownsampleV3', 'ChannelsLastOutNorm',
    'PatchEmbedV1', 'PatchMergingV1'
]


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


# --- first generation (norm_layer='ln'): channels-last (N, H, W, C) activations ---


class ChannelsLastOutNorm(nn.LayerNorm):
    """``outnorm{i}`` of the first generation: LayerNorm on (N, H, W, C), returned as
    an (N, C, H, W) view, the layout every mmseg neck and head takes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).permute(0, 3, 1, 2)


class ToChannelsLast(nn.Module):
    """(N, C, H, W) -> (N, H, W, C) view: VMamba's parameter-free ``Permute`` slot."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


class PatchEmbedV1(nn.Sequential):
    """VMamba's ``patchembed_version='v1'``: a 4x4 stride-4 convolution, then LayerNorm
    on the channels-last result (``patch_embed.0`` and ``patch_embed.2``).

    Args:
        in_chans (int): Input channels.
        embed_dim (int): Output channels (dims of stage 0).
        patch_size (int): Kernel size and stride. Defaults to 4.
    """

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = 4):
        super().__init__(
            nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size),  # 0
            ToChannelsLast(),
            nn.LayerNorm(embed_dim),  # 2
        )


class PatchMergingV1(nn.Module):
    """VMamba's ``downsample_version='v1'`` (Swin's patch merging), channels-last.

    The four pixels of each 2x2 cell are concatenated in the order (0, 0), (1, 0),
    (0, 1), (1, 1) (row offset first), normalised over the 4C channels, then
    projected to ``out_dim`` without bias. Odd sizes are zero-padded at the
    bottom/right first, as VMamba's current code does.

    Args:
        dim (int): Input channels.
        out_dim (int): Output channels.
    """

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, H, W, C) -> (N, ceil(H / 2), ceil(W / 2), out_dim)."""
        height, width = x.shape[1:3]
        if height % 2 or width % 2:
            x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        cells = (x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2])
        return self.reduction(self.norm(torch.cat(cells, dim=-1)))
