"""The state database in SQLite (WAL), safe for many dstack processes at once: runs, jobs,
hosts and their leases, cloud stacks. All of dstack's SQL is here, behind typed rows."""
