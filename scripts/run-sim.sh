#!/usr/bin/env bash
# The main job on the built-in simulated patient, from a fresh clone: bring .venv up to date
# (scripts/bootstrap.sh), then run `echo-guidance demo`, which drives the whole pipeline on the
# virtual patient and ends with a summary. Extra arguments go to `echo-guidance demo`
# (`scripts/run-sim.sh --help` lists them).
set -euo pipefail

# shellcheck source=scripts/bootstrap.sh
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
bootstrap_main
cd "$repo"
exec "$venv/bin/python" -m echo_guidance.cli demo "$@"
