"""Watch daemon, discovery: find inbox files that are ready to be taken and queue them in the journal.

Paths come from file-system events (watchdog) and from a full rescan every `--rescan` seconds, the
safety net for missed events (network shares, inotify limits). A candidate is taken once its size
and mtime have not changed for `--quiet-time` seconds; it is then either refused (queued with the
reason, never read) or hashed and queued. Discovery runs on its own thread because hashing a large
file takes a while and the daemon's heartbeat must not wait for it.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from deepfake_detect.pipeline.core.inputs import looks_like_media
from deepfake_detect.pipeline.core.journal import Entry, Journal, display_path
from deepfake_detect.pipeline.watch.file_moves import is_within, shown_path
from deepfake_detect.stages.decode import MEDIA_SUFFIXES

if TYPE_CHECKING:
    from watchdog.events import FileSystemEvent
    from watchdog.observers.api import BaseObserver

    from deepfake_detect.pipeline.watch.settings import WatchSettings

# the daemon's one logger, so that its lines keep their name and the level `watch` sets on it
log = logging.getLogger("deepfake_detect.pipeline.watch.daemon")

TEMP_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".filepart", ".swp", "~")
_HASH_BLOCK = 1 << 20


def _same_stat(entry: Entry | None, st: os.stat_result) -> bool:
    """Whether the journal's row for a path saw the file exactly as it is now."""
    return entry is not None and (entry.size, entry.mtime_ns) == (st.st_size, st.st_mtime_ns)


