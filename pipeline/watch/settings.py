"""What one watch daemon is told: its folders and limits. `deepfake-detect watch` builds it from its options
through the one settings loader (stages/settings.py), so every value is checked before any model loads."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from annotated_types import Ge, Gt


@dataclass(frozen=True)
class WatchSettings:
    inbox: Path
    out: Path
    processed: Path | None          # None: finished inputs stay where they are
    failed: Path
    render: bool = False
    workers: Annotated[int, Ge(1)] = 1
    timeout_s: Annotated[float, Gt(0)] = 600.0
    quiet_s: Annotated[float, Ge(0)] = 5.0
    rescan_s: Annotated[float, Gt(0)] = 30.0
    max_bytes: Annotated[int, Ge(1)] = 8 * 1024**3
    stop_grace_s: Annotated[float, Ge(0)] = 30.0
    heartbeat_s: Annotated[float, Gt(0)] = 2.0
