#!/usr/bin/env bash
# The project's test command: makes sure PostgreSQL and Redis are available (see
# scripts/services.sh), then runs the workspace's tests. Extra arguments go to
# `cargo test`, e.g. `scripts/test.sh -p leadorch-actors` or `scripts/test.sh -- --nocapture`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "test.sh: cargo not found. Install Rust with rustup (https://rustup.rs):" >&2
    echo "    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh" >&2
    exit 1
fi

# shellcheck source=scripts/services.sh
source scripts/services.sh || exit 1
export LEADORCH_TEST_DATABASE_URL="$LEADORCH_DATABASE_URL"
export LEADORCH_TEST_REDIS_URL="$LEADORCH_REDIS_URL"
# Headless Chromium + ChromeDriver for the browser tests (installed with apt when missing).
# shellcheck source=scripts/browser.sh
source scripts/browser.sh

# Plain output: let cargo decide about colours from the terminal.
unset CARGO_TERM_COLOR

exec cargo test --workspace "$@"
