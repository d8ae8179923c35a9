"""ONNX Runtime versions of the networks, for CPU: the export of any module, the ensemble's, and sessions.

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

import torch
from torch import nn

# Bump when what is exported changes (inputs, outputs, opset): cached files of another version are
# not reused.
EXPORT_VERSION = 1
OPSET = 17


class _MemberLogits(nn.Module):
    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.detector(*xs)  # (ensemble probability (N,), member probabilities (N, M))


def export_module(module: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...], outputs: list[str], dynamic: dict,
                  inputs: list[str] | None = None) -> bytes:
    """A module as ONNX bytes: `example` one input (named "images") or several (named `inputs`), each
    with the `dynamic` axes."""
    examples = example if isinstance(example, tuple) else (example,)
    names = inputs or ["images"]
    # torch.onnx.export takes a path only; a scratch folder keeps the caller's files whole
    with tempfile.TemporaryDirectory(prefix="onnx-export-") as tmp, warnings.catch_warnings(), torch.no_grad():
        path = Path(tmp) / "model.onnx"
        # the TorchScript exporter: the dynamo one needs onnxscript and gives the same graph here
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), examples, str(path), dynamo=False, opset_version=OPSET,
                          input_names=names, output_names=outputs,
                          dynamic_axes={**{name: dynamic for name in names}, **{name: {0: "n"} for name in outputs}})
        return path.read_bytes()


def export_detector(detector: nn.Module, input_size: int | None = None) -> bytes:
    """The whole ensemble (members, combiner, calibration) as an ONNX file's bytes: normalised images
    (N, 3, S, S) in, one input per input group ("images", or "images_0", "images_1", ... for a
    combined detector), and (probability (N,), member probabilities (N, M)) out."""
    sizes = [member_input.input_size for member_input, _ in detector.config.input_groups()]  # type: ignore[union-attr,operator]
    if input_size is not None and len(sizes) == 1:
        sizes = [input_size]
    examples = tuple(torch.zeros(2, 3, size, size) for size in sizes)
    names = ["images"] if len(examples) == 1 else [f"images_{k}" for k in range(len(examples))]
    return export_module(_MemberLogits(detector), examples, ["probability", "member_probabilities"], {0: "n"}, names)


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
