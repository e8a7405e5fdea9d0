#!/usr/bin/env bash
# Install Debian's headless Chromium for the UI screenshot test, if it is missing and apt-get can.
# Elsewhere the UI test skips (except under CI=true, where it fails).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium (Debian package) for the UI test ..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "note: no chromium and no root apt-get; the UI screenshot test will skip" >&2
fi
