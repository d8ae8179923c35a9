"""The thread policy: how many CPU threads each analysis may use, decided here and nowhere else.

Two analyses that each spin two threads on a two-core machine take 4-5x as long as one (measured:
22-25 s instead of 5 s), because the threads of PyTorch, ONNX Runtime, OpenCV and the decoder all
busy-wait for each other. So every command that runs analyses side by side (`watch --workers N`,
the server's workers, the bench's two-at-once row) asks `thread_policy(N)` for its share of the
cores and applies it in each analysing process with `apply_thread_policy`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ThreadPolicy:
    compute: int  # intra-op threads of the networks (PyTorch, ONNX Runtime) and OpenCV
    decode: int   # video decoder threads

    def as_dict(self) -> dict[str, int]:
        return {"compute": self.compute, "decode": self.decode}


def thread_policy(concurrent: int = 1, threads: int | None = None) -> ThreadPolicy:
    """The share of this machine's cores for one of `concurrent` analyses running at once;
    `threads` (a user's --threads) overrides it. Decoding gets one thread whenever compute has
    few: it runs beside the networks in its own thread, and more decoder threads only fight them."""
    compute = threads if threads else max(1, available_cores() // max(1, concurrent))
    return ThreadPolicy(compute=compute, decode=1 if compute <= 2 else min(4, compute // 2))


def passive_waits() -> None:
    """Make idle OpenMP threads (PyTorch's on Linux) sleep rather than spin; a user's own
    OMP_WAIT_POLICY wins. Only works before torch is imported: `pipeline/__init__.py` calls it.
    Measured (bench, 30-s 720p clip, 2 cores): warm analysis 1.62-1.72 s passive vs 1.81-2.10 s
    spinning."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def apply_thread_policy(policy: ThreadPolicy) -> None:
    """Set the process-wide thread counts that libraries read once: call before any model runs."""
    import cv2
    import torch

    torch.set_num_threads(policy.compute)
    cv2.setNumThreads(policy.compute)
