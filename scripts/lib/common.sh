# Shared helpers for the scripts that start throwaway test servers.
# Sourced, not run. Servers started here listen on loopback only, live in a
# temp dir, and are stopped by `run_cleanups` (scripts/test traps EXIT).

CLEANUPS=()

# on_exit CMD...: run CMD when run_cleanups is called (last registered first).
on_exit() {
    CLEANUPS+=("$*")
}

run_cleanups() {
    local i
    for ((i = ${#CLEANUPS[@]} - 1; i >= 0; i--)); do
        eval "${CLEANUPS[i]}" || true
    done
    CLEANUPS=()
}

# free_port: prints a TCP port on 127.0.0.1 that is free right now.
free_port() {
    python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

# need_cmd CMD PACKAGE: installs the Debian PACKAGE when CMD is missing
# (as root, which CI and fresh machines are), or says what to install.
need_cmd() {
    local cmd=$1 pkg=$2
    command -v "$cmd" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing $pkg (for $cmd)..." >&2
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null 2>&1; then
            apt-get update -qq >/dev/null 2>&1
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
        fi
    fi
    command -v "$cmd" >/dev/null 2>&1 || { echo "$cmd not found: install the Debian package $pkg" >&2; return 1; }
}

# wait_for SECONDS CMD...: retries CMD every 0.1 s until it succeeds or time runs out.
wait_for() {
    local seconds=$1
    shift
    local tries=$((seconds * 10))
    while ! "$@" >/dev/null 2>&1; do
        tries=$((tries - 1))
        [ "$tries" -gt 0 ] || return 1
        sleep 0.1
    done
}

# stop_server PID DIR: stops the server PID (SIGTERM, then SIGKILL after
# SECONDS, default 5) if it still runs, and removes its temp DIR.
stop_server() {
    local pid=$1 dir=$2 seconds=${3:-5}
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null
        local i
        for i in $(seq $((seconds * 10))); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
