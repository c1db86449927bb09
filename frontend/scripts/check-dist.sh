#!/bin/sh
# CI: the committed frontend/dist must be exactly what the committed source builds to.
# Rebuilds from the lock file and fails if dist/ differs from what git has (changed, added or
# removed files). Needs Node.js >= 20.19 and the npm registry. Run from anywhere.
set -eu
cd "$(dirname "$0")/.."
npm ci --no-audit --no-fund
npm run build
if [ -n "$(git status --porcelain --untracked-files=all -- dist)" ]; then
  echo "frontend/dist is out of date with the source. Run 'npm ci && npm run build' in frontend/ and commit dist/:" >&2
  git status --short --untracked-files=all -- dist >&2
  git --no-pager diff --stat -- dist >&2
  exit 1
fi
echo "frontend/dist is up to date"
