"""Archive engines: many files at once, resumable (`analyze --engine ray`)."""
