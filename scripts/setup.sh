#!/usr/bin/env bash
# Install what the local stack and the tests need, on Debian 12 as root:
# system packages from Debian, Python packages into .venv from PyPI.
# Idempotent and quick when everything is already there.
#   scripts/setup.sh          the stack (make up)
#   scripts/setup.sh --test   plus what the tests need (make test)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

if [ "$(id -u)" != 0 ]; then
  echo "setup: the local stack needs root (apt-get, debootstrap, chroot)." >&2
  echo "setup: without root, use the Docker alternative: docker compose up (see README)." >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "setup: this is not a Debian-like system; use docker compose up (see README)." >&2
  exit 1
fi

pkgs=(debootstrap sip-tester postgresql espeak-ng sox libsndfile1 python3-venv)
[ $want_test = 1 ] && pkgs+=(chromium)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Debian's own interpreter (python3-venv above brings it): Debian builds it with PGO and LTO,
# as the Docker image's is built. A python3 of one's own earlier in PATH may be neither (a
# default pyenv build is not): on the same machine the service spent about 12 % more CPU
# per call on one. PYTHON=/path/to/python3 picks another.
python=${PYTHON:-/usr/bin/python3}
base="$("$python" -c 'import os, sys; print(os.path.realpath(sys.executable))')"
if [ -x .venv/bin/python ]; then
  have="$(.venv/bin/python -c 'import os, sys; print(os.path.realpath(sys._base_executable))')"
  if [ "$have" != "$base" ]; then
    echo "setup: .venv was made with $have; making it again with $base"
    rm -rf .venv
  fi
fi
stamp=.venv/.callrec-installed
digest="$(sha256sum pyproject.toml | cut -c1-16)"
want="$digest-$want_test"
installed="$(cat "$stamp" 2>/dev/null || true)"
# what make test installs is a superset of make up's: a venv made for the tests serves the
# stack as it is (before, make up after make test reinstalled, and make test after it again)
if [ "$installed" = "$digest-1" ]; then want="$installed"; fi
if [ ! -x .venv/bin/python ] || [ "$installed" != "$want" ]; then
  echo "setup: preparing the Python environment in .venv (pip, $base)"
  [ -x .venv/bin/python ] || "$python" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  if [ $want_test = 1 ]; then
    .venv/bin/python -m pip install -q -e '.[dev]'
  else
    .venv/bin/python -m pip install -q -e .
  fi
  echo "$want" > "$stamp"
fi
