#!/bin/sh
# Rendezvous in any CI system: a POSIX sh snippet. Source it, or copy the
# lines you need. It needs RENDEZVOUS_SERVER, a way to be admitted
# (RENDEZVOUS_HOST_TOKEN from the CI system's secret store), and a task ID
# (RENDEZVOUS_TASK_ID; GitHub Actions and GitLab CI have defaults).
#
#   . deploy/ci/rendezvous.sh
#   rendezvous_install
#   rendezvous run --on-failure --wait-for-guest 10m -- ./ci/test.sh
#
# Detached: `rendezvous host --detach` early, `rendezvous wait` at the end
# (in whatever runs when the job has failed, e.g. a trap):
#
#   rendezvous host --detach
#   trap 'rendezvous wait --wait-for-guest 5m' EXIT
#   ./ci/test.sh

# Puts the binary on PATH, unless it is there already: a release binary
# your operator hosts (RENDEZVOUS_BINARY_URL), else cargo install from the
# repository RENDEZVOUS_GIT_URL names. Fails, saying so, without either.
rendezvous_install() {
  command -v rendezvous >/dev/null 2>&1 && return 0
  if [ -n "${RENDEZVOUS_BINARY_URL:-}" ]; then
    dir="${TMPDIR:-/tmp}/rendezvous-bin-$(id -u)"
    mkdir -p "$dir" &&
      curl -fsSL "$RENDEZVOUS_BINARY_URL" -o "$dir/rendezvous" &&
      chmod +x "$dir/rendezvous" || return 1
    PATH="$dir:$PATH"
    export PATH
  elif [ -n "${RENDEZVOUS_GIT_URL:-}" ]; then
    cargo install --locked --git "$RENDEZVOUS_GIT_URL" rendezvous
  else
    echo "rendezvous is not on PATH: set RENDEZVOUS_BINARY_URL (a release binary your operator hosts) or RENDEZVOUS_GIT_URL (the repository to cargo install from)" >&2
    return 1
  fi
}
