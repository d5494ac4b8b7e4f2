#!/usr/bin/env bash
# Run the test suite from the repository root: bring .venv up to date (scripts/bootstrap.sh; quick when
# nothing changed), then pytest. Extra arguments go to pytest; without a test path, all of test/ runs.
#
#   scripts/run-tests.sh                       # everything
#   scripts/run-tests.sh -x -k dds             # a selection
#   scripts/run-tests.sh test/test_build_cli.py
#
# Exits with pytest's status, except that "no tests collected" (pytest's 5) is a failure here too.
set -euo pipefail

# shellcheck source=scripts/bootstrap.sh
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
bootstrap_main
cd "$repo"

# The display tests draw the sonographer's page in headless Chromium (docs/guidance.md section 4). Install
# Debian's chromium when it is missing and apt-get can run; if that fails the tests skip and say why.
# ECHO_GUIDANCE_NO_BROWSER=1 leaves the system alone.
ensure_test_browser() {
    local name
    for name in chromium chromium-browser google-chrome google-chrome-stable; do
        command -v "$name" >/dev/null && return 0
    done
    [[ -z "${ECHO_GUIDANCE_NO_BROWSER:-}" ]] && command -v apt-get >/dev/null || return 0
    local sudo=()
    if ((EUID != 0)); then
        sudo -n true 2>/dev/null || { log "no chromium and no sudo: the display page tests will skip"; return 0; }
        sudo=(sudo -n)
    fi
    log "installing chromium with apt-get (for the display page tests)"
    { "${sudo[@]}" apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive timeout 600 "${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium; } \
        >/dev/null 2>&1 || log "could not install chromium: the display page tests will skip"
}
ensure_test_browser

targets=(test/)
for arg in "$@"; do
    if [[ "$arg" != -* && -e "${arg%%::*}" ]]; then
        targets=()
        break
    fi
done

set +e
"$venv/bin/python" -m pytest "${targets[@]}" "$@"
status=$?
set -e
if ((status == 5)); then
    echo "run-tests: pytest collected no tests; a test run that tests nothing is a failure" >&2
    exit 1
fi
exit "$status"
