#!/usr/bin/env bash
# Installs the one OS package the embedded stack needs: redis-server (Debian/Ubuntu).
set -euo pipefail
if command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; then
  exit 0
fi
echo "redis-server is missing; installing the Debian package redis-server"
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo"
else
  echo "error: redis-server is not installed and this user cannot install packages." >&2
  echo "  fix: ask an administrator to run 'apt-get install redis-server'," >&2
  echo "       or put a redis-server binary on PATH, then run make again." >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: no apt-get here; install redis-server with your OS package manager." >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null
# Debian starts a system redis on 6379 after install; the stack runs its own on
# another port, so the system one is left alone.
command -v redis-server >/dev/null
echo "redis-server installed"
