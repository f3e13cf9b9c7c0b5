#!/usr/bin/env bash
# The browser the viewer UI tests drive (tests/integration/browser/): Debian's chromium, run headless by the
# Playwright Python package (no Playwright browser downloads). Idempotent: installs only what is
# missing, and says what it did. CHROMIUM=/path overrides the binary that is checked.
set -euo pipefail

chromium=${CHROMIUM:-/usr/bin/chromium}

if [[ -x $chromium ]]; then
  echo "chromium present: $chromium ($("$chromium" --version 2>/dev/null | head -n1 || echo 'version unknown'))"
  exit 0
fi

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "chromium missing at $chromium; install it first: apt-get install -y --no-install-recommends chromium" >&2
  exit 1
fi

echo "installing chromium from Debian (apt-get install -y --no-install-recommends chromium)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
if [[ ! -x $chromium ]]; then
  echo "chromium was installed but $chromium is not there; set CHROMIUM to its path" >&2
  exit 1
fi
echo "installed chromium: $chromium ($("$chromium" --version 2>/dev/null | head -n1 || echo 'version unknown'))"
