#!/usr/bin/env bash
# Installs promtool (Prometheus's rule and config checker) into target/promtool from
# Debian's `prometheus` package, extracted without installing it (no service, no
# dependencies): used by .ci/check-packaging.sh on docker/prometheus/.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=target/promtool
bin=$dest/usr/bin/promtool
if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
  echo "promtool: already at $bin"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download prometheus >/dev/null 2>&1) || {
  apt-get update -qq
  (cd "$tmp" && apt-get download prometheus)
}
rm -rf "$dest"
dpkg-deb -x "$tmp"/prometheus_*.deb "$dest"
"$bin" --version 2>&1 | head -n 1
echo "promtool: installed at $bin"
