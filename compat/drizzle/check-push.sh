#!/usr/bin/env bash
# Checks that `drizzle-kit push` with compat/drizzle/schema.ts changes nothing
# on databases the crate migrated (see check-push.ts for what is checked).
#
#   compat/drizzle/check-push.sh install   Node.js (Debian's, if missing) and the
#                                           pinned packages (npm ci), nothing else
#   compat/drizzle/check-push.sh           the above when needed, a type check,
#                                           the crate's migration runner, the check
#
# Needs PostgreSQL: DREAMNET_TEST_DATABASE_URL, or
# postgres://postgres@127.0.0.1:5432/postgres. Exits non-zero on any failure.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

ensure_node() {
  if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then return; fi
  echo "installing Node.js and npm (Debian packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
}

# npm ci, unless node_modules already holds exactly package-lock.json's packages.
ensure_packages() {
  ensure_node
  local stamp="$here/node_modules/.dreamnet-lock.sha256"
  local want
  want="$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
  (cd "$here" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
}

ensure_packages
if [ "${1:-}" = "install" ]; then exit 0; fi

started=$SECONDS
echo "node $(node --version), $("$here/node_modules/.bin/drizzle-kit" --version 2>/dev/null | tr '\n' ' ')"
echo "type check: tsc -p compat/drizzle"
(cd "$here" && node_modules/.bin/tsc -p .)

# The crate's own migration runner (examples/migrate.rs), built with the
# features the test suite uses so that a CI run reuses its build. The crate
# embeds migrations/ at compile time, and cargo does not notice a new
# migration directory by itself: rebuild when anything there is newer.
export DREAMNET_MIGRATE="${CARGO_TARGET_DIR:-$root/target}/debug/examples/migrate"
if [ -e "$DREAMNET_MIGRATE" ] && [ -n "$(find "$root/migrations" -newer "$DREAMNET_MIGRATE" -print -quit)" ]; then
  touch "$root/src/postgres/mod.rs"
fi
(cd "$root" && cargo build --quiet --all-features --example migrate)
export DREAMNET_MIGRATIONS="$root/migrations"

cd "$here"
status=0
node_modules/.bin/tsx check-push.ts || status=$?
echo "check-push took $((SECONDS - started)) s"
exit "$status"