class Discovery:
    """Turns inbox paths into journal rows: ignores, waits for quiet, refuses or hashes and queues."""

    def __init__(self, settings: WatchSettings, journal: Journal, stop: threading.Event,
                 on_queued: Callable[[], None], fail: Callable[[str], None]) -> None:
        self.s = settings
        self.journal = journal
        self.stop = stop
        self.on_queued = on_queued      # a row was added: wake a worker, refresh the status
        self.fail = fail                # discovery cannot go on: the daemon stops with this reason
        self.excluded = [p for p in (settings.out, settings.processed, settings.failed)
                         if p is not None and is_within(p, settings.inbox)]
        self._dirty: set[Path] = set()              # paths to look at (from events, rescans, workers)
        self._dirty_lock = threading.Lock()
        self._pending: dict[Path, tuple[int, int, float]] = {}   # path -> (size, mtime_ns, unchanged since)
        self._said: set[tuple[str, Path]] = set()   # log "ignored" once per path
        # files whose content was read and found not media, by (size, mtime_ns): a rescan of a folder
        # of sidecar files reads none of them again until one changes
        self._not_media: dict[Path, tuple[int, int]] = {}
        self._observer: BaseObserver | None = None
        self._thread: threading.Thread | None = None

    @property
    def arriving(self) -> int:
        """Files seen but not yet quiet long enough (for the status file; read from another thread)."""
        return len(self._pending)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._start_observer()
        self.mark_dirty(self.s.inbox)
        self._thread = threading.Thread(target=self._run, name="discovery", daemon=True)
        self._thread.start()

    def close(self, timeout: float) -> bool:
        """Stop the events and wait for the thread (`stop` is already set). -> whether it ended."""
        if self._observer is not None:
            with contextlib.suppress(Exception):
                self._observer.stop()
                self._observer.join(5)
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            next_rescan = time.monotonic() + self.s.rescan_s
            while not self.stop.is_set():
                now = time.monotonic()
                if now >= next_rescan:
                    self.mark_dirty(self.s.inbox)
                    next_rescan = now + self.s.rescan_s
                self.poll()
                self.stop.wait(0.2)
        except Exception as exc:  # noqa: BLE001 - e.g. the journal's disk failed: stop rather than go blind
            log.exception("discovery failed")
            self.fail(f"discovery failed: {type(exc).__name__}: {exc}")

    def _start_observer(self) -> None:
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:  # pragma: no cover - watchdog is a dependency; rescans still work
            log.warning("watchdog is not installed: relying on rescans every %.0fs", self.s.rescan_s)
            return
        mark_dirty = self.mark_dirty

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("created", "modified", "moved", "closed"):
                    mark_dirty(Path(os.fsdecode(event.src_path)))
                    dest = getattr(event, "dest_path", "")
                    if dest:
                        mark_dirty(Path(os.fsdecode(dest)))

        try:
            observer = Observer()
            observer.schedule(Handler(), str(self.s.inbox), recursive=True)
            observer.start()
            self._observer = observer
        except Exception as exc:  # noqa: BLE001 - e.g. inotify watch limit: rescans are the safety net
            log.warning("file system events unavailable (%s): relying on rescans every %.0fs", exc, self.s.rescan_s)

    # -- one pass -------------------------------------------------------------------------------
    def mark_dirty(self, path: Path) -> None:
        """Look at `path` (a file or a folder) on the next pass; any thread may call this."""
        with self._dirty_lock:
            self._dirty.add(path)

    def poll(self) -> None:
        """Look at the paths marked since the last pass, then take those quiet for long enough."""
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, set()
        for item in dirty:
            for path in self._expand(item):
                self._consider(path)
        now = time.monotonic()
        for path, (size, mtime, since) in list(self._pending.items()):
            if self.stop.is_set():
                return
            st = self._lstat_or_drop(path)
            if st is None:
                continue
            if (st.st_size, st.st_mtime_ns) != (size, mtime):
                self._pending[path] = (st.st_size, st.st_mtime_ns, now)
            elif now - since >= self.s.quiet_s:
                self._pending.pop(path, None)
                self._admit(path, st)

    def _lstat_or_drop(self, path: Path) -> os.stat_result | None:
        """lstat (a link is judged as a link, never followed); a path that is gone stops being a candidate."""
        try:
            return os.lstat(path)
        except OSError:
            self._pending.pop(path, None)
            self._not_media.pop(path, None)
            return None

    def _ignored(self, path: Path) -> str | None:
        """Why `path` is not (yet) a candidate, or None."""
        inbox = self.s.inbox
        if not is_within(path, inbox) or path == inbox:
            return "outside the inbox"
        if any(is_within(path, ex) for ex in self.excluded):
            return "output folder"
        rel = path.relative_to(inbox)
        if any(part.startswith(".") for part in rel.parts):
            return "hidden"
        if path.name.lower().endswith(TEMP_SUFFIXES):
            return "temporary name"
        return None

    def _say_once(self, why: str, path: Path, level: int = logging.INFO) -> None:
        if (why, path) not in self._said:
            self._said.add((why, path))
            log.log(level, "ignoring %s: %s", shown_path(path), why)

    def _expand(self, path: Path) -> list[Path]:
        """A dirty path -> the file paths under it to consider (walks folders, not their symlinks)."""
        try:
            st = os.lstat(path)
        except OSError:
            return [path]
        if not stat.S_ISDIR(st.st_mode):
            return [path]
        found: list[Path] = []
        for root, dirs, files in os.walk(path, followlinks=False):
            if self.stop.is_set():
                break   # a large tree on a slow share must not hold up the shutdown
            root_p = Path(root)
            keep = []
            for d in dirs:
                p = root_p / d
                if os.path.islink(p):
                    files.append(d)    # a symlinked folder is looked at (and refused) as an entry
                elif not d.startswith(".") and not any(is_within(p, ex) for ex in self.excluded):
                    keep.append(d)
            dirs[:] = keep
            found.extend(root_p / f for f in files)
        return found

    def _consider(self, path: Path) -> None:
        why = self._ignored(path)
        if why is not None:
            if why == "temporary name":
                self._say_once(why, path, logging.DEBUG)
            self._pending.pop(path, None)
            return
        st = self._lstat_or_drop(path)
        if st is None:
            return
        is_link = stat.S_ISLNK(st.st_mode)
        if not is_link and not stat.S_ISREG(st.st_mode):
            return   # folders were expanded; fifos, sockets and devices are never opened
        if not is_link and st.st_size == 0:
            return   # a copy that has not started writing yet
        # a file without a suffix is taken by its content, as `analyze` takes it from a folder; a link
        # is judged by its name only (its target is never opened) and, with a media name, refused below
        if not is_link and self._not_media.get(path) == (st.st_size, st.st_mtime_ns):
            return   # read before and unchanged since: still not media
        media = path.suffix.lower() in MEDIA_SUFFIXES if is_link else looks_like_media(path)
        if not media:
            if not is_link:
                self._not_media[path] = (st.st_size, st.st_mtime_ns)
            # other files are left alone: sidecar files, notes, folder links
            self._say_once("not a media file" if not is_link else "symbolic link", path,
                           logging.INFO if not is_link else logging.WARNING)
            return
        if _same_stat(self.journal.current_for_path(path), st):
            return   # already taken (or finished and left in place): nothing new
        old = self._pending.get(path)
        if old is None or (old[0], old[1]) != (st.st_size, st.st_mtime_ns):
            self._pending[path] = (st.st_size, st.st_mtime_ns, time.monotonic())

    # -- taking a stable file -------------------------------------------------------------------
    def _refusal(self, path: Path, st: os.stat_result) -> str | None:
        if stat.S_ISLNK(st.st_mode):
            return f"refused: symbolic link (to {display_path(os.readlink(path))})"
        if not is_within(path.resolve(), self.s.inbox):
            return f"refused: the path resolves outside the inbox ({display_path(path.resolve())})"
        if st.st_size > self.s.max_bytes:
            return f"refused: file is {st.st_size} bytes, over the size cap of {self.s.max_bytes} bytes (--max-size)"
        return None

    def _admit(self, path: Path, st: os.stat_result) -> Entry | None:
        """A stable candidate: refuse it, skip it (already known), or queue it. -> the new row, if any."""
        current = self.journal.current_for_path(path)
        if _same_stat(current, st):
            return None
        try:
            refusal = self._refusal(path, st)
        except OSError:
            return None   # the link went away between two looks; an event or a rescan brings news
        if refusal:
            entry = self.journal.add(path, None, st.st_size, st.st_mtime_ns, refusal=refusal)
            log.warning("%s: %s", shown_path(path), refusal)
        else:
            try:
                sha = self._sha256(path)
                after = os.lstat(path)
            except OSError as exc:
                log.warning("cannot read %s (%s); will look again", shown_path(path), exc.strerror or exc)
                return None
            if sha is None:
                return None   # stopping: the next start finds the file again
            if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                self._pending[path] = (after.st_size, after.st_mtime_ns, time.monotonic())
                return None   # it changed while being hashed: not complete after all
            if current is not None and current.sha256 == sha and current.state != "failed":
                self.journal.touch(current.id, st.st_size, st.st_mtime_ns)
                return None   # same content re-touched; `touch` a failed file to have it retried
            entry = self.journal.add(path, sha, st.st_size, st.st_mtime_ns)
            log.info("queued %s (%s, %d bytes)", shown_path(path), sha[:12], st.st_size)
        self.on_queued()
        return entry

    def _sha256(self, path: Path) -> str | None:
        """The content's sha256 (the key of exactly-once), streamed; None if the daemon began to
        stop meanwhile, so that hashing a file of gigabytes does not hold up the shutdown."""
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(_HASH_BLOCK):
                if self.stop.is_set():
                    return None
                digest.update(block)
        return digest.hexdigest()
