# shellcheck shell=bash
# Throwaway PostgreSQL clusters for tests and benchmarks.
#
# Source this file from a bash script running `set -euo pipefail`; it does not
# change shell options itself. Typical use:
#
#   STS_LOG_PREFIX=scripts/test
#   . scripts/lib/postgres.sh
#   sts_pg_stop_on_exit          # owns the EXIT/INT/TERM traps
#   sts_pg_start                 # exports TEST_DATABASE_URL
#
# State shared between the functions (read it, do not set it):
#   STS_PG_BINDIR   directory holding initdb, pg_ctl and postgres
#   STS_PG_VERSION  server version, e.g. 15.18
#   STS_PG_DIR      temp dir: data/, log, initdb.log and the Unix socket
#   STS_PG_PORT     TCP port on 127.0.0.1
#   STS_PG_USER     user the server runs as when we are root, else empty

# Debian's server packages live here, one directory per major version; the
# binaries are deliberately not in PATH (pg_wrapper only covers client tools).
STS_PG_LIB_ROOT=${STS_PG_LIB_ROOT:-/usr/lib/postgresql}
# PostgreSQL refuses to run as root, so root needs someone else to run it.
STS_PG_SERVER_USER=sts-test

STS_PG_BINDIR=${STS_PG_BINDIR:-}
STS_PG_VERSION=
STS_PG_DIR=
STS_PG_PORT=
STS_PG_USER=

sts_log() { printf '%s: %s\n' "${STS_LOG_PREFIX:-scripts/lib/postgres.sh}" "$*"; }
sts_die() { printf '%s: error: %s\n' "${STS_LOG_PREFIX:-scripts/lib/postgres.sh}" "$*" >&2; exit 1; }

sts_is_root() { [ "$(id -u)" -eq 0 ]; }

# Hides the password so the URL can be printed in CI logs.
sts_pg_redact_url() { printf '%s\n' "$1" | sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#'; }

# Finds a client tool (pg_isready, psql): in PATH, else next to an installed
# server, because a CI image may have the server but not postgresql-client's
# wrappers (or the reverse).
sts_pg_client_tool() {
    local tool=$1 dir
    if command -v "$tool" >/dev/null 2>&1; then command -v "$tool"; return 0; fi
    for dir in $(printf '%s\n' "$STS_PG_LIB_ROOT"/*/bin | sort -V -r); do
        if [ -x "$dir/$tool" ]; then printf '%s\n' "$dir/$tool"; return 0; fi
    done
    return 1
}

# Returns 0 if a server answers at URL, 1 if none does, 2 if we have no tool
# to ask (then the caller decides whether to trust the URL).
sts_pg_url_answers() {
    local url=$1 tool
    if tool=$(sts_pg_client_tool pg_isready); then
        # Its own codes (1 rejecting, 2 no response, 3 bad URL) all mean "no".
        "$tool" -q -t 5 -d "$url" >/dev/null 2>&1 && return 0
        return 1
    fi
    if tool=$(sts_pg_client_tool psql); then
        PGCONNECT_TIMEOUT=5 "$tool" "$url" -Atqc 'select 1' >/dev/null 2>&1 && return 0
        return 1
    fi
    return 2
}

# Server version behind URL, or "unknown" without psql; only for the log line.
sts_pg_url_version() {
    local tool version=""
    if tool=$(sts_pg_client_tool psql); then
        version=$(PGCONNECT_TIMEOUT=5 "$tool" "$1" -Atqc 'show server_version' 2>/dev/null || true)
    fi
    version=${version%% *}
    printf '%s\n' "${version:-(version unknown)}"
}

sts_pg_is_bindir() { [ -x "$1/initdb" ] && [ -x "$1/pg_ctl" ] && [ -x "$1/postgres" ]; }

# Sets STS_PG_BINDIR to a directory with all three server binaries. PATH wins
# (the user chose it); otherwise the newest Debian version. Only directories
# holding the server count: postgresql-client-NN creates NN/bin with psql alone.
sts_pg_find_bindir() {
    local dir initdb
    if [ -n "$STS_PG_BINDIR" ] && sts_pg_is_bindir "$STS_PG_BINDIR"; then return 0; fi
    if initdb=$(command -v initdb 2>/dev/null); then
        # PATH often holds symlinks (/usr/local/bin, Homebrew); the real
        # directory is the one with pg_config and ../lib next to it.
        for dir in "$(dirname "$(readlink -f "$initdb")")" "$(dirname "$initdb")"; do
            if sts_pg_is_bindir "$dir"; then STS_PG_BINDIR=$dir; return 0; fi
        done
    fi
    for dir in $(printf '%s\n' "$STS_PG_LIB_ROOT"/*/bin | sort -V -r); do
        if sts_pg_is_bindir "$dir"; then STS_PG_BINDIR=$dir; return 0; fi
    done
    return 1
}

# Installs Debian's server. The createcluster.conf line must exist before the
# package's postinst runs, or it creates and starts a system-wide "main"
# cluster on port 5432 that nobody asked for. Appending (rather than
# overwriting) keeps any existing settings; the last assignment wins.
sts_pg_install_debian() {
    local conf=/etc/postgresql-common/createcluster.conf apt_log
    command -v apt-get >/dev/null 2>&1 ||
        sts_die "PostgreSQL server not found and apt-get is unavailable; install PostgreSQL (initdb, pg_ctl, postgres) or set TEST_DATABASE_URL"
    mkdir -p "$(dirname "$conf")"
    if ! grep -qsE '^[[:space:]]*create_main_cluster[[:space:]]*=[[:space:]]*false' "$conf"; then
        printf 'create_main_cluster = false\n' >>"$conf"
    fi
    sts_log "PostgreSQL server not found; installing Debian package postgresql (one-time, may take a minute)"
    apt_log=$(mktemp)
    # UCF_FORCE_CONFFOLD: keep our createcluster.conf instead of prompting.
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
           DEBIAN_FRONTEND=noninteractive UCF_FORCE_CONFFOLD=1 apt-get install -y -qq \
               --no-install-recommends postgresql; } >"$apt_log" 2>&1; then
        tail -n 30 "$apt_log" >&2
        rm -f "$apt_log"
        sts_die "installing the postgresql package failed (output above)"
    fi
    rm -f "$apt_log"
}

