#!/usr/bin/env bash
# Installs the OS packages the project needs (Debian/Ubuntu): redis-server for the
# embedded stack, chromium for the browser tests (Playwright drives Debian's build;
# Playwright's own browser download is not used).
set -euo pipefail
missing=()
if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
  missing+=(redis-server)
fi
if [ ! -x /usr/bin/chromium ]; then
  missing+=(chromium fonts-liberation)  # the fonts Debian recommends with chromium
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "missing: ${missing[*]}; installing the Debian package(s)"
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo"
else
  echo "error: ${missing[*]} not installed and this user cannot install packages." >&2
  echo "  fix: ask an administrator to run 'apt-get install ${missing[*]}'," >&2
  echo "       or put a redis-server binary on PATH, then run make again." >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: no apt-get here; install ${missing[*]} with your OS package manager." >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts a system redis on 6379 after install; the stack runs its own on
# another port, so the system one is left alone.
command -v redis-server >/dev/null
[ -x /usr/bin/chromium ]
echo "installed: ${missing[*]}"
