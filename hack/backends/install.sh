#!/usr/bin/env bash
# Install the real database servers the backend tests start themselves:
#   redis-server, redis-sentinel, postgresql (15, Debian bookworm), mariadb-server
# from Debian's packages, when missing. Idempotent: a warm run only checks that the binaries exist.
#
# Installing must not leave system services behind: the tests start their own throwaway instances on
# free loopback ports, so any service the packages start (or any default cluster they create) is stopped
# and disabled again. Also creates the unprivileged user `statestore-db` the fixtures run PostgreSQL and
# MariaDB as (both refuse to run as root).
#
# Ends by checking that each server binary runs and reports its version.
#
# Usage: install.sh          install what is missing (needs root then)
#        install.sh --check  only check (binaries run, DB user exists); exit 1 if not
# Environment: BACKENDS_DB_USER (default statestore-db).
set -euo pipefail

# shellcheck source=../lib/version_check.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/version_check.sh"
CHECK_ONLY=0
case ${1:-} in
  --check) CHECK_ONLY=1 ;;
  '') ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac
DB_USER=${BACKENDS_DB_USER:-statestore-db}
export DEBIAN_FRONTEND=noninteractive

have_redis() { command -v redis-server >/dev/null 2>&1; }
have_sentinel() { command -v redis-sentinel >/dev/null 2>&1; }
have_postgres() {
    command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}
have_mariadb() {
    command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || [ -x /usr/sbin/mysqld ]
}

# The server binaries as the test fixtures find them: PATH first, then the packages' own folders.
postgres_bin() {
    local found
    found=$(command -v postgres 2>/dev/null) && { echo "$found"; return; }
    for found in /usr/lib/postgresql/*/bin/postgres; do :; done  # the last match is the newest major
    [ -x "$found" ] && echo "$found"
}
mariadb_bin() {
    local found
    found=$(command -v mariadbd 2>/dev/null) && { echo "$found"; return; }
    for found in /usr/sbin/mariadbd /usr/sbin/mysqld; do [ -x "$found" ] && { echo "$found"; return; }; done
    return 1
}

# Each server runs and reports its version (read in full: see hack/lib/version_check.sh).
check_servers() {
    local ok=0 pg mdb
    check_version redis-server "Redis server v=" redis-server --version || ok=1
    check_version redis-sentinel "Redis server v=" redis-sentinel --version || ok=1
    if pg=$(postgres_bin); then
        check_version postgres "(PostgreSQL)" "$pg" --version || ok=1
    else
        echo "postgres: not found" >&2; ok=1
    fi
    if mdb=$(mariadb_bin); then
        check_version mariadbd "MariaDB" "$mdb" --version || ok=1
    else
        echo "mariadbd: not found" >&2; ok=1
    fi
    if ! id -u "$DB_USER" >/dev/null 2>&1; then echo "user $DB_USER: missing" >&2; ok=1; fi
    return "$ok"
}

if [ "$CHECK_ONLY" = 1 ]; then
    check_servers || { echo "install.sh: not ready; run hack/backends/install.sh (as root)" >&2; exit 1; }
    exit 0
fi

packages=()
have_redis || packages+=(redis-server)
have_sentinel || packages+=(redis-sentinel)
have_postgres || packages+=(postgresql)
have_mariadb || packages+=(mariadb-server)

if [ "${#packages[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install.sh: need root to install: ${packages[*]}" >&2
        exit 1
    fi
    # Forbid maintainer scripts from starting services while we install (restored afterwards).
    policy=/usr/sbin/policy-rc.d
    restore_policy=""
    if [ -e "$policy" ]; then
        restore_policy=$(mktemp)
        cp -p "$policy" "$restore_policy"
    fi
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    cleanup_policy() {
        if [ -n "$restore_policy" ]; then mv -f "$restore_policy" "$policy"; else rm -f "$policy"; fi
    }
    trap cleanup_policy EXIT

    # apt lists may be empty in a fresh image; update only when a package has no candidate.
    for pkg in "${packages[@]}"; do
        candidate=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
        if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
            apt-get update -qq
            break
        fi
    done
    echo "install.sh: installing ${packages[*]}" >&2
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null

    # Stop whatever did start anyway (no systemd here, but be thorough) and keep them from autostarting.
    for svc in redis-server redis-sentinel postgresql mariadb mysql; do
        if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
        if command -v systemctl >/dev/null 2>&1; then
            systemctl disable --now "$svc" >/dev/null 2>&1 || true
        fi
        if command -v update-rc.d >/dev/null 2>&1; then update-rc.d "$svc" disable >/dev/null 2>&1 || true; fi
    done
fi

# The tests need only the binaries; the servers the packages would run must not be running.
for pidfile in /run/redis/redis-server.pid /run/sentinel/redis-sentinel.pid /run/mysqld/mysqld.pid; do
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        kill "$(cat "$pidfile")" 2>/dev/null || true
    fi
done
if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters -h 2>/dev/null | while read -r ver name _port status _rest; do
        if [ "$status" = "online" ]; then pg_ctlcluster "$ver" "$name" stop >/dev/null 2>&1 || true; fi
    done
fi

if ! id -u "$DB_USER" >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install.sh: need root to create user $DB_USER" >&2
        exit 1
    fi
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$DB_USER"
fi

have_redis || { echo "install.sh: redis-server still missing" >&2; exit 1; }
have_sentinel || { echo "install.sh: redis-sentinel still missing" >&2; exit 1; }
have_postgres || { echo "install.sh: PostgreSQL still missing" >&2; exit 1; }
have_mariadb || { echo "install.sh: mariadb-server still missing" >&2; exit 1; }
check_servers || { echo "install.sh: a server binary does not run" >&2; exit 1; }
echo "install.sh: redis-server, redis-sentinel, postgresql and mariadb-server are installed; DB user: $DB_USER" >&2
