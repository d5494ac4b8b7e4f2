#!/usr/bin/env bash
# Set up (or bring up to date) the project's virtual environment in <repo>/.venv and install echo_guidance
# into it. Safe to run again: a step is skipped when its inputs have not changed since it last succeeded.
#
#   scripts/bootstrap.sh            # create/update .venv
#   scripts/bootstrap.sh --force    # redo every step
#
# Steps (docs/install.md):
#   1. create .venv with Python 3.11 (the ROS 2 wheels are built for CPython 3.11 only);
#   2. install torch==2.13.0 first, pinned (any other torch would pull GBs of CUDA packages), then
#      requirements-ros.txt, then requirements.txt, all constrained to that torch;
#   3. make sure cmake and a C/C++ compiler exist (apt-get installs them only if missing);
#   4. build and install the package (non-editable, without build isolation: CMake builds msg/ and srv/
#      against the ROS wheels in .venv).
# Environment: ECHO_GUIDANCE_PYTHON picks the interpreter for a new venv (default: python3.11, python3).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$repo/.venv"
stamp_dir="$venv/.echo_guidance-bootstrap"
torch_pin='torch==2.13.0'

log() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The ROS wheels' start-up hook re-executes Python with <venv>/lib on LD_LIBRARY_PATH and marks that in
# _ROS_WHEELS_BOOTSTRAP_COMPLETE. Inherited from another environment's Python (a shell started by it), both
# would point this venv at that environment's libraries: drop the mark and other venvs' lib directories.
clean_ros_wheels_environment() {
    unset _ROS_WHEELS_BOOTSTRAP_COMPLETE
    local kept=() entry
    local IFS=:
    for entry in ${LD_LIBRARY_PATH:-}; do
        if [[ -f "$entry/../pyvenv.cfg" && "$(cd "$entry/.." && pwd)" != "$venv" ]] \
            || [[ "$entry" == */site-packages/ros_*.libs ]]; then
            continue
        fi
        kept+=("$entry")
    done
    if ((${#kept[@]})); then export LD_LIBRARY_PATH="${kept[*]}"; else unset LD_LIBRARY_PATH; fi
}

# Print one hash of the named files and of every file under the named folders (missing ones count too).
hash_inputs() {
    local path
    for path in "$@"; do
        if [[ -d "$repo/$path" ]]; then
            (cd "$repo" && find "$path" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 \
                | LC_ALL=C sort -z | xargs -0 -r sha256sum)
        elif [[ -f "$repo/$path" ]]; then
            (cd "$repo" && sha256sum "$path")
        else
            echo "missing $path"
        fi
    done | sha256sum | cut -d' ' -f1
}

step_is_current() { [[ -z "$force" && -f "$stamp_dir/$1" && "$(cat "$stamp_dir/$1")" == "$2" ]]; }
mark_done() { mkdir -p "$stamp_dir" && printf '%s\n' "$2" > "$stamp_dir/$1"; }

pick_python() {
    local candidate
    for candidate in "${ECHO_GUIDANCE_PYTHON:-}" python3.11 python3; do
        [[ -n "$candidate" ]] || continue
        if command -v "$candidate" >/dev/null \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return
        fi
    done
    die "no Python 3.11 found (the ROS 2 wheels are cp311): install it or set ECHO_GUIDANCE_PYTHON"
}

create_venv() {
    if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'
    then
        return
    fi
    [[ -e "$venv" ]] && { log "removing unusable $venv"; rm -rf "$venv"; }
    local python
    python=$(pick_python)
    log "creating $venv with $python"
    "$python" -m venv "$venv"
}

# The machine's pip configuration lists local index folders that do not all exist; pip warns about each
# one on every call. Those lines are dropped; everything else pip says is kept, and so is its exit status.
pip_install() {
    "$venv/bin/python" -m pip install --disable-pip-version-check -q "$@" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; } >&2
}

install_requirements() {
    local inputs
    inputs=$(hash_inputs requirements-ros.txt requirements.txt scripts/bootstrap.sh)
    if step_is_current requirements "$inputs"; then
        log "requirements unchanged: skipped"
        return
    fi
    log "installing $torch_pin"
    pip_install "$torch_pin"
    log "installing requirements-ros.txt"
    pip_install -c "$venv/constraints.txt" -r "$repo/requirements-ros.txt"
    log "installing requirements.txt"
    pip_install -c "$venv/constraints.txt" -r "$repo/requirements.txt"
    mark_done requirements "$inputs"
}

ensure_build_tools() {
    local missing=()
    command -v cmake >/dev/null || missing+=(cmake)
    { command -v cc >/dev/null && command -v c++ >/dev/null; } || missing+=(g++)
    ((${#missing[@]})) || return 0
    log "installing ${missing[*]} with apt-get"
    local sudo=()
    ((EUID == 0)) || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}"
}

install_package() {
    local inputs
    # Includes the requirements stamp: new ROS wheels mean a rebuild of the interfaces against them.
    inputs="$(hash_inputs setup.py pyproject.toml CMakeLists.txt cmake package.xml msg srv echo_guidance \
        launch config models)+$(cat "$stamp_dir/requirements")"
    if step_is_current package "$inputs" && [[ -x "$venv/bin/echo-guidance" ]]; then
        log "package unchanged: skipped"
        return
    fi
    log "building and installing echo_guidance (msg/srv interfaces via CMake)"
    (cd "$repo" && pip_install -c "$venv/constraints.txt" --no-build-isolation .)
    mark_done package "$inputs"
}

bootstrap_main() {
    force=''
    case "${1:-}" in
        --force) force=1 ;;
        '') ;;
        *) die "unknown argument $1 (usage: scripts/bootstrap.sh [--force])" ;;
    esac
    local started=$SECONDS
    clean_ros_wheels_environment
    create_venv
    # Every pip call is held to this torch, so that no package can swap it for a CUDA build.
    printf '%s\n' "$torch_pin" > "$venv/constraints.txt"
    install_requirements
    ensure_build_tools
    install_package
    log "ready in $((SECONDS - started)) s: $venv"
}

# Sourced by scripts/run-tests.sh for its functions; run directly, it bootstraps.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    bootstrap_main "$@"
fi
