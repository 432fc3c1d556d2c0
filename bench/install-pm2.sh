#!/bin/sh
# Installs pm2 (default 7.0.4) from npm into a prefix of its own, for
# side-by-side comparisons, and prints the path of its pm2 binary.
#
#   bench/install-pm2.sh [prefix]        (default: ${TMPDIR:-/tmp}/keel-pm2-<version>)
#
# Use it with a private PM2_HOME so it never touches a real pm2:
#   PM2_HOME=$(mktemp -d) "$(bench/install-pm2.sh)" start app.js -i 2
set -eu
version=${PM2_VERSION:-7.0.4}
prefix=${1:-${TMPDIR:-/tmp}/keel-pm2-$version}
bin=$prefix/node_modules/.bin/pm2
# (Not "pm2 --version": that starts pm2's daemon.)
installed=$(cat "$prefix/node_modules/pm2/package.json" 2>/dev/null | sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' | head -1)
if [ ! -x "$bin" ] || [ "$installed" != "$version" ]; then
	mkdir -p "$prefix"
	npm install --prefix "$prefix" --no-audit --no-fund --no-package-lock \
		--loglevel=error "pm2@$version" >&2
fi
echo "$bin"
