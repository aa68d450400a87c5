#!/usr/bin/env bash
# A local Redis Cluster of three masters for the tests, on loopback:
#
#   tests/redis-cluster.sh start   # 127.0.0.1:7101-7103 (REDIS_CLUSTER_PORTS to change)
#   REALTIME_TEST_REDIS_CLUSTER=redis://127.0.0.1:7101,redis://127.0.0.1:7102,redis://127.0.0.1:7103 \
#     cargo test --features redis --lib adapter::redis
#   tests/redis-cluster.sh stop
#
# Data is not kept (no RDB, no AOF); the nodes' cluster files live in a temporary directory,
# removed by `stop`. `start` fails if a port is taken.
set -euo pipefail

PORTS=(${REDIS_CLUSTER_PORTS:-7101 7102 7103})
# One directory per set of ports: two clusters on different ports never touch each other's files.
STATE="${TMPDIR:-/tmp}/tower-realtime-redis-cluster-$(IFS=-; echo "${PORTS[*]}")"

start() {
    for port in "${PORTS[@]}"; do
        if redis-cli -p "$port" ping >/dev/null 2>&1; then
            echo "port $port is taken (a cluster already running? run '$0 stop')" >&2
            exit 1
        fi
    done
    rm -rf "$STATE"
    mkdir -p "$STATE"
    for port in "${PORTS[@]}"; do
        mkdir -p "$STATE/$port"
        redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
            --cluster-config-file "$STATE/$port/nodes.conf" --cluster-node-timeout 2000 \
            --dir "$STATE/$port" --save "" --appendonly no --daemonize yes \
            --pidfile "$STATE/$port/redis.pid" --logfile "$STATE/$port/redis.log"
    done
    for port in "${PORTS[@]}"; do
        for _ in $(seq 50); do
            redis-cli -p "$port" ping >/dev/null 2>&1 && break
            sleep 0.1
        done
    done
    local addresses=()
    for port in "${PORTS[@]}"; do addresses+=("127.0.0.1:$port"); done
    redis-cli --cluster create "${addresses[@]}" --cluster-replicas 0 --cluster-yes >"$STATE/create.log"
    for port in "${PORTS[@]}"; do
        local ok=
        for _ in $(seq 100); do
            if redis-cli -p "$port" cluster info | grep -q '^cluster_state:ok'; then
                ok=1
                break
            fi
            sleep 0.1
        done
        if [ -z "$ok" ]; then
            echo "the cluster did not reach cluster_state:ok on port $port" >&2
            exit 1
        fi
    done
    local urls=()
    for port in "${PORTS[@]}"; do urls+=("redis://127.0.0.1:$port"); done
    echo "REALTIME_TEST_REDIS_CLUSTER=$(IFS=,; echo "${urls[*]}")"
}

stop() {
    for port in "${PORTS[@]}"; do
        redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    done
    rm -rf "$STATE"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *)
        echo "usage: $0 start|stop" >&2
        exit 2
        ;;
esac
