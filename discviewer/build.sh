#!/bin/sh
# Build the disc viewer (discviewer/) into src/securepacs/discviewer/ (package data).
# Runs `npm ci` when node_modules is missing or older than the lockfile, then `node build.mjs`.
set -eu
here=$(CDPATH= cd "$(dirname "$0")" && pwd)
cd "$here"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "discviewer: node and npm are needed to build the disc viewer (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "discviewer: installing the pinned JavaScript packages (npm ci)" >&2
  log=$(mktemp)
  if ! npm ci --no-audit --no-fund --loglevel=error >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"
    echo "discviewer: npm ci failed (see above)" >&2
    exit 1
  fi
  rm -f "$log"
fi
exec node build.mjs
