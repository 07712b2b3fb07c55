"""The systemd unit: systemd-analyze verify and security, hardening, its config, ExecStartPre."""

from __future__ import annotations

import copy
import os
import re
import shlex
import shutil
import tempfile
from pathlib import Path

from .common import (SECURITY_THRESHOLD, SERVE_TOML, UNIT, effective, must_reject, print_config,
                     report, run, seconds, serving_problems, shutdown_timeout)


def parse_unit(text: str) -> dict[str, list[str]]:
    """Section.Key -> values, in order (continuation lines joined)."""
    values: dict[str, list[str]] = {}
    section = ""
    lines = iter(text.splitlines())
    for line in lines:
        while line.endswith("\\"):
            line = line[:-1] + " " + next(lines, "").strip()
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        values.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return values


def unit_hardening(unit: dict[str, list[str]], config: str) -> list[str]:
    """What the unit must say, whatever else it says."""
    want = {
        "DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
        "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter": "@system-service", "MemoryDenyWriteExecute": "yes",
        "LockPersonality": "yes", "RestrictNamespaces": "yes",
        "CapabilityBoundingSet": "", "AmbientCapabilities": "",
        "StateDirectory": "rendezvous", "Restart": "on-failure",
    }
    problems = [
        f"{key}={value} missing"
        for key, value in want.items()
        if value not in unit.get(f"Service.{key}", [])
    ]
    for key in ("LimitNOFILE", "TimeoutStopSec", "ExecStartPre"):
        if key not in {k.split(".", 1)[1] for k in unit}:
            problems.append(f"no {key}=")
    stop = unit.get("Service.TimeoutStopSec", ["0"])[-1]
    stop_s = seconds(stop if re.search(r"[a-z]", stop) else stop + "s")
    if stop_s <= shutdown_timeout(config):
        problems.append(f"TimeoutStopSec={stop} is not above --shutdown-timeout")
    if not any(v.startswith("-/etc/rendezvous/") for v in unit.get("Service.EnvironmentFile", [])):
        problems.append("no optional EnvironmentFile=-/etc/rendezvous/...")
    return problems


def unit_environment(unit: dict[str, list[str]]) -> dict[str, str]:
    """Environment= of the unit, with the specifiers it uses expanded."""
    env = {}
    for line in unit.get("Service.Environment", []):
        for item in shlex.split(line):
            name, _, value = item.partition("=")
            value = value.replace("%S", "/var/lib").replace("%d", "/run/credentials/rendezvous.service")
            env[name] = value
    return env


def unit_config(binary: Path, unit: dict[str, list[str]]) -> tuple[list[str], str]:
    """ExecStart's arguments, with the example serve.toml, through --print-config."""
    argv = shlex.split(unit["Service.ExecStart"][-1])
    if argv[0] != "/usr/local/bin/rendezvous" or argv[1] != "serve":
        return [f"ExecStart runs {argv[:2]}, not /usr/local/bin/rendezvous serve"], ""
    if "--config" not in argv:
        return ["ExecStart has no --config"], ""
    at = argv.index("--config") + 1
    if argv[at] != "/etc/rendezvous/serve.toml":
        return [f"--config {argv[at]}: the example is installed as /etc/rendezvous/serve.toml"], ""
    argv[at] = str(SERVE_TOML)
    problems, config = print_config(binary, argv[1:], unit_environment(unit))
    return problems + (serving_problems(config) if config else []), config


def state_key_command(unit: dict[str, list[str]]) -> list[str]:
    """ExecStartPre, run twice on a temporary %S: a 32-byte key, kept, 0600."""
    problems = []
    pre = [v for v in unit.get("Service.ExecStartPre", []) if "state.key" in v]
    if not pre:
        return ["no ExecStartPre makes state.key"]
    umask = int(unit.get("Service.UMask", ["0022"])[-1], 8)
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "rendezvous"
        state.mkdir()  # StateDirectory= makes it before ExecStartPre runs
        argv = shlex.split(pre[0].lstrip("-+!@:").replace("%S", tmp))

        def start() -> bytes:
            result = run(argv, preexec_fn=lambda: os.umask(umask))
            if result.returncode != 0:
                problems.append(f"ExecStartPre exited {result.returncode}: {result.stderr.strip()}")
            key = state / "state.key"
            return key.read_bytes() if key.exists() else b""

        first = start()
        second = start()
        key = state / "state.key"
        if len(first) != 32:
            problems.append(f"state.key has {len(first)} bytes, not 32")
        if first != second:
            problems.append("a second start replaced state.key")
        if key.exists() and key.stat().st_mode & 0o077:
            problems.append(f"state.key is mode {key.stat().st_mode & 0o777:o}")
        if sorted(p.name for p in state.iterdir()) != ["state.key"]:
            problems.append(f"left behind {sorted(p.name for p in state.iterdir())}")
    return problems


