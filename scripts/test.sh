#!/usr/bin/env bash
# Runs every test: unit tests, golden and doc tests, and the end-to-end tests
# against the real NATS JetStream and PostgreSQL that scripts/stack.sh brings up
# (installed on first use; idempotent), the web console's in headless Chromium
# among them. cargo runs the test binaries one after another;
# tests/postgres_outage.rs restarts the dev PostgreSQL, so keep it that way.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

eval "$(scripts/stack.sh up)"
export NATS_URL DATABASE_URL
# The web console's browser tests (tests/console.rs): Debian's chromium and
# web/e2e's playwright-core.
scripts/stack.sh console
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (cargo's own last line is often a
# doc-test run of a crate without doc tests: "0 passed").
awk '/^test result:/ { passed += $4; failed += $6 }
     END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
