"""The watch-folder daemon, tested as a user runs it: a real process on real folders.

Each test starts `deepfake-detect watch` as a subprocess with a test detector (random weights
through the real save/load path) and 8 sampled frames per file, drops files into the inbox and
polls the output folder, the journal and the CSV log with bounded waits. The daemon is always
killed in a `finally`.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from processes import alive

from deepfake_detect.pipeline.core.journal import JOURNAL_NAME, Journal
from deepfake_detect.pipeline.core.report import load_report
from deepfake_detect.pipeline.core.samples import make_sample_video
from deepfake_detect.stages.ensemble import create_detector, save_detector

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from deepfake_detect.pipeline.cli import main; main()"]
START_TIMEOUT = 120.0     # imports + model load in the analysis process, on a busy 2-core machine
FILE_TIMEOUT = 90.0       # one file through the pipeline


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("watch-assets")
    save_detector(create_detector(trained=True), d / "det")
    clips = {
        "a": make_sample_video(d / "a.mp4", 1.0, 25.0, (320, 240), faces=1),
        "b": make_sample_video(d / "b.mp4", 1.0, 25.0, (320, 240), faces=2),
        "c": make_sample_video(d / "c.mp4", 1.0, 25.0, (288, 224), faces=1),
        "d": make_sample_video(d / "d.mp4", 0.8, 25.0, (320, 240), faces=1),
        "e": make_sample_video(d / "e.mp4", 0.8, 25.0, (288, 224), faces=2),
        # long enough that 64 sampled frames take seconds: still running when a signal comes
        "long": make_sample_video(d / "long.mp4", 4.0, 25.0, (640, 360), faces=2),
    }
    return {"weights": d / "det", **clips}


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class Daemon:
    """`deepfake-detect watch` in a subprocess, with its output in a log file."""

    count = 0

    def __init__(self, inbox: Path, out: Path, weights: Path, *extra: str, sampling: int = 8, quiet: float = 0.7):
        Daemon.count += 1
        self.out = out
        self.log_path = out.parent / f"daemon-{Daemon.count}.log"
        self._log = open(self.log_path, "w")
        cmd = [*CLI, "watch", str(inbox), "--out", str(out), "--weights", str(weights), "--device", "cpu",
               "--set", f"sampling.value={sampling}", "--no-render", "--quiet-time", str(quiet), "--rescan", "2", *extra]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        wait_for(lambda: status_file(self.out).get("daemon") == "running", START_TIMEOUT, "the daemon to start", self)

    def children(self) -> list[int]:
        kids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                kids.append(int(stat.parent.name))
        return kids

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"daemon did not exit within {timeout}s of {signal.Signals(sig).name}\n{self.log()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def wait_for(condition, timeout: float, what: str, daemon: Daemon | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if daemon is not None and daemon.proc.poll() is not None:
            pytest.fail(f"the daemon exited (rc {daemon.proc.returncode}) while waiting for {what}\n{daemon.log()}")
        time.sleep(0.1)
    log = f"\n--- daemon log ---\n{daemon.log()}" if daemon else ""
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}{log}")


def status_file(out: Path) -> dict:
    try:
        return json.loads((out / "watch-status.json").read_text())
    except (OSError, ValueError):
        return {}


def journal_rows(out: Path) -> list:
    if not (out / JOURNAL_NAME).exists():
        return []
    journal = Journal(out / JOURNAL_NAME)
    try:
        return journal.all()
    finally:
        journal.close()


def finished(out: Path, name: str) -> list:
    return [e for e in journal_rows(out) if e.path.name == name and e.state in ("done", "failed")]


def csv_rows(out: Path) -> list[dict]:
    path = out / "results.csv"
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def slow_copy(src: Path, dest: Path, chunks: int = 6, pause: float = 0.2) -> None:
    data = src.read_bytes()
    step = len(data) // chunks + 1
    with open(dest, "wb") as fh:
        for i in range(0, len(data), step):
            fh.write(data[i:i + step])
            fh.flush()
            time.sleep(pause)


def test_watch_folder_end_to_end(tmp_path, assets):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    outside = tmp_path / "outside.mp4"
    shutil.copy(assets["a"], outside)
    daemon = Daemon(inbox, out, assets["weights"], "--max-size", "1M", quiet=1.0)
    try:
        daemon.wait_ready()

        # a download in progress (temporary name) and a dotfile: never taken while so named
        shutil.copy(assets["b"], inbox / "download.mp4.part")
        shutil.copy(assets["c"], inbox / ".hidden.mp4")

        # copied in slowly (gaps shorter than the quiet time): taken once, after it is complete
        slow = inbox / "slow clip ü #1.mp4"
        slow_copy(assets["a"], slow)
        wait_for(lambda: finished(out, slow.name), FILE_TIMEOUT, "the slow copy to be processed", daemon)
        report = json.loads((out / "slow_clip_ü_1.mp4.json").read_text())
        assert report["verdict"] != "error", report["errors"]
        assert report["input"]["sha256"] == sha(assets["a"]) and report["input"]["size_bytes"] == assets["a"].stat().st_size
        assert sha(inbox / "processed" / slow.name) == sha(assets["a"])       # moved, content untouched
        assert not slow.exists()

        assert (inbox / "download.mp4.part").exists() and (inbox / ".hidden.mp4").exists()
        os.rename(inbox / "download.mp4.part", inbox / "download.mp4")      # the download completes

        # a corrupt file fails with a reason; the good file after it is still processed
        (inbox / "corrupt.mp4").write_bytes(b"\x00not a video\xff" * 400)
        time.sleep(0.3)
        shutil.copy(assets["c"], inbox / "good.mp4")
        # the same content as the slow copy, under an odd name: the report is reused
        dup_name = "copy of a\n(2) 'x'.mp4"
        shutil.copy(assets["a"], inbox / dup_name)
        # refused: a symlink (to a file outside the inbox) and a file over --max-size
        (inbox / "link.mp4").symlink_to(outside)
        (inbox / "big.mp4").write_bytes(os.urandom(1_200_000))
        # a name that is not valid UTF-8
        raw_name = os.fsdecode(b"raw \xff name.mp4")
        shutil.copy(assets["e"], inbox / raw_name)

        names = ["download.mp4", "corrupt.mp4", "good.mp4", dup_name, "link.mp4", "big.mp4", raw_name]
        wait_for(lambda: all(finished(out, n) for n in names), 3 * FILE_TIMEOUT, "all files to be finished", daemon)

        # a second, different file with an existing name: suffixed, the earlier report is kept
        shutil.copy(assets["d"], inbox / "download.mp4")
        wait_for(lambda: len(finished(out, "download.mp4")) == 2, FILE_TIMEOUT, "the second download.mp4", daemon)

        status = subprocess.run([*CLI, "watch", "--status", "--json", "--out", str(out)], capture_output=True,
                                text=True, cwd=REPO, timeout=120)
        assert status.returncode == 0, status.stderr
        st = json.loads(status.stdout)
        assert st["alive"] and st["counts"] == {"queued": 0, "running": 0, "done": 6, "failed": 3}, st

        assert daemon.stop(signal.SIGTERM) == 0, daemon.log()
    finally:
        daemon.kill()

    rows = {e.path.name: e for e in journal_rows(out) if e.path.name != "download.mp4"}
    # corrupt: error report with the reason, input in failed/
    corrupt = json.loads((out / "corrupt.mp4.json").read_text())
    assert corrupt["verdict"] == "error" and corrupt["errors"] and "video" in corrupt["errors"][0]
    assert corrupt["input"]["sha256"] == sha(inbox / "failed" / "corrupt.mp4")
    assert rows["corrupt.mp4"].state == "failed"
    assert rows["good.mp4"].state == "done" and (inbox / "processed" / "good.mp4").exists()
    # duplicate: reused, not re-analysed
    dup = json.loads((out / "copy_of_a_2_x_.mp4.json").read_text())
    first = json.loads((out / "slow_clip_ü_1.mp4.json").read_text())
    assert dup["outputs"]["reused_report"] == str(out / "slow_clip_ü_1.mp4.json")
    assert any("reuses" in w for w in dup["warnings"])
    assert dup["input"]["path"].endswith(dup_name) and dup["timings"] == first["timings"]
    assert rows[dup_name].reused_from == rows[slow.name].id
    assert (inbox / "processed" / dup_name).exists()
    # refusals: the link itself moved (its target untouched), the big file moved unread
    assert os.path.islink(inbox / "failed" / "link.mp4") and sha(outside) == sha(assets["a"])
    assert "symbolic link" in json.loads((out / "link.mp4.json").read_text())["errors"][0]
    assert "size cap" in json.loads((out / "big.mp4.json").read_text())["errors"][0]
    assert (inbox / "failed" / "big.mp4").stat().st_size == 1_200_000
    # the undecodable name was analysed (through an alias) and moved
    raw = json.loads((out / "raw_name.mp4.json").read_text())
    assert raw["verdict"] != "error" and raw["input"]["sha256"] == sha(assets["e"]), raw["errors"]
    assert sha(inbox / "processed" / raw_name) == sha(assets["e"]) and rows[raw_name].state == "done"
    # name clash: processed/download.mp4 and processed/download-1.mp4, two reports
    downloads = [e for e in journal_rows(out) if e.path.name == "download.mp4"]
    assert sorted(e.sha256 for e in downloads) == sorted([sha(assets["b"]), sha(assets["d"])])
    assert sha(inbox / "processed" / "download.mp4") == sha(assets["b"])
    assert sha(inbox / "processed" / "download-1.mp4") == sha(assets["d"])
    assert len({e.report_path for e in downloads}) == 2 and all(e.report_path.exists() for e in downloads)
    # exactly once: one CSV line per input; only the dotfile is left in the inbox
    paths = [r["path"] for r in csv_rows(out)]
    assert len(paths) == 9 and len(set(paths)) == 8 and paths.count(str(inbox / "download.mp4")) == 2
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == [".hidden.mp4"]
    assert status_file(out)["daemon"] == "stopped"


def test_kill_9_then_restart_processes_everything_exactly_once(tmp_path, assets):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    names = {"one.mp4": assets["a"], "two.mp4": assets["b"], "three.mp4": assets["c"]}
    for name, src in names.items():
        shutil.copy(src, inbox / name)

    daemon = Daemon(inbox, out, assets["weights"])
    try:
        running = wait_for(lambda: [e for e in journal_rows(out) if e.state == "running"], START_TIMEOUT,
                           "a file to be running", daemon)
        kids = daemon.children()
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(10)
    finally:
        daemon.kill()
    # the analysis process dies with the daemon (no orphan keeps writing into OUT)
    wait_for(lambda: not [k for k in kids if alive(k)], 20, "the analysis process to die with the daemon")
    killed_on = running[0].path.name

    # restart with --stop-grace 0, then SIGTERM while a new file is being analysed: README, "Stopping
    # and status": the current file may finish for up to --stop-grace seconds, otherwise it is
    # abandoned, to be redone on the next start. With 0 s it is abandoned: back to queued, no report,
    # no CSV line, not moved, no attempt counted.
    daemon = Daemon(inbox, out, assets["weights"], "--stop-grace", "0", sampling=64)
    try:
        wait_for(lambda: all(finished(out, n) for n in names), 3 * FILE_TIMEOUT, "all files after the restart", daemon)
        shutil.copy(assets["long"], inbox / "four.mp4")
        wait_for(lambda: [e for e in journal_rows(out) if e.path.name == "four.mp4" and e.state == "running"],
                 FILE_TIMEOUT, "four.mp4 to be running", daemon)
        assert daemon.stop(signal.SIGTERM) == 0, daemon.log()
    finally:
        daemon.kill()
    four = [e for e in journal_rows(out) if e.path.name == "four.mp4"]
    assert len(four) == 1 and four[0].state == "queued" and four[0].phase is None and four[0].attempts == 0, four
    assert not (out / "four.mp4.json").exists() and (inbox / "four.mp4").exists()
    assert "four.mp4" not in [Path(r["path"]).name for r in csv_rows(out)]

    daemon = Daemon(inbox, out, assets["weights"])
    try:
        wait_for(lambda: finished(out, "four.mp4"), START_TIMEOUT + FILE_TIMEOUT, "four.mp4 after restart", daemon)
        assert daemon.stop(signal.SIGINT) == 0, daemon.log()
    finally:
        daemon.kill()

    rows = journal_rows(out)
    assert sorted(e.path.name for e in rows) == sorted([*names, "four.mp4"]), rows
    assert all(e.state == "done" for e in rows), [(e.path.name, e.state, e.reason) for e in rows]
    assert [e.attempts for e in rows if e.path.name == killed_on] == [2]
    csv_paths = sorted(Path(r["path"]).name for r in csv_rows(out))
    assert csv_paths == sorted([*names, "four.mp4"])                       # one line each
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == sorted([*names, "four.mp4"])
    for name, src in names.items():
        assert sha(inbox / "processed" / name) == sha(src)
        assert json.loads((out / f"{name}.json").read_text())["verdict"] != "error"
    assert not [p for p in inbox.iterdir() if p.is_file()]




def test_keep_in_place_is_not_reprocessed_and_status_command(tmp_path, assets):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    (inbox / "desk").mkdir(parents=True)
    shutil.copy(assets["a"], inbox / "desk" / "kept.mp4")
    daemon = Daemon(inbox, out, assets["weights"], "--keep", "--rescan", "0.3")
    try:
        wait_for(lambda: finished(out, "kept.mp4"), START_TIMEOUT + FILE_TIMEOUT, "kept.mp4", daemon)
        # several rescans later the file (still in the inbox) has not been taken again
        time.sleep(1.5)
        text = subprocess.run([*CLI, "watch", "--status", "--out", str(out)], capture_output=True, text=True,
                              cwd=REPO, timeout=120)
        assert text.returncode == 0 and "daemon: running" in text.stdout and "done 1" in text.stdout, text
        assert daemon.stop(signal.SIGTERM) == 0, daemon.log()
    finally:
        daemon.kill()
    assert len(journal_rows(out)) == 1 and len(csv_rows(out)) == 1
    assert (inbox / "desk" / "kept.mp4").exists() and not (inbox / "processed").exists()
    stopped = subprocess.run([*CLI, "watch", "--status", "--out", str(out)], capture_output=True, text=True,
                             cwd=REPO, timeout=120)
    assert stopped.returncode == 1 and "not running" in stopped.stdout


def test_timeout_fails_the_file_and_the_daemon_carries_on(tmp_path, assets):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    shutil.copy(assets["b"], inbox / "slow.mp4")
    # 64 sampled frames take seconds on a CPU; a 0.3 s budget cannot be met
    daemon = Daemon(inbox, out, assets["weights"], "--timeout", "0.3", sampling=64)
    try:
        wait_for(lambda: finished(out, "slow.mp4"), START_TIMEOUT + FILE_TIMEOUT, "the timed-out file", daemon)
        report = json.loads((out / "slow.mp4.json").read_text())
        assert report["verdict"] == "error" and "timed out" in report["errors"][0]
        assert (inbox / "failed" / "slow.mp4").exists()
        # the analysis process was restarted: the daemon is still up and answers a signal cleanly
        wait_for(lambda: status_file(out).get("daemon") == "running", 30, "a heartbeat after the timeout", daemon)
        assert daemon.stop(signal.SIGTERM) == 0, daemon.log()
    finally:
        daemon.kill()


def _malformed_burst(src: Path) -> dict[str, bytes]:
    """About ten broken files of the kinds a real inbox gets: cut, flipped, zeroed, mislabelled."""
    import struct
    import zlib

    from PIL import Image

    data = src.read_bytes()
    mid = len(data) // 2
    flipped, zeroed = bytearray(data), bytearray(data)
    for pos in range(mid, mid + 400, 10):
        flipped[pos] ^= 0xA5
    zeroed[mid:mid + 2048] = bytes(len(zeroed[mid:mid + 2048]))

    def png_chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    bomb = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
            + png_chunk(b"IEND", b""))
    import io

    gif = io.BytesIO()
    frames = [Image.new("RGB", (32, 32), (40 * i, 80, 120)) for i in range(4)]
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    dot = io.BytesIO()
    Image.new("RGB", (1, 1)).save(dot, format="PNG")
    return {
        "cut half.mp4": data[:mid], "cut head.mp4": data[:100], "flipped.mp4": bytes(flipped),
        "zeroed.mp4": bytes(zeroed), "notes.mp4": b"not a video\n" * 30, "dot really png.mp4": dot.getvalue(),
        "anim.gif": gif.getvalue(), "broken.gif": gif.getvalue()[:13] + b"\x00\xff" * 200,
        "jpeg head on mp4.jpg": b"\xff\xd8\xff\xe0" + data[4:], "bomb.png": bomb,
    }


def test_a_burst_of_malformed_files_all_end_with_reports(tmp_path, assets):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    burst = _malformed_burst(assets["a"])
    daemon = Daemon(inbox, out, assets["weights"], sampling=4)
    try:
        daemon.wait_ready()
        for name, content in burst.items():  # written under a temporary name, then renamed: all at once
            (inbox / f"{name}.part").write_bytes(content)
            os.rename(inbox / f"{name}.part", inbox / name)
        wait_for(lambda: all(finished(out, n) for n in burst), 3 * FILE_TIMEOUT, "the burst to be finished", daemon)
        assert daemon.stop(signal.SIGTERM) == 0, daemon.log()
    finally:
        daemon.kill()
    rows = {e.path.name: e for e in journal_rows(out)}
    for name in burst:
        report = load_report(rows[name].report_path)
        where = "failed" if report.verdict == "error" else "processed"
        assert rows[name].state == ("failed" if where == "failed" else "done"), (name, rows[name].state)
        assert (inbox / where / name).exists(), name
        for line in report.errors + report.warnings:
            assert "\n" not in line and not re.search(r"internal error|\b0x[0-9a-fA-F]{6,}|\.cc\b|Traceback", line), line
        assert len(report.errors) == (1 if where == "failed" else 0), (name, report.errors)
    assert not [p for p in inbox.iterdir() if p.is_file()]
    log = daemon.log()
    assert "Traceback" not in log and "internal error" not in log and "error while decoding" not in log, log
    assert load_report(rows["anim.gif"].report_path).input.kind == "video"
    assert load_report(rows["dot really png.mp4"].report_path).verdict == "no_face"
    assert load_report(rows["notes.mp4"].report_path).errors == ["not a media file: the content is text"]


# -- the crash windows between the finishing steps, in-process (no model needed) -------------------
def _worker_in_process(tmp_path):
    from deepfake_detect.pipeline.core.config import load_config
    from deepfake_detect.pipeline.watch.settings import WatchSettings
    from deepfake_detect.pipeline.watch.worker import WorkContext, Worker

    inbox, out = (tmp_path / "inbox").resolve(), (tmp_path / "out").resolve()
    inbox.mkdir()
    settings = WatchSettings(inbox=inbox, out=out, processed=inbox / "processed", failed=inbox / "failed")
    worker = Worker(WorkContext(settings, load_config(), Journal(out / JOURNAL_NAME)), proc=None)
    return worker, inbox, out


def _claimed_with_report(worker, path: Path):
    from deepfake_detect.pipeline.core.report import AnalysisReport, InputInfo

    journal = worker.ctx.journal
    st = path.stat()
    entry = journal.add(path, sha(path), st.st_size, st.st_mtime_ns)
    entry = worker.targets(journal.claim())
    dest = worker.destination(entry, ok=True)
    report = AnalysisReport(input=InputInfo(path=str(path), sha256=entry.sha256), verdict="real", score=0.1)
    worker.ctx.json.write(report, path=entry.report_path)
    journal.set_phase(entry.id, "reported", verdict="real", created=report.created)
    return journal.get(entry.id), dest


def _restart(worker):
    worker.ctx.journal.close()
    worker.ctx.journal = Journal(worker.ctx.settings.out / JOURNAL_NAME)
    assert [e.state for e in worker.ctx.journal.recover()] == ["running"]
    return worker.ctx.journal.claim()


def _csv_logged(tmp_path, name: str, content: bytes):
    """A worker whose input `name` is analysed and has its CSV line, the journal not yet told."""
    worker, inbox, out = _worker_in_process(tmp_path)
    src = inbox / name
    src.write_bytes(content)
    entry, dest = _claimed_with_report(worker, src)
    worker.ctx.csv.write(load_report(entry.report_path), entry.report_path)
    return worker, out, src, entry, dest


def test_crash_after_csv_line_before_journal_commit_logs_once(tmp_path):
    worker, out, src, entry, dest = _csv_logged(tmp_path, "x.mp4", b"content")
    entry = _restart(worker)                      # "crash": the CSV line is there, the journal says "reported"
    worker.process(entry)
    assert len(csv_rows(out)) == 1
    assert dest.read_bytes() == b"content" and not src.exists()
    assert worker.ctx.journal.get(entry.id).state == "done"
    worker.ctx.journal.close()


def test_crash_after_move_before_journal_commit_finishes(tmp_path):
    worker, out, src, entry, dest = _csv_logged(tmp_path, "y.mp4", b"more content")
    worker.ctx.journal.set_phase(entry.id, "logged")
    dest.parent.mkdir(parents=True)
    os.rename(src, dest)                          # "crash" right after the move
    entry = _restart(worker)
    worker.process(entry)
    final = worker.ctx.journal.get(entry.id)
    assert final.state == "done" and final.dest_path == dest and dest.read_bytes() == b"more content"
    assert len(csv_rows(out)) == 1
    worker.ctx.journal.close()


def test_discovery_queues_quiet_files_refuses_links_and_stops_hashing(tmp_path, monkeypatch):
    import threading

    from deepfake_detect.pipeline.watch.discovery import Discovery
    from deepfake_detect.pipeline.watch.settings import WatchSettings

    inbox, out = (tmp_path / "inbox").resolve(), (tmp_path / "out").resolve()
    inbox.mkdir()
    settings = WatchSettings(inbox=inbox, out=out, processed=inbox / "processed", failed=inbox / "failed", quiet_s=0)
    journal, stop, queued = Journal(out / JOURNAL_NAME), threading.Event(), []
    found = Discovery(settings, journal, stop, on_queued=lambda: queued.append(1), fail=pytest.fail)
    (inbox / "clip.mp4").write_bytes(b"x" * 3_000_000)
    for name in (".hidden.mp4", "download.mp4.part", "notes.txt", "empty.mp4"):
        (inbox / name).write_bytes(b"" if name == "empty.mp4" else b"x")
    (inbox / "link.mp4").symlink_to(inbox / "clip.mp4")
    jpeg = io.BytesIO()
    Image.new("RGB", (32, 32), "gray").save(jpeg, "JPEG")
    (inbox / "IMG_0001").write_bytes(jpeg.getvalue())   # no suffix: taken by its content, as analyze does
    (inbox / "README").write_text("not media, no suffix")
    import deepfake_detect.pipeline.watch.discovery as discovery

    sniffed: list[str] = []
    real_sniff = discovery.looks_like_media
    monkeypatch.setattr(discovery, "looks_like_media", lambda path: sniffed.append(path.name) or real_sniff(path))
    for _ in range(2):   # the second pass finds nothing new
        found.mark_dirty(inbox)
        found.poll()
    rows = {e.path.name: e for e in journal.all()}
    assert sorted(rows) == ["IMG_0001", "clip.mp4", "link.mp4"] and len(queued) == 3, rows
    assert sniffed.count("README") == 1 and sniffed.count("notes.txt") == 1   # not read again on the rescan
    (inbox / "README").write_bytes(jpeg.getvalue())   # changed: its content is read again, now it is media
    found.mark_dirty(inbox)
    found.poll()
    assert sniffed.count("README") == 2 and "README" in {e.path.name for e in journal.all()}
    assert rows["clip.mp4"].sha256 == sha(inbox / "clip.mp4") and rows["clip.mp4"].refusal is None
    assert rows["link.mp4"].sha256 is None and rows["link.mp4"].refusal.startswith("refused: symbolic link")
    stop.set()   # a large file being hashed does not hold up the shutdown
    assert found._sha256(inbox / "clip.mp4") is None
    journal.close()


def test_closed_analysis_process_refuses_work():
    import threading

    from deepfake_detect.pipeline.core.analysis_process import AnalysisProcess, WorkerStartError
    from deepfake_detect.pipeline.core.config import load_config

    proc = AnalysisProcess(load_config(), False, 1, "worker-1")
    proc.close()      # the daemon's shutdown, while a worker may still be finishing its file
    assert proc.analyze(Path("x.mp4"), None, 10, threading.Event(), 0, threading.Event()) == ("abandoned", None)
    with pytest.raises(WorkerStartError):
        proc.restart()


def test_move_across_file_systems_copies_then_removes_the_source(tmp_path, monkeypatch):
    import errno

    import deepfake_detect.pipeline.watch.file_moves as watch_module

    src, dest = tmp_path / "in" / "clip.mp4", tmp_path / "elsewhere" / "sub" / "clip.mp4"
    src.parent.mkdir()
    src.write_bytes(b"video bytes")
    real_rename = os.rename

    def rename(a, b):
        if Path(a) == src:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(a, b)

    monkeypatch.setattr(watch_module.os, "rename", rename)
    watch_module.move_file(src, dest, "1")
    assert dest.read_bytes() == b"video bytes" and not src.exists()
    assert [p.name for p in dest.parent.iterdir()] == ["clip.mp4"]      # no temporary left behind
    (src.parent / "again.mp4").write_bytes(b"x")
    with pytest.raises(FileExistsError):                                   # never overwrites
        watch_module.move_file(src.parent / "again.mp4", dest, "2")


def test_the_html_setting_writes_a_page_beside_each_report(tmp_path):
    from deepfake_detect.pipeline.core.config import with_overrides
    from deepfake_detect.pipeline.core.lifecycle import JobStep
    from deepfake_detect.pipeline.core.report import AnalysisReport, InputInfo

    worker, inbox, out = _worker_in_process(tmp_path)
    worker.ctx.config = with_overrides(worker.ctx.config, {"render.html": True})   # --set render.html=true
    src = inbox / "z.mp4"
    src.write_bytes(b"z")
    journal = worker.ctx.journal
    journal.add(src, sha(src), src.stat().st_size, src.stat().st_mtime_ns)
    entry = worker.targets(journal.claim())
    worker.lifecycle.complete(JobStep.of(entry), AnalysisReport(input=InputInfo(path=str(src)), verdict="real", score=0.1))
    page = entry.report_path.with_suffix(".html")
    assert page.is_file() and 'id="embedded-job"' in page.read_text(encoding="utf-8")
    assert load_report(entry.report_path).outputs["html"] == str(page)
    journal.close()
