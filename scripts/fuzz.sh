#!/usr/bin/env bash
# Fuzzes the SRQL parser and compiler with libFuzzer (cargo fuzz) for a while.
#
#   scripts/fuzz.sh [SECONDS]        default 300
#
# Needs the nightly toolchain (`rustup toolchain install nightly` where it is missing)
# and a C++ compiler; installs cargo-fuzz from crates.io when it is not on the PATH.
# Seeds the corpus with the golden SRQL queries and the docs' examples. A crash leaves
# its input in srql/fuzz/artifacts/parse/ and makes this script fail; replay it with
#   cd srql/fuzz && cargo +nightly fuzz run parse artifacts/parse/<file>
set -euo pipefail

seconds="${1:-300}"
root="$(cd "$(dirname "$0")/.." && pwd)"
fuzz="$root/srql/fuzz"

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz.sh: the nightly toolchain is missing; run: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi

# Seeds: every golden query, one file each.
mkdir -p "$fuzz/corpus/parse"
for query in "$root"/srql/tests/golden/*.srql; do
    [ -e "$query" ] || continue
    cp "$query" "$fuzz/corpus/parse/golden-$(basename "$query")"
done

cd "$fuzz"
cargo +nightly fuzz run parse -- -max_total_time="$seconds" -max_len=4096
