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