# Root may install what is missing; anyone else gets one actionable line.
sts_pg_ensure_bindir() {
    sts_pg_find_bindir && return 0
    if sts_is_root; then
        sts_pg_install_debian
        sts_pg_find_bindir || sts_die "postgresql was installed but initdb/pg_ctl/postgres are still not found under $STS_PG_LIB_ROOT"
        return 0
    fi
    sts_die "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; install them (Debian: sudo apt-get install postgresql) or set TEST_DATABASE_URL to a running server"
}

# Creates the unprivileged server user once; tolerates a parallel run creating
# it between our check and useradd.
sts_pg_ensure_server_user() {
    id -u "$STS_PG_SERVER_USER" >/dev/null 2>&1 && return 0
    useradd --system --no-create-home --shell /usr/sbin/nologin "$STS_PG_SERVER_USER" 2>/dev/null ||
        id -u "$STS_PG_SERVER_USER" >/dev/null 2>&1 ||
        sts_die "could not create system user $STS_PG_SERVER_USER (useradd failed)"
}

# Runs a command as the server user (or as ourselves when not root). It runs
# inside STS_PG_DIR because the server user usually cannot read our cwd, and
# initdb/pg_ctl complain when they cannot.
sts_pg_run() {
    if [ -z "$STS_PG_USER" ]; then
        (cd "$STS_PG_DIR" && "$@")
    elif command -v runuser >/dev/null 2>&1; then
        (cd "$STS_PG_DIR" && runuser -u "$STS_PG_USER" -- "$@")
    elif command -v setpriv >/dev/null 2>&1; then
        (cd "$STS_PG_DIR" && setpriv --reuid="$STS_PG_USER" --regid="$STS_PG_USER" --init-groups -- "$@")
    else
        # su goes through a shell, so quote each argument for it.
        (cd "$STS_PG_DIR" && su -s /bin/sh "$STS_PG_USER" -c "$(printf '%q ' "$@")")
    fi
}

