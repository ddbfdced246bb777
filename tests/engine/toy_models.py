"""Small models with known ERFs, shared by the engine tests."""
import torch
import torch.nn.functional as F
from torch import nn


def conv(in_ch, out_ch, kernel, bias):
    layer = nn.Conv2d(in_ch, out_ch, kernel.shape[-1], padding=kernel.shape[-1] // 2)
    with torch.no_grad():
        layer.weight.copy_(kernel)
        layer.bias.fill_(bias)
    return layer


class ToyBackbone(nn.Module):
    """Two stages; out_indices as mmseg backbones expose it."""
    out_indices = (0, 1)

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1),
                                    nn.BatchNorm2d(16), nn.GELU())

    def forward(self, x):
        a = self.stem(x)
        return a, self.stage2(a)


class CountingHead(nn.Module):
    align_corners = False

    def __init__(self, num_classes=5):
        super().__init__()
        self.calls = 0
        self.conv_seg = nn.Conv2d(16, num_classes, 1)

    def forward(self, feats):
        self.calls += 1
        return self.conv_seg(feats[-1])


class ToySegmentor(nn.Module):
    """Duck-types an mmseg EncoderDecoder: backbone, neck=None, decode_head."""

    def __init__(self):
        super().__init__()
        self.backbone = ToyBackbone()
        self.neck = None
        self.decode_head = CountingHead()
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                with torch.no_grad():
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)


class NaNOnNegativeMean(nn.Module):
    """A conv whose output is NaN for images with a negative mean."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        scale = torch.where(x.mean(dim=(1, 2, 3), keepdim=True) > 0, 1.0, float('nan'))
        return F.relu(self.conv(x)) * scale + 1.0
