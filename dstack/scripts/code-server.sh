#!/usr/bin/env bash
# Serves VS Code on the host's 127.0.0.1:$PORT_0 with the token $CODE_TOKEN, from the current
# folder: openvscode-server when the host has it, else code-server (dstack installs neither).
# Usage: code-server.sh
if command -v openvscode-server >/dev/null; then
  exec openvscode-server --host 127.0.0.1 --port "$PORT_0" --connection-token "$CODE_TOKEN" .
fi
PASSWORD="$CODE_TOKEN" exec code-server --bind-addr "127.0.0.1:$PORT_0" --auth password .
