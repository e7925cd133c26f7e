"""The pool of own servers reached over SSH: the backend (backend.py), its pool of hosts and
slots (pool.py), its settings in config.yaml (settings.py) and its `dstack pool` commands
(cli.py)."""
