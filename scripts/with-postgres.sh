#!/usr/bin/env bash
# Runs a command inside pg_virtualenv (a throwaway PostgreSQL cluster on a
# free port, PG* exported, dropped afterwards).
#
# As root, pg_virtualenv keeps its cluster in the system locations under the
# name "regress" and refuses to start when one exists. A run that was killed
# (a timeout, a closed terminal) leaves that cluster behind, and every later
# `make test` on the machine would fail. A leftover that pg_virtualenv itself
# marked as throwaway (.by_pg_virtualenv) is dropped here, loudly; a
# "regress" cluster without that mark is someone else's and is left alone
# (pg_virtualenv then refuses, and says why).
# Usage: scripts/with-postgres.sh COMMAND [ARGS...]
set -euo pipefail
if [ "$(id -u)" -eq 0 ]; then
    for marker in /etc/postgresql/*/regress/.by_pg_virtualenv; do
        [ -f "$marker" ] || continue
        version=$(basename "$(dirname "$(dirname "$marker")")")
        echo "with-postgres: dropping the throwaway cluster $version/regress an interrupted run left behind" >&2
        # The mark goes first: pg_dropcluster leaves files it does not know.
        rm -f "$marker"
        if pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "regress"' | grep -q .; then
            pg_ctlcluster --mode immediate "$version" regress stop 2>/dev/null || true
            pg_dropcluster "$version" regress
        fi
        rmdir "/etc/postgresql/$version/regress" 2>/dev/null || true
    done
fi
exec pg_virtualenv "$@"
