#!/usr/bin/env bash
# The project's run command: makes sure PostgreSQL and Redis are available (see
# scripts/services.sh), then builds and runs leadorch in release mode.
# Extra arguments go to the leadorch subcommand.
set -euo pipefail

# `serve` until the offline demo (`leadorch demo`) lands.
LEADORCH_RUN_COMMAND=${LEADORCH_RUN_COMMAND:-serve}

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "run.sh: cargo not found. Install Rust with rustup (https://rustup.rs):" >&2
    echo "    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh" >&2
    exit 1
fi

# shellcheck source=scripts/services.sh
source scripts/services.sh || exit 1

# Until the demo lands, serve with local fakes for vendors that have no credentials.
if [ "$LEADORCH_RUN_COMMAND" = serve ]; then set -- --sim "$@"; fi
exec cargo run --release -- "$LEADORCH_RUN_COMMAND" "$@"
