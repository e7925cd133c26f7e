"""Planning a run (DAG, inputs, checks) and supervising it (start, stream, sync, finish, stop)."""
