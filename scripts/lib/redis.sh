# Throwaway Redis servers for the tests: one standalone server, one
# Redis Cluster of 3 masters with a replica each, and one primary with 2 replicas watched by 3
# sentinels, on free loopback ports, each in its own temp dir, without
# persistence. Sourced after scripts/lib/common.sh, not run.
#
#   start_redis          # exports REDIS_URL=redis://127.0.0.1:PORT
#   start_redis_cluster  # exports REDIS_CLUSTER_NODES=redis://127.0.0.1:P1,...,P6
#   start_redis_sentinel # exports REDIS_SENTINEL_URL=redis+sentinel://127.0.0.1:S1,S2,S3/sessions
#
# All register their shutdown (and the removal of their temp dirs) with
# on_exit, so `trap run_cleanups EXIT` stops them.

# Settings shared by every throwaway server: loopback only, nothing on disk,
# no background saves that could stall a test.
_redis_common_args() {
    local dir=$1 port=$2
    printf '%s\n' --bind 127.0.0.1 --port "$port" --dir "$dir" \
        --save '' --appendonly no --protected-mode yes \
        --daemonize no --logfile "$dir/redis.log"
}

# _redis_ping PORT: succeeds once the server on PORT answers PONG.
_redis_ping() {
    [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]
}

# _redis_spawn DIR PORT [EXTRA ARGS...]: starts a server in the background,
# registers its shutdown, and waits until it answers.
_redis_spawn() {
    local dir=$1 port=$2
    shift 2
    local args
    mapfile -t args < <(_redis_common_args "$dir" "$port")
    redis-server "${args[@]}" "$@" >/dev/null 2>&1 &
    local pid=$!
    on_exit stop_server "$pid" "$dir"
    if ! wait_for 10 _redis_ping "$port"; then
        echo "redis-server on 127.0.0.1:$port did not start; its log:" >&2
        cat "$dir/redis.log" >&2 2>/dev/null || true
        return 1
    fi
}

# _cluster_port: a free port P whose cluster bus port P+10000 is free too.
_cluster_port() {
    python3 - <<'PY'
import socket
for _ in range(200):
    a = socket.socket()
    a.bind(("127.0.0.1", 0))
    port = a.getsockname()[1]
    if port + 10000 > 65535:
        a.close()
        continue
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", port + 10000))
    except OSError:
        a.close()
        continue
    finally:
        b.close()
    a.close()
    print(port)
    break
else:
    raise SystemExit("no free port pair (P, P+10000) found")
PY
}

# start_redis: a standalone server; exports REDIS_URL.
start_redis() {
    need_cmd redis-server redis-server || return 1
    need_cmd redis-cli redis-tools || return 1
    local dir port
    dir=$(mktemp -d "${TMPDIR:-/tmp}/redis-test.XXXXXX")
    port=$(free_port)
    _redis_spawn "$dir" "$port" || return 1
    export REDIS_URL="redis://127.0.0.1:$port"
    echo "redis: $REDIS_URL" >&2
}

_cluster_ok() {
    local port
    for port in "$@"; do
        redis-cli -h 127.0.0.1 -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
    done
}

# _cluster_replicas_synced N PORT...: N of the nodes on PORT... are replicas
# with their link to their master up.
_cluster_replicas_synced() {
    local want=$1 port info synced=0
    shift
    for port in "$@"; do
        info=$(redis-cli -h 127.0.0.1 -p "$port" info replication 2>/dev/null) || return 1
        if printf '%s\n' "$info" | grep -q '^role:slave' &&
            printf '%s\n' "$info" | grep -q '^master_link_status:up'; then
            synced=$((synced + 1))
        fi
    done
    [ "$synced" -ge "$want" ]
}

