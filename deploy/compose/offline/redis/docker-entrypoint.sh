#!/usr/bin/env bash
# As the official redis image: arguments starting with `-` are redis-server's; run as
# root, redis-server drops to the redis user. Protected mode is off, as in that image.
set -euo pipefail

if [[ ${1:-} == -* ]]; then
    set -- redis-server "$@"
fi
if [[ ${1:-} == redis-server ]]; then
    set -- "$@" --protected-mode no
    if [[ $(id -u) -eq 0 ]]; then
        exec setpriv --reuid=redis --regid=redis --init-groups "$@"
    fi
fi
exec "$@"
