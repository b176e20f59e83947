# Throwaway MariaDB for the tests. Sourced after common.sh, not run.
#
#   start_mysql   mariadb-install-db into a temp dir, start mariadbd on a free
#                 loopback port (no networking beyond 127.0.0.1, a private
#                 socket), create the user `sessions` and the database
#                 `sessions`, export MYSQL_URL; stop and delete it all in
#                 run_cleanups.
#
# Installs Debian's `mariadb-server` package when mariadbd is missing. Runs
# the server as the `mysql` OS user when invoked as root (mariadbd refuses
# root), as the invoking user otherwise.

# _mysql_sbin CMD: the path of CMD, also when it lives in an sbin directory
# that is not on PATH (Debian puts mariadbd in /usr/sbin).
_mysql_sbin() {
    command -v "$1" 2>/dev/null && return 0
    local dir
    for dir in /usr/sbin /usr/local/sbin /sbin; do
        [ -x "$dir/$1" ] && { echo "$dir/$1"; return 0; }
    done
    return 1
}

start_mysql() {
    local mariadbd install_db dir port pid user
    if ! mariadbd=$(_mysql_sbin mariadbd); then
        need_cmd mariadbd mariadb-server >/dev/null 2>&1 || true
        mariadbd=$(_mysql_sbin mariadbd) || {
            echo "mariadbd not found: install the Debian package mariadb-server" >&2
            return 1
        }
    fi
    install_db=$(_mysql_sbin mariadb-install-db) || {
        echo "mariadb-install-db not found: install the Debian package mariadb-server" >&2
        return 1
    }
    need_cmd mariadb mariadb-client || return 1
    need_cmd mariadb-admin mariadb-client || return 1

    user=$(id -un)
    if [ "$(id -u)" = 0 ]; then
        user=mysql
        id mysql >/dev/null 2>&1 ||
            useradd --system --no-create-home --shell /usr/sbin/nologin mysql
    fi
    dir=$(mktemp -d "${TMPDIR:-/tmp}/sessions-mysql.XXXXXX")
    [ "$(id -u)" = 0 ] && chown "$user": "$dir"
    port=$(free_port)

    "$install_db" --no-defaults --user="$user" --datadir="$dir/data" \
        --auth-root-authentication-method=socket --skip-test-db \
        >"$dir/install.log" 2>&1 || {
        cat "$dir/install.log" >&2
        rm -rf "$dir"
        return 1
    }
    # No fsync per commit (a throwaway server), enough connections for the
    # parallel test binaries, no binary log.
    "$mariadbd" --no-defaults --user="$user" --datadir="$dir/data" \
        --port="$port" --socket="$dir/mysqld.sock" --bind-address=127.0.0.1 \
        --pid-file="$dir/mysqld.pid" --log-error="$dir/error.log" \
        --innodb-flush-log-at-trx-commit=0 --innodb-buffer-pool-size=256M \
        --max-connections=1000 --skip-log-bin --skip-name-resolve \
        >/dev/null 2>&1 &
    pid=$!
    # InnoDB may take a few seconds to shut down cleanly.
    on_exit stop_server "$pid" "$dir" 10
    if ! wait_for 60 mariadb-admin --no-defaults --socket="$dir/mysqld.sock" -uroot ping; then
        echo "mariadbd on 127.0.0.1:$port did not start; its log:" >&2
        cat "$dir/error.log" >&2 2>/dev/null || true
        return 1
    fi
    # The tests make a database per test (like a schema per test on
    # Postgres) and some set the global time zone, so the test user gets
    # every privilege, on this throwaway server only.
    mariadb --no-defaults --socket="$dir/mysqld.sock" -uroot <<'SQL' || return 1
CREATE DATABASE sessions;
CREATE USER 'sessions'@'127.0.0.1' IDENTIFIED BY 'sessions';
GRANT ALL PRIVILEGES ON *.* TO 'sessions'@'127.0.0.1' WITH GRANT OPTION;
SQL

    export MYSQL_URL="mysql://sessions:sessions@127.0.0.1:$port/sessions"
    echo "mysql (MariaDB): $MYSQL_URL (data in $dir)" >&2
}
