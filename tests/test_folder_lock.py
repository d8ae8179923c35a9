"""One owner per folder (pipeline/core/folder_lock.py), the lock watch, serve and the archive engine share."""
from __future__ import annotations

import os

import pytest

from deepfake_detect.pipeline.archive.journal import BatchLockedError, batch_lock
from deepfake_detect.pipeline.core.folder_lock import FolderBusyError, hold_folder


def test_a_held_folder_is_refused_until_its_owner_lets_go(tmp_path):
    folder = tmp_path / "out"
    first = hold_folder(folder, ".lock", "another daemon is using out")
    assert (folder / ".lock").read_text() == f"{os.getpid()}\n"
    with pytest.raises(FolderBusyError, match="^another daemon is using out$"):
        hold_folder(folder, ".lock", "another daemon is using out")
    first.close()
    hold_folder(folder, ".lock", "busy").close()  # free again once the owner closes


def test_the_archive_engine_holds_its_output_folder_with_it(tmp_path):
    with batch_lock(tmp_path):
        with pytest.raises(BatchLockedError, match="another `analyze --engine ray` is writing to"):
            with batch_lock(tmp_path):
                pass
    with batch_lock(tmp_path):  # released when the run ends
        pass
