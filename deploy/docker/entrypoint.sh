#!/bin/sh
# Entry point of the rendezvous image. Before `serve`, it makes the state
# key (32 random bytes) if RENDEZVOUS_STATE_KEY_FILE names a file that is
# missing or empty: in the state volume it is kept across restarts and
# upgrades, so hosts resume their sessions. An existing key (a mounted
# secret, say) is never touched. Then rendezvous replaces this shell, so
# that it is PID 1 and receives SIGTERM itself.
set -eu

key="${RENDEZVOUS_STATE_KEY_FILE:-}"
if [ "${1:-}" = serve ] && [ -n "$key" ] && [ ! -s "$key" ]; then
    umask 077
    head -c 32 /dev/urandom > "$key.new"
    mv "$key.new" "$key"
fi
exec rendezvous "$@"
