"""Members built on efficientnet_pytorch, the library ICPR 2020 (Bonettini et al.) and SBI (Shiohara &
Yamasaki) trained their EfficientNet-B4s with: their imported weights run on the very architecture
they were trained on, padding included (its "same" padding is fixed for the image size the model
was made for, not for the input; timm's is computed per input, so the two differ at 224 px).

Like every member (stages/ensemble.py), images (N, 3, S, S) in, one fake logit (N, 1) out.
"""
from __future__ import annotations

import torch
from torch import nn


class EfficientNetPytorchMember(nn.Module):
    """efficientnet_pytorch's EfficientNet without its ImageNet head, then global average pooling,
    its dropout and one logit.

    `attention_block`: ICPR 2020's AutoAtt variants multiply the output of that block by a learned
    attention map (sigmoid of a 1x1 conv to one channel). `head`: "linear" (one Linear) or
    "bn_linear" (BatchNorm1d then Linear: the siamese-tuned ST variants, which skip the dropout).
    """

    def __init__(self, model_name: str = "efficientnet-b4", attention_block: int | None = None,
                 head: str = "linear", image_size: int | None = None) -> None:
        super().__init__()
        from efficientnet_pytorch import EfficientNet  # here: only detectors made of these members need it

        overrides = {"image_size": image_size} if image_size else {}
        self.efficientnet = EfficientNet.from_name(model_name, **overrides)
        del self.efficientnet._fc
        self.efficientnet.set_swish(memory_efficient=False)   # the plain swish: traceable (ONNX) and hookable (Grad-CAM)
        self.attention_block = attention_block
        if attention_block is not None:
            channels = self.efficientnet._blocks[attention_block]._bn2.num_features
            self.attconv = nn.Conv2d(channels, 1, kernel_size=1)
        features = self.efficientnet._conv_head.out_channels
        if head == "bn_linear":
            self.classifier: nn.Module = nn.Sequential(nn.BatchNorm1d(features), nn.Linear(features, 1))
        elif head == "linear":
            self.classifier = nn.Linear(features, 1)
        else:
            raise ValueError(f"unknown head {head!r}; known: linear, bn_linear")
        self.head = head

    @property
    def grad_cam_layer(self) -> nn.Module:
        """The last convolution's normalised output (a property: an attribute would register it twice)."""
        return self.efficientnet._bn1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.efficientnet
        x = net._swish(net._bn0(net._conv_stem(x)))
        blocks = len(net._blocks)
        for index, block in enumerate(net._blocks):
            # the library's stochastic depth schedule (only active in training)
            x = block(x, drop_connect_rate=(net._global_params.drop_connect_rate or 0.0) * index / blocks)
            if index == self.attention_block:
                x = x * torch.sigmoid(self.attconv(x))
        x = net._swish(net._bn1(net._conv_head(x)))
        x = net._avg_pooling(x).flatten(1)
        if self.head == "linear":
            x = net._dropout(x)
        return self.classifier(x)


class ResNeXtLstmMember(nn.Module):
    """abhijitjadhav1998/Deepfake_detection_using_deep_learning's ResNeXt50-32x4d + LSTM, as its published
    inference computes it, one fake logit per face crop.

    Its `nn.LSTM(2048, 2048, 1, False)` passes False as `bias`, and a window of frames (1, T, 2048)
    meets an LSTM that is not batch-first: the T frames become a batch of one-step sequences, and the
    model reads the output of the last one. Its score of a window is therefore its score of the
    window's last frame, one LSTM step from a zero state; scoring each crop that way gives every
    window's score (tests/test_published.py checks both against the original class). Class 1 is
    REAL, so the fake logit is z0 - z1 (softmax(z)[0] = sigmoid(z0 - z1)).
    """

    def __init__(self, lstm_bias: bool = False) -> None:
        super().__init__()
        import torchvision

        self.model = nn.Sequential(*list(torchvision.models.resnext50_32x4d().children())[:-2])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.lstm = nn.LSTM(2048, 2048, 1, bias=lstm_bias)   # False as published; True for a checkpoint that has biases
        self.classifier = nn.Linear(2048, 1)

    @property
    def grad_cam_layer(self) -> nn.Module:
        return self.model[-1]   # layer4: the last convolutional stage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.avgpool(self.model(x)).flatten(1)          # (N, 2048)
        out, _ = self.lstm(features.unsqueeze(0))                  # one step for each of N sequences
        return self.classifier(out[0])
