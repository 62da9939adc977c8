#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests, from Debian's packages.
#
#   scripts/pg-test-cluster.sh start DIR PORT   # prints the URL to export as CRM_TEST_POSTGRES
#   scripts/pg-test-cluster.sh stop DIR
#
# The cluster runs as the `postgres` user (initdb refuses root), trusts
# local connections, listens on 127.0.0.1:PORT only, and is tuned for tests
# (no fsync: a crash of the machine loses the throwaway data; a crash of the
# server alone loses nothing, as a test that kills it checks).
set -euo pipefail

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi

as_postgres() {
    if [ "$(id -u)" = 0 ]; then
        su postgres -s /bin/bash -c "$*"
    else
        bash -c "$*"
    fi
}

case "${1:-}" in
start)
    dir=$2
    port=$3
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
    as_postgres "'$bin/initdb' -D '$dir/data' -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >'$dir/initdb.log' 2>&1"
    # In the cluster's own file, so that a plain `pg_ctl start` (a test
    # restarting the server) brings it back the same.
    cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
fsync = off
full_page_writes = off
max_connections = 400
CONF
    as_postgres "'$bin/pg_ctl' -D '$dir/data' -l '$dir/server.log' -w start >/dev/null"
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
stop)
    dir=$2
    as_postgres "'$bin/pg_ctl' -D '$dir/data' -m fast stop >/dev/null" || true
    ;;
*)
    echo "usage: $0 start DIR PORT | stop DIR" >&2
    exit 2
    ;;
esac