# Prints a TCP port nobody listens on. The kernel's choice (bind to port 0)
# is best; without python3 (minimal images) probe random high ports instead:
# a refused connect means the port is free.
sts_pg_free_port() {
    local port i
    if command -v python3 >/dev/null 2>&1 &&
       port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null) &&
       [ -n "$port" ]; then
        echo "$port"
        return 0
    fi
    for ((i = 0; i < 200; i++)); do
        port=$((20000 + RANDOM % 30000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    sts_die "could not find a free TCP port"
}

# pg_stat_statements is a nice-to-have for benchmarks, so it is preloaded only
# when this very server version ships it. Never consult a pg_config from PATH:
# it may belong to another major version, whose .so would stop the server.
sts_pg_preload_option() {
    local libdir=""
    if [ -x "$STS_PG_BINDIR/pg_config" ]; then
        libdir=$("$STS_PG_BINDIR/pg_config" --pkglibdir 2>/dev/null || true)
    fi
    if [ -n "$libdir" ] && [ -f "$libdir/pg_stat_statements.so" ]; then
        echo "-c shared_preload_libraries=pg_stat_statements"
    elif [ -f "$STS_PG_BINDIR/../lib/pg_stat_statements.so" ]; then
        echo "-c shared_preload_libraries=pg_stat_statements"
    fi
}

# C.UTF-8 gives UTF-8 semantics with byte-order collation, stable across
# machines. Older systems lack it; plain C still works with -E UTF8.
sts_pg_initdb() {
    local locale
    for locale in C.UTF-8 C; do
        if sts_pg_run "$STS_PG_BINDIR/initdb" -D "$STS_PG_DIR/data" -U postgres --auth=trust \
               -E UTF8 --locale="$locale" >"$STS_PG_DIR/initdb.log" 2>&1; then
            return 0
        fi
    done
    tail -n 30 "$STS_PG_DIR/initdb.log" >&2
    sts_die "initdb failed (output above)"
}

# Durability is off because the cluster is thrown away; max_connections is
# high because tests run in parallel, each with its own pool.
sts_pg_ctl_start() {
    local extra=$1
    sts_pg_run "$STS_PG_BINDIR/pg_ctl" -D "$STS_PG_DIR/data" -l "$STS_PG_DIR/log" -w -t 60 \
        -o "-p $STS_PG_PORT -k '$STS_PG_DIR' -c listen_addresses=127.0.0.1 -c max_connections=500 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=128MB $extra" \
        start >/dev/null
}

# Starts a throwaway cluster and exports TEST_DATABASE_URL for it. Call
# sts_pg_stop_on_exit first so a failure half-way still cleans up.
sts_pg_start() {
    local preload
    sts_pg_ensure_bindir
    STS_PG_VERSION=$("$STS_PG_BINDIR/postgres" --version | awk '{print $3; exit}')

    STS_PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sts-pg.XXXXXX")
    case $STS_PG_DIR in *"'"*) sts_die "temp dir path contains a quote: $STS_PG_DIR";; esac
    if sts_is_root; then
        sts_pg_ensure_server_user
        STS_PG_USER=$STS_PG_SERVER_USER
        chown "$STS_PG_USER:" "$STS_PG_DIR"
        sts_pg_run test -w "$STS_PG_DIR" ||
            sts_die "$STS_PG_USER cannot write $STS_PG_DIR; point TMPDIR at a directory it can reach (e.g. /tmp)"
    fi

    sts_log "creating throwaway PostgreSQL $STS_PG_VERSION cluster in $STS_PG_DIR${STS_PG_USER:+ (server runs as $STS_PG_USER)}"
    sts_pg_initdb

    STS_PG_PORT=$(sts_pg_free_port)
    preload=$(sts_pg_preload_option)
    if ! sts_pg_ctl_start "$preload"; then
        [ -n "$preload" ] || sts_die "PostgreSQL failed to start (log: $STS_PG_DIR/log)"
        # Optional extension must never cost us the run.
        sts_log "start with pg_stat_statements failed; retrying without it"
        sts_pg_ctl_start "" || sts_die "PostgreSQL failed to start (log: $STS_PG_DIR/log)"
    fi
    export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$STS_PG_PORT/postgres"
    sts_log "PostgreSQL $STS_PG_VERSION listening on 127.0.0.1:$STS_PG_PORT"
}

# Stops the cluster and deletes its files. Safe to call more than once and
# when nothing was started. With a non-zero status it shows the server log
# first, since that is usually where the reason for a failure is.
sts_pg_stop() {
    local status=${1:-0}
    [ -n "$STS_PG_DIR" ] || return 0
    if [ "$status" -ne 0 ] && [ -s "$STS_PG_DIR/log" ]; then
        {
            echo "${STS_LOG_PREFIX:-scripts/lib/postgres.sh}: last 50 lines of the PostgreSQL log:"
            tail -n 50 "$STS_PG_DIR/log"
        } >&2 || true
    fi
    if [ -f "$STS_PG_DIR/data/postmaster.pid" ]; then
        sts_pg_run "$STS_PG_BINDIR/pg_ctl" -D "$STS_PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$STS_PG_DIR" || true
    STS_PG_DIR=
}

# Installs traps so the cluster goes away however the script ends. INT/TERM
# only convert the signal into an exit (status 128+n); the EXIT trap does the
# work once and keeps the script's exit status.
sts_pg_stop_on_exit() {
    trap 'sts_pg__on_exit' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
sts_pg__on_exit() {
    local status=$?
    set +e
    sts_pg_stop "$status"
    exit "$status"
}
