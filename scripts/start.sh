#!/usr/bin/env bash
# Starts Palisade on this machine: the dev stack (NATS JetStream, PostgreSQL +
# pgvector, the MiniLM model converted to ONNX on first use), a release build,
# the bundled public sample data (real Falco alerts, Trivy reports, an auth log;
# set PALISADE_LOAD_FIXTURES=0 to skip), then
# `palisade up` in the foreground: migrations, streams, every projection, and the
# HTTP server on 127.0.0.1 (web console at /, status page at /status, /healthz,
# /metrics, /api/v1/…).
# Safe to re-run. Ctrl-C stops Palisade; `scripts/stack.sh down` stops the services.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

eval "$(scripts/stack.sh up)"
export NATS_URL DATABASE_URL
cargo build --release --bin palisade
bin="$root/target/release/palisade"
if [ "${PALISADE_LOAD_FIXTURES:-1}" != "0" ]; then
  echo "[start] publishing the bundled public sample data (tests/fixtures, see its README)" >&2
  "$bin" load-fixtures >&2
fi
echo "[start] palisade up: the console on http://${PALISADE_HTTP_ADDR:-127.0.0.1:7311}/" >&2
exec "$bin" up
