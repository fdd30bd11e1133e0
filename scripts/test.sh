#!/usr/bin/env bash
# Runs every test: unit tests, golden and doc tests, and the end-to-end tests
# against the real NATS JetStream and PostgreSQL that scripts/stack.sh brings up
# (installed on first use; idempotent). cargo runs the test binaries one after
# another; tests/postgres_outage.rs restarts the dev PostgreSQL, so keep it that way.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

eval "$(scripts/stack.sh up)"
export NATS_URL DATABASE_URL
cargo test --workspace --locked "$@"
