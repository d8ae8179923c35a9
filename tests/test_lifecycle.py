"""core.lifecycle: the steps after the analysis, shared by every job system, each recorded before the next."""
from __future__ import annotations

import csv

from deepfake_detect.pipeline.core.journal import Journal
from deepfake_detect.pipeline.core.lifecycle import EntryRecorder, JobLifecycle, JobStep
from deepfake_detect.pipeline.core.report import AnalysisReport, InputInfo, load_report
from deepfake_detect.pipeline.core.writers import CsvLogWriter


def _claimed(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite")
    entry = journal.add(tmp_path / "in.mp4", "ab" * 32, 10, 1)
    journal.claim()
    journal.set_targets(entry.id, tmp_path / "in.mp4.json", tmp_path, None)
    return journal, journal.get(entry.id)


def _lines(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_complete_writes_report_then_line_then_finishes(tmp_path):
    journal, entry = _claimed(tmp_path)
    seen = []
    lifecycle = JobLifecycle(EntryRecorder(journal), CsvLogWriter(tmp_path / "results.csv"),
                             before_finish=lambda step, report: seen.append(journal.get(step.key).phase))
    report = AnalysisReport(input=InputInfo(path="in.mp4"), verdict="fake", score=0.9)
    finished = lifecycle.complete(JobStep.of(entry), report)
    assert finished.kept and seen == ["logged"]     # the last step runs after the line is recorded
    row = journal.get(entry.id)
    assert (row.state, row.phase, row.verdict) == ("done", None, "fake")
    assert load_report(tmp_path / "in.mp4.json").outputs["report"] == str(tmp_path / "in.mp4.json")
    assert [line["verdict"] for line in _lines(tmp_path / "results.csv")] == ["fake"]


def test_resume_after_a_crash_between_line_and_record_logs_once(tmp_path):
    journal, entry = _claimed(tmp_path)
    log = CsvLogWriter(tmp_path / "results.csv")

    class CrashAfterLine(EntryRecorder):
        def logged(self, step):
            raise KeyboardInterrupt   # the process dies after the CSV line, before the journal hears of it

    report = AnalysisReport(input=InputInfo(path="in.mp4"), verdict="error", errors=["not a media file"])
    try:
        JobLifecycle(CrashAfterLine(journal), log).complete(JobStep.of(entry), report)
    except KeyboardInterrupt:
        pass
    entry = journal.get(entry.id)
    assert entry.phase == "reported"
    JobLifecycle(EntryRecorder(journal), log).resume(JobStep.of(entry))
    assert len(_lines(tmp_path / "results.csv")) == 1
    assert journal.get(entry.id).state == "failed"


def test_a_job_gone_from_its_journal_is_not_kept(tmp_path):
    class Deleted(EntryRecorder):
        def finish(self, step, report):
            return False

    journal, entry = _claimed(tmp_path)
    report = AnalysisReport(input=InputInfo(path="in.mp4"), verdict="real", score=0.1)
    assert not JobLifecycle(Deleted(journal), csv=None).complete(JobStep.of(entry), report).kept
    assert not (tmp_path / "results.csv").exists()


def test_a_log_begun_by_an_older_version_keeps_its_columns(tmp_path):
    old = "time,path,verdict,score,fake_percentage,frames_analysed,sha256,report,error\n"
    (tmp_path / "results.csv").write_text(old + "t,a.mp4,real,0.1,0,8,ab,a.json,\n")
    CsvLogWriter(tmp_path / "results.csv").write(AnalysisReport(input=InputInfo(path="b.mp4"), verdict="fake", score=0.9))
    lines = _lines(tmp_path / "results.csv")
    assert [line["path"] for line in lines] == ["a.mp4", "b.mp4"]
    assert all(None not in line for line in lines)   # no row longer than the header
