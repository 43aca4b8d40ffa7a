"""The models a grid cell can train, built by name.

    from jobs.train.models import build_model
    model = build_model("wide_resnet", (1, 28, 28), 10, width=10, depth=16)  # the course's WRN-16-10

Classifiers return logits (the course's softmax lives in the cross-entropy loss).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from jobs.plan.params import GPT_MODEL_ARGS

MODELS = ("linear", "cnn", "wide_resnet", "gpt")


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    width: int = 1,
    depth: int = 16,
    model_args: dict[str, int] | None = None,
) -> nn.Module:
    """A fresh model for inputs of `input_shape` (no batch dimension); num_classes == 0 means regression.
    For gpt, input_shape is (context length,) and num_classes the vocabulary."""
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0 (0 means regression), got {num_classes}")
    if name == "gpt":
        return GPT(vocab_size=num_classes, context=input_shape[0], **{**GPT_MODEL_ARGS, **(model_args or {})})
    if name == "linear":
        return build_linear(input_shape, num_classes)
    if name == "cnn":
        return SmallCNN(_image_shape(name, input_shape), _output_size(num_classes), channels=16 * width)
    if name == "wide_resnet":
        return WideResNet(_image_shape(name, input_shape), _output_size(num_classes), width=width, depth=depth)
    raise ValueError(f"unknown model {name!r}: expected one of {', '.join(MODELS)}")


def _output_size(num_classes: int) -> int:
    return num_classes if num_classes > 0 else 1


def _image_shape(model_name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(
            f"model {model_name!r} needs image inputs shaped (channels, height, width), got {tuple(input_shape)}"
        )
    channels, height, width = input_shape
    return channels, height, width


# ----------------------------------------------------------------------------- linear

def build_linear(input_shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    """Lab 1's y = w x + b for regression, multinomial logistic regression for classification.

    The layer is `model[-1]`: for Lab 1, w = model[-1].weight, b = model[-1].bias.
    """
    in_features = math.prod(input_shape)
    if num_classes == 0:
        layer = nn.Linear(in_features, 1)
        # Lab 1 starts at w = b = 0, so the (w, b) trajectory over the loss surface starts at the origin.
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    else:
        layer = nn.Linear(in_features, num_classes)
    return nn.Sequential(nn.Flatten(), layer)


# ----------------------------------------------------------------------------- cnn

class SmallCNN(nn.Module):
    """Two 3x3 conv layers, each followed by 2x2 max pooling, then a linear head."""

    def __init__(self, image_shape: tuple[int, int, int], output_size: int, channels: int = 16) -> None:
        super().__init__()
        in_channels, height, width = image_shape
        if height < 4 or width < 4:
            raise ValueError(f"model 'cnn' pools twice by 2 and needs images of at least 4x4, got {height}x{width}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(2 * channels * (height // 4) * (width // 4), output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


# ----------------------------------------------------------------------------- wide resnet

class WideBasicBlock(nn.Module):
    """Pre-activation residual block: BN-ReLU-conv3x3, BN-ReLU-conv3x3, plus the shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False) if needs_projection else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = torch.relu(self.bn1(x))
        # A projection shortcut takes the activated input, as in the WRN reference code.
        residual = x if self.shortcut is None else self.shortcut(activated)
        out = self.conv1(activated)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + residual


class WideResNet(nn.Module):
    """WRN-depth-width: conv 16, three groups of blocks of widths 16k, 32k, 64k, BN-ReLU, average pool, linear.

    The 2nd and 3rd groups halve the resolution (stride 2 in their first block), so 8x8 inputs end at 2x2.
    """

    def __init__(self, image_shape: tuple[int, int, int], output_size: int, *, width: int = 1, depth: int = 16) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(
                f"wide_resnet depth must be 6n+4 with n >= 1 blocks per group (10, 16, 22, 28, 40, ...), got {depth}"
            )
        if width < 1:
            raise ValueError(f"wide_resnet width must be a positive integer, got {width}")
        blocks_per_group = (depth - 4) // 6
        in_channels = image_shape[0]
        group_widths = (16 * width, 32 * width, 64 * width)

        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        channels = 16
        for group_index, group_width in enumerate(group_widths):
            for block_index in range(blocks_per_group):
                stride = 2 if group_index > 0 and block_index == 0 else 1
                layers.append(WideBasicBlock(channels, group_width, stride))
                channels = group_width
        self.blocks = nn.Sequential(*layers)
        self.final_bn = nn.BatchNorm2d(channels)
        self.head = nn.Linear(channels, output_size)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.stem(x))
        out = torch.relu(self.final_bn(out))
        out = torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1)
        return self.head(out)


# ----------------------------------------------------------------------------- gpt

class GPT(nn.Module):
    """A decoder-only transformer: GPT-2's definition from transformers, built from a config with
    fresh weights (nothing is downloaded) and no dropout, so that N workers follow one exactly.
    forward(tokens N x T) returns next-token logits N x T x vocab."""

    def __init__(self, *, vocab_size: int, context: int, n_layer: int, n_head: int, n_embd: int) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        if n_embd % n_head != 0:
            raise ValueError(f"gpt n_embd = {n_embd} must be a multiple of n_head = {n_head}")
        config = GPT2Config(vocab_size=vocab_size, n_positions=context, n_embd=n_embd, n_layer=n_layer,
                            n_head=n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                            bos_token_id=None, eos_token_id=None)
        self.transformer = GPT2LMHeadModel(config)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.transformer(input_ids=tokens, use_cache=False).logits
