"""The shared core of every job: one analysis (runner, outputs), its settings, report, writers and journal."""
