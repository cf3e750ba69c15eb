#!/bin/sh
# The API page in a real browser: `tests/browser/docs.sh path/to/tabagent SCREENSHOT.png`.
#
# tabagent and headless Chromium run in a private network namespace with only
# loopback (needs root, or unprivileged user namespaces), as run.sh does: no
# packet can leave 127.0.0.0/8, so the page cannot reach a CDN even by mistake.
# Needs Debian's `chromium`, node and `npm install` in this dir.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
binary=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
[ -d "$here/node_modules/playwright-core" ] || (cd "$here" && npm install --no-audit --no-fund --silent)
if [ "$(id -u)" = 0 ]; then
    exec unshare --net sh -c 'ip link set lo up && exec node "$0" "$1" "$2"' "$here/docs.js" "$binary" "$2"
else
    exec unshare --net --map-root-user sh -c 'ip link set lo up && exec node "$0" "$1" "$2"' "$here/docs.js" "$binary" "$2"
fi