# start_redis_cluster: three masters with one replica each (6 nodes;
# `--cluster-replicas 1`); exports REDIS_CLUSTER_NODES, every node's URL
# (the client finds the masters among them). Returns once the cluster is
# ok and every replica is in sync, so a `durable=1` write can succeed.
start_redis_cluster() {
    need_cmd redis-server redis-server || return 1
    need_cmd redis-cli redis-tools || return 1
    local ports=() nodes=() urls=() port dir i
    for i in 1 2 3 4 5 6; do
        # Ports are drawn one after the other and bound only when the server
        # starts, so a draw can repeat an earlier one: draw again then.
        while :; do
            port=$(_cluster_port) || return 1
            [[ " ${ports[*]} " == *" $port "* ]] || break
        done
        dir=$(mktemp -d "${TMPDIR:-/tmp}/redis-cluster-test.XXXXXX")
        _redis_spawn "$dir" "$port" --cluster-enabled yes \
            --cluster-config-file "$dir/nodes.conf" --cluster-node-timeout 5000 \
            --repl-diskless-sync-delay 0 || return 1
        ports+=("$port")
        nodes+=("127.0.0.1:$port")
        urls+=("redis://127.0.0.1:$port")
    done
    # redis-cli pairs the first three as masters with the last three as
    # their replicas (it warns that they share a host: loopback only).
    if ! redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >/dev/null 2>&1; then
        echo "redis-cli --cluster create ${nodes[*]} --cluster-replicas 1 failed" >&2
        return 1
    fi
    if ! wait_for 30 _cluster_ok "${ports[@]}"; then
        echo "redis cluster on ${nodes[*]} did not reach cluster_state:ok" >&2
        return 1
    fi
    if ! wait_for 30 _cluster_replicas_synced 3 "${ports[@]}"; then
        echo "the replicas of the redis cluster on ${nodes[*]} did not sync" >&2
        return 1
    fi
    REDIS_CLUSTER_NODES=$(IFS=,; echo "${urls[*]}")
    export REDIS_CLUSTER_NODES
    echo "redis cluster: $REDIS_CLUSTER_NODES" >&2
}

# _sentinel_ok PORT MASTER N: the sentinel on PORT knows MASTER, sees its N
# replicas and its 2 fellow sentinels.
_sentinel_ok() {
    local port=$1 master=$2 replicas=$3 info
    info=$(redis-cli -h 127.0.0.1 -p "$port" sentinel master "$master" 2>/dev/null) || return 1
    [ "$(printf '%s\n' "$info" | sed -n '/^num-slaves$/{n;p}')" = "$replicas" ] &&
        [ "$(printf '%s\n' "$info" | sed -n '/^num-other-sentinels$/{n;p}')" = 2 ]
}

# _replica_linked PORT: the replica on PORT has its link to the primary up.
_replica_linked() {
    redis-cli -h 127.0.0.1 -p "$1" info replication 2>/dev/null | grep -q '^master_link_status:up'
}

# start_redis_sentinel: a primary, 2 replicas and 3 sentinels (quorum 2,
# down-after-milliseconds 1000: a failover about 2 s after the primary
# dies) watching it under the name `sessions`; exports REDIS_SENTINEL_URL.
# Sentinels rewrite their config file, so each gets one in its temp dir.
start_redis_sentinel() {
    need_cmd redis-server redis-server || return 1
    need_cmd redis-cli redis-tools || return 1
    local master=sessions primary dir port i sentinels=() replicas=()
    dir=$(mktemp -d "${TMPDIR:-/tmp}/redis-sentinel-test.XXXXXX")
    primary=$(free_port)
    # No 5 s wait before a full sync: the replicas are ready at once.
    _redis_spawn "$dir" "$primary" --repl-diskless-sync-delay 0 || return 1
    for i in 1 2; do
        dir=$(mktemp -d "${TMPDIR:-/tmp}/redis-sentinel-test.XXXXXX")
        port=$(free_port)
        _redis_spawn "$dir" "$port" --replicaof 127.0.0.1 "$primary" || return 1
        replicas+=("$port")
    done
    for port in "${replicas[@]}"; do
        if ! wait_for 10 _replica_linked "$port"; then
            echo "redis replica on 127.0.0.1:$port did not link to its primary" >&2
            return 1
        fi
    done
    for i in 1 2 3; do
        dir=$(mktemp -d "${TMPDIR:-/tmp}/redis-sentinel-test.XXXXXX")
        port=$(free_port)
        cat >"$dir/sentinel.conf" <<EOF
bind 127.0.0.1
port $port
dir $dir
logfile $dir/sentinel.log
protected-mode yes
sentinel monitor $master 127.0.0.1 $primary 2
sentinel down-after-milliseconds $master 1000
sentinel failover-timeout $master 10000
sentinel parallel-syncs $master 1
EOF
        redis-server "$dir/sentinel.conf" --sentinel >/dev/null 2>&1 &
        on_exit stop_server "$!" "$dir"
        if ! wait_for 10 _redis_ping "$port"; then
            echo "redis sentinel on 127.0.0.1:$port did not start; its log:" >&2
            cat "$dir/sentinel.log" >&2 2>/dev/null || true
            return 1
        fi
        sentinels+=("127.0.0.1:$port")
    done
    for port in "${sentinels[@]##*:}"; do
        if ! wait_for 30 _sentinel_ok "$port" "$master" 2; then
            echo "redis sentinel on 127.0.0.1:$port did not find the 2 replicas and 2 other sentinels" >&2
            return 1
        fi
    done
    REDIS_SENTINEL_URL="redis+sentinel://$(IFS=,; echo "${sentinels[*]}")/$master"
    export REDIS_SENTINEL_URL
    echo "redis sentinel: $REDIS_SENTINEL_URL" >&2
}
