#!/usr/bin/env bash
# Create .venv with the pinned stack; install Debian packages when we are root on Debian.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
mapfile -t apt_pkgs < <(grep -v '^\s*#' envs/apt-packages.txt | grep -v '^\s*$')
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing Debian packages (R-backed parts will be skipped): ${missing[*]}" >&2
    echo "setup: install them with: sudo apt-get install ${missing[*]}" >&2
  fi
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/pip install -q --upgrade-strategy only-if-needed -r envs/requirements.txt -c envs/constraints.txt
.venv/bin/pip install -q --no-deps --no-build-isolation -e .
echo "setup: done ($(.venv/bin/python -c 'import vulnbench; print("vulnbench", vulnbench.__version__)'))"
