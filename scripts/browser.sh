#!/usr/bin/env bash
# Makes sure a headless Chromium and its ChromeDriver are available for the browser tests
# (tests/api/browser.rs), installing Debian's `chromium` and `chromium-driver` with apt-get
# when they are missing (needs root or password-less sudo).
#
#   source scripts/browser.sh   # exports LEADORCH_CHROMIUM and LEADORCH_CHROMEDRIVER
#
# Already set and executable paths win. When nothing can be installed it says so and exports
# nothing: the browser test then fails with that message (set LEADORCH_SKIP_BROWSER_TESTS=1 to
# skip it knowingly).

__leadorch_browser() (
    set -uo pipefail
    log() { echo "browser.sh: $*" >&2; }
    find_bin() {
        local candidate
        for candidate in "$@"; do
            if [ -n "$candidate" ] && [ -x "$candidate" ]; then
                echo "$candidate"
                return 0
            fi
            if command -v "$candidate" >/dev/null 2>&1; then
                command -v "$candidate"
                return 0
            fi
        done
        return 1
    }
    chromium=$(find_bin "${LEADORCH_CHROMIUM:-}" chromium chromium-browser google-chrome) || chromium=
    driver=$(find_bin "${LEADORCH_CHROMEDRIVER:-}" chromedriver /usr/lib/chromium/chromedriver) || driver=
    if [ -z "$chromium" ] || [ -z "$driver" ]; then
        local_sudo=()
        if ((EUID != 0)); then
            if command -v sudo >/dev/null 2>&1 && timeout 10 sudo -n true </dev/null >/dev/null 2>&1; then
                local_sudo=(sudo -n)
            else
                log "chromium/chromedriver missing and no root to install them (apt-get install chromium chromium-driver)"
                exit 0
            fi
        fi
        if ! command -v apt-get >/dev/null 2>&1; then
            log "chromium/chromedriver missing and apt-get is not available; install them yourself"
            exit 0
        fi
        aptlog=${TMPDIR:-/tmp}/leadorch-browser-apt.log
        log "installing chromium and chromium-driver with apt-get (output in $aptlog)"
        if ! { "${local_sudo[@]}" env DEBIAN_FRONTEND=noninteractive timeout 900 \
            apt-get -o DPkg::Lock::Timeout=120 update </dev/null >"$aptlog" 2>&1 &&
            "${local_sudo[@]}" env DEBIAN_FRONTEND=noninteractive timeout 1800 \
                apt-get -o DPkg::Lock::Timeout=120 install -y --no-install-recommends chromium chromium-driver \
                </dev/null >>"$aptlog" 2>&1; }; then
            log "apt-get install chromium chromium-driver failed:"
            tail -n 15 "$aptlog" | sed 's/^/    /' >&2
            exit 0
        fi
        chromium=$(find_bin chromium chromium-browser) || chromium=
        driver=$(find_bin chromedriver /usr/lib/chromium/chromedriver) || driver=
    fi
    if [ -n "$chromium" ] && [ -n "$driver" ]; then
        log "chromium: $chromium; chromedriver: $driver"
        printf 'export LEADORCH_CHROMIUM=%q\nexport LEADORCH_CHROMEDRIVER=%q\n' "$chromium" "$driver"
    fi
)

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    eval "$(__leadorch_browser)"
    unset -f __leadorch_browser
else
    __leadorch_browser
fi
