#!/usr/bin/env bash
# Makes sure the system programs the local mesh needs are installed: the PostgreSQL
# server binaries (initdb, pg_ctl), redis-server, and pg_auto_failover (pg_autoctl and
# its extension, for the version of the server found: a highly available ledger
# database, services/localmesh/autofailover.py). Installs Debian's packages when one
# is missing (apt-get as root, or through `sudo -n` when that works without a password);
# otherwise says what to install and exits 1. Does nothing when both are present.
#
# We never use the system's own servers: the launcher runs private ones on other ports
# (services/localmesh). Debian's packages may start a cluster on 5432 and Redis on 6379;
# that is harmless, and this script starts nothing itself.
set -euo pipefail

have_postgres() {
  # Where services/localmesh/postgres.py looks, in the same order.
  if [[ -n "${WALLET_PG_BINDIR:-}" && -x "$WALLET_PG_BINDIR/initdb" ]]; then return 0; fi
  if compgen -G '/usr/lib/postgresql/*/bin/initdb' > /dev/null; then return 0; fi
  if command -v pg_config > /dev/null && [[ -x "$(pg_config --bindir)/initdb" ]]; then return 0; fi
  command -v initdb > /dev/null
}

have_redis() {
  command -v redis-server > /dev/null
}

have_autofailover() {
  command -v pg_autoctl > /dev/null \
    && compgen -G '/usr/share/postgresql/*/extension/pgautofailover.control' > /dev/null
}

# Debian's package of pg_auto_failover for the newest server installed (postgresql-15-...).
autofailover_package() {
  local major
  major=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2> /dev/null \
    | sort -n | tail -1)
  echo "postgresql-${major:-15}-auto-failover"
}

missing=()
have_postgres || missing+=(postgresql)
have_redis || missing+=(redis-server)
# Its package names the server's version: known once the server is (a second pass).
if have_postgres && ! have_autofailover; then missing+=("$(autofailover_package)"); fi
if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "ensure-system-deps: missing Debian packages: ${missing[*]}"

cannot_install() {
  echo "ensure-system-deps: $1" >&2
  echo "ensure-system-deps: install them yourself, e.g.: sudo apt-get install ${missing[*]}" >&2
  exit 1
}

if ! command -v apt-get > /dev/null; then
  cannot_install "apt-get not found (not a Debian-like system)"
fi
if ((EUID == 0)); then
  as_root=()
elif command -v sudo > /dev/null && sudo -n true 2> /dev/null; then
  as_root=(sudo -n)
else
  cannot_install "not root, and sudo does not work without a password"
fi

# `env` inside sudo: sudo would drop a variable set before it.
apt=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Dpkg::Use-Pty=0)
echo "ensure-system-deps: installing ${missing[*]} with apt-get"
"${apt[@]}" update || cannot_install "apt-get update failed"
"${apt[@]}" install --no-install-recommends "${missing[@]}" || cannot_install "apt-get install failed"

if ! have_autofailover; then
  missing+=("$(autofailover_package)")
  "${apt[@]}" install --no-install-recommends "$(autofailover_package)" \
    || cannot_install "apt-get install $(autofailover_package) failed"
fi

still_missing=()
have_postgres || still_missing+=(postgresql)
have_redis || still_missing+=(redis-server)
have_autofailover || still_missing+=("$(autofailover_package)")
if ((${#still_missing[@]} > 0)); then
  missing=("${still_missing[@]}")
  cannot_install "still missing after apt-get install: ${still_missing[*]}"
fi
echo "ensure-system-deps: installed ${missing[*]}"
