"""What one watch daemon is told: its folders and limits (set by `deepfake-detect watch`'s options)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WatchSettings:
    inbox: Path
    out: Path
    processed: Path | None          # None: finished inputs stay where they are
    failed: Path
    render: bool = False
    workers: int = 1
    timeout_s: float = 600.0
    quiet_s: float = 5.0
    rescan_s: float = 30.0
    max_bytes: int = 8 * 1024**3
    stop_grace_s: float = 30.0
    heartbeat_s: float = 2.0
