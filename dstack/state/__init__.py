"""Run, job and tag records in SQLite (WAL), safe for many dstack processes at once."""
