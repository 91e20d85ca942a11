#!/usr/bin/env bash
# Set up the reference gateways and load tools the comparison rig (bench/rig/compare.py) uses.
#
#   bash bench/rig/setup_refs.sh                 # required pieces: wrk + the Rust SMG (PyPI `smg`)
#   bash bench/rig/setup_refs.sh nginx           # + nginx (the fast `--backend nginx` and a reference proxy)
#   bash bench/rig/setup_refs.sh all             # + every optional reference below
#   bash bench/rig/setup_refs.sh smg-rust wrk    # just the named pieces
#
# Pieces (each idempotent; each Python one in its own venv under bench/.venvs/<name>, called by
# binary path, never imported — PyPI `smg` installs a top-level module also named `smg`, which
# would shadow ours; see style.md hazard H1):
#   wrk            apt-get install wrk                       (required: the load generator)
#   smg-rust       bench/.venvs/smg-rust  pip install smg    (required: the Rust Shepherd Model Gateway)
#   nginx          apt-get install nginx-light|nginx         (optional: canned backend / reference proxy)
#   sglang-router  bench/.venvs/sglang-router  pip install sglang-router   (optional)
#   vllm-router    bench/.venvs/vllm-router    pip install vllm-router     (optional)
#   litellm        bench/.venvs/litellm        pip install 'litellm[proxy]' (optional)
#
# Pin a version with e.g. SMG_RUST_VERSION=1.13.0. Set PYTHON to choose the interpreter for venvs.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BENCH="$(dirname "$HERE")"
VENVS="$BENCH/.venvs"
PYTHON="${PYTHON:-python3}"
APT_UPDATED=0

log() { printf '[setup_refs] %s\n' "$*" >&2; }

apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        log "apt-get not found: install $* by hand"; return 1
    fi
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    if [ "$APT_UPDATED" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq; APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}

# pip_venv NAME BINARY PIP-SPEC...: create bench/.venvs/NAME and pip install into it unless
# bench/.venvs/NAME/bin/BINARY already exists.
pip_venv() {
    local name="$1" binary="$2"; shift 2
    local venv="$VENVS/$name"
    if [ -x "$venv/bin/$binary" ]; then
        log "$name: already installed ($venv/bin/$binary)"; return 0
    fi
    mkdir -p "$VENVS"
    log "$name: creating $venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q "$@"
    [ -x "$venv/bin/$binary" ] || { log "$name: $venv/bin/$binary missing after install"; return 1; }
    log "$name: installed $("$venv/bin/python" -m pip show "${1%%[<>=\[]*}" 2>/dev/null | sed -n 's/^Version: //p')"
}

setup_wrk() {
    if command -v wrk >/dev/null 2>&1; then log "wrk: already installed"; return 0; fi
    apt_install wrk
}

setup_smg_rust() {
    local spec="smg"
    [ -n "${SMG_RUST_VERSION:-}" ] && spec="smg==$SMG_RUST_VERSION"
    pip_venv smg-rust smg "$spec"
}

setup_nginx() {
    if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then log "nginx: already installed"; return 0; fi
    apt_install nginx-light || apt_install nginx
    # The rig runs its own nginx instances with their own config; don't leave the distro's running.
    if command -v service >/dev/null 2>&1; then service nginx stop >/dev/null 2>&1 || true; fi
}

setup_sglang_router() { pip_venv sglang-router python sglang-router; }
setup_vllm_router()   { pip_venv vllm-router vllm-router vllm-router; }
setup_litellm()       { pip_venv litellm litellm 'litellm[proxy]'; }

run_piece() {
    case "$1" in
        wrk) setup_wrk ;;
        smg-rust|smg) setup_smg_rust ;;
        nginx) setup_nginx ;;
        sglang-router) setup_sglang_router ;;
        vllm-router) setup_vllm_router ;;
        litellm) setup_litellm ;;
        *) log "unknown piece: $1"; return 2 ;;
    esac
}

pieces=("$@")
[ ${#pieces[@]} -eq 0 ] && pieces=(wrk smg-rust)
if [ "${pieces[0]}" = all ]; then
    pieces=(wrk smg-rust nginx sglang-router vllm-router litellm)
fi

failed=()
for p in "${pieces[@]}"; do
    # Optional pieces may fail (not published for this platform, etc.) without failing the rest.
    if ! run_piece "$p"; then failed+=("$p"); fi
done
if [ ${#failed[@]} -gt 0 ]; then
    log "failed: ${failed[*]}"; exit 1
fi
log "done"
