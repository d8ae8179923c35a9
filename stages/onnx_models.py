"""ONNX Runtime versions of the networks, for CPU: the ensemble and MTCNN's three nets.

On 2 CPU cores ONNX Runtime runs the ensemble at 44 crops/s against eager PyTorch's 19 (same
logits within 2e-4), and MTCNN's small nets about twice as fast. The ONNX files are exported
from the same PyTorch modules (so from the same safetensors) the first time they are needed; the
pipeline caches them (`pipeline/core/model_cache.py`). PyTorch stays for CUDA and for Grad-CAM.

Tensors in and out, batch first, as the PyTorch modules they stand in for.
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

# Bump when what is exported changes (inputs, outputs, opset): cached files of another version are
# not reused.
EXPORT_VERSION = 1
OPSET = 17
MTCNN_NETS = ("pnet", "rnet", "onet")


class _MemberLogits(nn.Module):
    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.detector(x)  # (ensemble probability (N,), member probabilities (N, M))


def _export(module: nn.Module, example: torch.Tensor, outputs: list[str], dynamic: dict) -> bytes:
    # torch.onnx.export takes a path only; a scratch folder keeps the caller's files whole
    with tempfile.TemporaryDirectory(prefix="onnx-export-") as tmp, warnings.catch_warnings(), torch.no_grad():
        path = Path(tmp) / "model.onnx"
        # the TorchScript exporter: the dynamo one needs onnxscript and gives the same graph here
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["images"], output_names=outputs,
                          dynamic_axes={"images": dynamic, **{name: {0: "n"} for name in outputs}})
        return path.read_bytes()


def export_detector(detector: nn.Module, input_size: int) -> bytes:
    """The whole ensemble (members, combiner, calibration) as an ONNX file's bytes: normalised
    images (N, 3, S, S) in, (probability (N,), member probabilities (N, M)) out."""
    example = torch.zeros(2, 3, input_size, input_size)
    return _export(_MemberLogits(detector), example, ["probability", "member_probabilities"], {0: "n"})


# Each MTCNN net's example input, outputs and dynamic axes: PNet takes any image size, RNet 24x24
# and ONet 48x48 crops.
_MTCNN_SIGNATURES: dict[str, tuple[tuple[int, ...], list[str], dict]] = {
    "pnet": ((1, 3, 64, 80), ["regression", "probabilities"], {0: "n", 2: "h", 3: "w"}),
    "rnet": ((2, 3, 24, 24), ["regression", "probabilities"], {0: "n"}),
    "onet": ((2, 3, 48, 48), ["regression", "landmarks", "probabilities"], {0: "n"}),
}


def export_mtcnn_net(name: str, net: nn.Module) -> bytes:
    """One of MTCNN's nets as an ONNX file's bytes."""
    if name not in _MTCNN_SIGNATURES:
        raise ValueError(f"unknown MTCNN net {name!r}")
    shape, outputs, dynamic = _MTCNN_SIGNATURES[name]
    return _export(net, torch.zeros(*shape), outputs, dynamic)


def make_session(model: Path | bytes, threads: int):
    """An ONNX Runtime CPU session using `threads` intra-op threads and no spinning: idle threads
    that spin steal the cores from the decoder thread and from a second analysis. No memory arena:
    with it, a whole analysis peaked at 2,067 MiB against 1,334 MiB without, at the same speed
    (MTCNN's image pyramid feeds PNet a dozen input sizes, and the arena keeps a block for each)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = False
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


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