def analyze_verify(unit_text: str, binary: Path, tmp: Path) -> list[str]:
    """`systemd-analyze verify` on a copy whose binary exists; any output fails.

    verify wants ExecStart's file to exist and runs `man` for
    Documentation=man:…, hence the copy and the temporary MANPATH. It exits
    0 on an unknown key (only a warning), so output of any kind counts.
    """
    copy_path = tmp / "rendezvous.service"
    copy_path.write_text(unit_text.replace("/usr/local/bin/rendezvous", str(binary)))
    env = {**os.environ, "MANPATH": str(tmp / "man"), "SYSTEMD_LOG_COLOR": "0"}
    result = run(["systemd-analyze", "verify", str(copy_path)], env=env)
    out = (result.stdout + result.stderr).strip()
    if result.returncode != 0 or out:
        return [f"verify: {out.splitlines()[0] if out else 'exit ' + str(result.returncode)}"
                + (f" (+{len(out.splitlines()) - 1} lines)" if len(out.splitlines()) > 1 else "")]
    return []


def analyze_security(unit_text: str, binary: Path, tmp: Path) -> tuple[list[str], str]:
    copy_path = tmp / "rendezvous.service"
    copy_path.write_text(unit_text.replace("/usr/local/bin/rendezvous", str(binary)))
    result = run(["systemd-analyze", "security", "--offline=true",
                  f"--threshold={SECURITY_THRESHOLD}", "--no-pager", str(copy_path)])
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    score = match.group(1) if match else "?"
    if result.returncode != 0:
        return [f"exposure {score} is over {SECURITY_THRESHOLD / 10}"], score
    return [], score


def check_systemd(binary: Path) -> None:
    if not shutil.which("systemd-analyze"):
        report("systemd: systemd-analyze", ["systemd-analyze not found (Debian: apt-get install systemd)"])
        return
    version = run(["systemd-analyze", "--version"]).stdout.split("\n")[0]
    text = UNIT.read_text()
    unit = parse_unit(text)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pages = run([str(binary), "man", str(tmp / "man" / "man1")])
        if pages.returncode != 0:
            report("systemd: systemd-analyze verify", [f"rendezvous man failed: {pages.stderr.strip()}"])
            return
        problems = analyze_verify(text, binary, tmp)
        problems += must_reject(analyze_verify(text.replace("ProtectSystem=", "ProtectSytem="), binary, tmp),
                                "a misspelt key")
        report("systemd: systemd-analyze verify rendezvous.service", problems, version)

        problems, score = analyze_security(text, binary, tmp)
        weak = "[Service]\nExecStart=/usr/local/bin/rendezvous serve\n"
        problems += must_reject(analyze_security(weak, binary, tmp)[0], "an unhardened unit")
        report("systemd: systemd-analyze security --offline", problems,
               f"exposure {score}, at most {SECURITY_THRESHOLD / 10}")

    problems, config = unit_config(binary, unit)
    broken = copy.deepcopy(unit)
    broken["Service.Environment"] = broken.get("Service.Environment", []) + ["RENDEZVOUS_STATE_KEY=x"]
    problems += must_reject(unit_config(binary, broken)[0], "a misspelt variable")
    report("systemd: serve.toml and the unit's environment pass --print-config", problems)

    problems = unit_hardening(unit, config)
    broken = parse_unit(text.replace("TimeoutStopSec=", "TimeoutStopSec=15\n#"))
    problems += must_reject(unit_hardening(broken, config), "TimeoutStopSec=15")
    report("systemd: hardening, stop timing above --shutdown-timeout", problems,
           f"TimeoutStopSec={unit.get('Service.TimeoutStopSec', ['?'])[-1]}, "
           f"--shutdown-timeout {effective(config, 'shutdown-timeout')}")

    problems = state_key_command(unit)
    broken = parse_unit(text.replace("test -s", "false &&"))
    problems += must_reject(state_key_command(broken), "a command that never makes the key")
    report("systemd: ExecStartPre makes state.key once and keeps it", problems)
