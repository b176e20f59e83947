# Throwaway Postgres for the tests. Sourced after common.sh, not run.
#
#   start_postgres   initdb into a temp dir, start on a free loopback port,
#                    create the database `sessions`, export DATABASE_URL and
#                    PG_BIN; stop and delete it all in run_cleanups.
#   start_postgres_replicas [N]
#                    N (default 2) streaming replicas of the server
#                    start_postgres started, each from pg_basebackup -R into
#                    a temp dir, on a free loopback port; exports
#                    DATABASE_REPLICAS=HOST:PORT,HOST:PORT.
#
# Runs the server as the `postgres` OS user when invoked as root (initdb
# refuses root). Installs Debian's `postgresql` package when no server
# binaries are found.

# pg_bin_dir: prints the directory holding initdb and pg_ctl (the newest
# /usr/lib/postgresql/*/bin, else the one on PATH).
pg_bin_dir() {
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return 0
        fi
    done
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return 0
    fi
    return 1
}

# as_pg_user CMD...: runs CMD as the postgres user when we are root.
as_pg_user() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start_postgres() {
    local bin dir port
    if ! bin=$(pg_bin_dir); then
        # Debian keeps initdb off PATH (in /usr/lib/postgresql/N/bin), so
        # need_cmd's PATH check cannot tell whether the install worked.
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "installing postgresql (for initdb, pg_ctl)..." >&2
            if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null 2>&1; then
                apt-get update -qq >/dev/null 2>&1
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
            fi
        fi
        bin=$(pg_bin_dir) || {
            echo "Postgres server binaries (initdb, pg_ctl) not found: install the Debian package postgresql" >&2
            return 1
        }
    fi
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin postgres
    fi

    dir=$(mktemp -d "${TMPDIR:-/tmp}/sessions-pg.XXXXXX")
    on_exit "rm -rf '$dir'"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$dir"
    fi
    port=$(free_port)

    as_pg_user "$bin/initdb" -D "$dir/data" -U postgres --auth=trust \
        --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        return 1
    }
    cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    # Trust only over loopback and the private socket (replication too, for
    # the streaming replicas of start_postgres_replicas).
    cat >"$dir/data/pg_hba.conf" <<EOF
local all all trust
host  all all 127.0.0.1/32 trust
host  replication all 127.0.0.1/32 trust
EOF
    as_pg_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 start >/dev/null || {
        cat "$dir/server.log" >&2
        return 1
    }
    on_exit "as_pg_user '$bin/pg_ctl' -D '$dir/data' -m immediate -w stop >/dev/null 2>&1"
    wait_for 10 "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" || {
        cat "$dir/server.log" >&2
        return 1
    }
    as_pg_user "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres sessions

    export PG_BIN=$bin
    export PG_PRIMARY_PORT=$port
    export DATABASE_URL="postgres://postgres@127.0.0.1:$port/sessions"
    echo "postgres: $DATABASE_URL (data in $dir)" >&2
}

start_postgres_replicas() {
    local count=${1:-2} bin=$PG_BIN primary=$PG_PRIMARY_PORT i dir port replicas=""
    for i in $(seq "$count"); do
        dir=$(mktemp -d "${TMPDIR:-/tmp}/sessions-pg-replica.XXXXXX")
        on_exit "rm -rf '$dir'"
        if [ "$(id -u)" = 0 ]; then
            chown postgres: "$dir"
        fi
        port=$(free_port)
        # A base backup streaming the WAL it needs (-X stream), with
        # standby.signal and primary_conninfo written (-R).
        as_pg_user "$bin/pg_basebackup" -h 127.0.0.1 -p "$primary" -U postgres \
            -D "$dir/data" -R -X stream >"$dir/basebackup.log" 2>&1 || {
            cat "$dir/basebackup.log" >&2
            return 1
        }
        # The backup copied the primary's settings; later lines win.
        cat >>"$dir/data/postgresql.conf" <<EOF
port = $port
unix_socket_directories = '$dir'
hot_standby = on
EOF
        as_pg_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 start >/dev/null || {
            cat "$dir/server.log" >&2
            return 1
        }
        on_exit "as_pg_user '$bin/pg_ctl' -D '$dir/data' -m immediate -w stop >/dev/null 2>&1"
        wait_for 10 "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" || {
            cat "$dir/server.log" >&2
            return 1
        }
        replicas="${replicas:+$replicas,}127.0.0.1:$port"
    done
    export DATABASE_REPLICAS=$replicas
    echo "postgres replicas: $DATABASE_REPLICAS" >&2
}
