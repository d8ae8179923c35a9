"""MTCNN (facenet-pytorch) behind the face-detector seam of `stages/detect.py`.

Its weights ship inside the facenet-pytorch wheel: nothing is downloaded. On CPU its three small nets
can run as ONNX Runtime sessions (exported from those weights, see `onnx_exports`), which give the
same boxes (within 1e-4 px) in about two thirds of the time.
"""
from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import numpy as np
import torch
from torch import nn

from deepfake_detect.stages.detect import DetectSettings, FaceDetector
from deepfake_detect.stages.onnx_models import EXPORT_VERSION, export_module

MTCNN_NETS = ("pnet", "rnet", "onet")


# Each MTCNN net's example input, outputs and dynamic axes: PNet takes any image size, RNet 24x24
# and ONet 48x48 crops.
_MTCNN_SIGNATURES: dict[str, tuple[tuple[int, ...], list[str], dict]] = {
    "pnet": ((1, 3, 64, 80), ["regression", "probabilities"], {0: "n", 2: "h", 3: "w"}),
    "rnet": ((2, 3, 24, 24), ["regression", "probabilities"], {0: "n"}),
    "onet": ((2, 3, 48, 48), ["regression", "landmarks", "probabilities"], {0: "n"}),
}


def _export_net(name: str, net: nn.Module) -> bytes:
    """One of MTCNN's nets as an ONNX file's bytes."""
    if name not in _MTCNN_SIGNATURES:
        raise ValueError(f"unknown MTCNN net {name!r}")
    shape, outputs, dynamic = _MTCNN_SIGNATURES[name]
    return export_module(net, torch.zeros(*shape), outputs, dynamic)



class MtcnnDetector(FaceDetector):
    """facenet-pytorch's MTCNN, batched; `sessions` ("pnet", "rnet", "onet") run its nets on ONNX Runtime."""

    name = "mtcnn"

    def __init__(self, settings: DetectSettings = DetectSettings(), device: str | torch.device = "cpu",
                 sessions: dict[str, Any] | None = None):
        super().__init__(settings, device, sessions)
        from facenet_pytorch import MTCNN  # weights ship inside the wheel: nothing is downloaded

        self._mtcnn = MTCNN(keep_all=True, device=device, min_face_size=self.settings.min_face_size,
                            post_process=False, select_largest=False)
        for name, session in (sessions or {}).items():
            setattr(self._mtcnn, name, OnnxNet(session))

    @classmethod
    def onnx_exports(cls) -> dict[str, tuple[str, Callable[[], bytes]]]:
        tag = f"facenet{version('facenet-pytorch')}-v{EXPORT_VERSION}"

        def build(name: str) -> Callable[[], bytes]:
            def export() -> bytes:
                from facenet_pytorch.models import mtcnn

                net = {"pnet": mtcnn.PNet, "rnet": mtcnn.RNet, "onet": mtcnn.ONet}[name]()
                return _export_net(name, net.eval())
            return export

        return {name: (f"mtcnn-{name}-{tag}.onnx", build(name)) for name in MTCNN_NETS}

    def find(self, frames: np.ndarray) -> list[list[tuple[np.ndarray, float, np.ndarray]]]:
        # MTCNN permutes its (N, H, W, 3) input to (N, 3, H, W): handing it a view of a contiguous
        # (N, 3, H, W) float tensor makes that permute give contiguous memory, on which its image
        # pyramid (area resampling, the largest single cost) runs 1.5x faster; same values.
        planar = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).to(
            torch.float32, memory_format=torch.contiguous_format)  # one pass: convert and reorder together
        with torch.inference_mode():
            boxes, probs, points = self._mtcnn.detect(planar.permute(0, 2, 3, 1), landmarks=True)
        return [[] if frame_boxes is None else list(zip(frame_boxes, frame_probs, frame_points))
                for frame_boxes, frame_probs, frame_points in zip(boxes, probs, points)]


class OnnxNet(nn.Module):
    """An ONNX Runtime session that stands in for an MTCNN net inside facenet-pytorch's
    `detect_face` (which calls the net and reads the dtype of its first parameter)."""

    def __init__(self, session) -> None:
        super().__init__()
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.dtype_marker = nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.session.run(None, {self.input_name: np.ascontiguousarray(x.detach().cpu().numpy(), np.float32)})
        return tuple(torch.from_numpy(out) for out in outputs)
