#!/bin/sh
# The real-browser WebRTC test: `tests/browser/run.sh path/to/tabagent`.
#
# Chromium sends ICE checks from every interface it has, so the server, the
# page server and the browser run in a private network namespace with only
# loopback (needs root, or unprivileged user namespaces): no packet can leave
# 127.0.0.0/8. Needs Debian's `chromium`, node and `npm install` in this dir.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
binary=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
[ -d "$here/node_modules/playwright-core" ] || (cd "$here" && npm install --no-audit --no-fund --silent)
if [ "$(id -u)" = 0 ]; then
    exec unshare --net sh -c 'ip link set lo up && exec node "$0" "$1"' "$here/run.js" "$binary"
else
    exec unshare --net --map-root-user sh -c 'ip link set lo up && exec node "$0" "$1"' "$here/run.js" "$binary"
fi
