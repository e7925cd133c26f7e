#!/usr/bin/env bash
# Prints COUNT ports that nothing listens on at the host's 127.0.0.1, as the kernel picks them.
# Usage: host-free-ports.sh COUNT
exec python3 - "$1" <<'PYTHON'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PYTHON
