#!/usr/bin/env bash
# The project's run command: makes sure PostgreSQL and Redis are available (see
# scripts/services.sh), then builds and runs the offline demo (`leadorch demo`) in release mode.
# Extra arguments go to the leadorch subcommand, e.g. `scripts/run.sh --every-secs 4`.
set -euo pipefail

# `demo` by default; LEADORCH_RUN_COMMAND=serve runs the bare service instead.
LEADORCH_RUN_COMMAND=${LEADORCH_RUN_COMMAND:-demo}

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "run.sh: cargo not found. Install Rust with rustup (https://rustup.rs):" >&2
    echo "    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh" >&2
    exit 1
fi

# shellcheck source=scripts/services.sh
source scripts/services.sh || exit 1

# `serve` uses local fakes for vendors that have no credentials (the demo always does).
if [ "$LEADORCH_RUN_COMMAND" = serve ]; then set -- --sim "$@"; fi
exec cargo run --release -- "$LEADORCH_RUN_COMMAND" "$@"
