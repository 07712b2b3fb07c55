"""The Docker image: hadolint, the runtime stage, entrypoint.sh, .dockerignore."""

from __future__ import annotations

import re
import shlex
import tempfile
from pathlib import Path

from .common import (DOCKERFILE, DOCKERIGNORE, ENTRYPOINT, ROOT, effective, hadolint_path,
                     must_reject, print_config, report, run, serving_problems)


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined."""
    out = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        current += " " + stripped.rstrip("\\").strip() if current else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            word, _, rest = current.partition(" ")
            out.append((word.upper(), rest.strip()))
            current = ""
    return out


def image_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for word, rest in instructions:
        if word == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    return instructions[starts[-1]:] if starts else []


def image_defaults(text: str) -> tuple[dict[str, str], list[str]]:
    """The runtime stage's ENV and CMD."""
    stage = final_stage(dockerfile_instructions(text))
    cmds = [rest for word, rest in stage if word == "CMD"]
    return image_env(stage), exec_form(cmds[-1]) if cmds else []


def exec_form(rest: str) -> list[str]:
    import json
    return json.loads(rest) if rest.startswith("[") else shlex.split(rest)


def dockerfile_structure(text: str, binary: Path) -> list[str]:
    """The runtime stage: user, port, probe, volume, stop signal, ENV."""
    problems = []
    stage = final_stage(dockerfile_instructions(text))
    words = {}
    for word, rest in stage:
        words.setdefault(word, []).append(rest)
    if len([w for w, _ in dockerfile_instructions(text) if w == "FROM"]) < 2:
        problems.append("not multi-stage")
    user = words.get("USER", ["root"])[-1].split(":")[0]
    if not user.isdigit() or int(user) == 0:
        problems.append(f"USER {user}: want a numeric, non-root UID")
    if "8080" not in " ".join(words.get("EXPOSE", [])):
        problems.append("no EXPOSE 8080")
    health = " ".join(words.get("HEALTHCHECK", []))
    if "/healthz" not in health:
        problems.append("no HEALTHCHECK of /healthz")
    else:
        probe = exec_form(health.split("CMD", 1)[1].strip())[0]
        installs = " ".join(rest for word, rest in stage if word == "RUN")
        if probe not in installs and probe not in ("rendezvous", "/usr/local/bin/rendezvous"):
            problems.append(f"the HEALTHCHECK runs {probe}, which the runtime stage does not install")
    if words.get("STOPSIGNAL", [""])[-1] != "SIGTERM":
        problems.append("no STOPSIGNAL SIGTERM")
    env, cmd = image_defaults(text)
    key = env.get("RENDEZVOUS_STATE_KEY_FILE", "")
    volumes = " ".join(words.get("VOLUME", []))
    if not key or str(Path(key).parent) not in volumes:
        problems.append("RENDEZVOUS_STATE_KEY_FILE is not in a VOLUME")
    env_problems, config = print_config(binary, cmd, env)
    problems += [f"ENV and CMD: {p}" for p in env_problems]
    if config:
        if effective(config, "insecure") == "true" and "behind a TLS proxy" not in text:
            problems.append("--insecure without saying that it is for behind a TLS proxy")
        # Hosts are admitted by what the user adds (a host token file, OIDC).
        problems += [p for p in serving_problems(config) if "registration" not in p]
    for word, rest in dockerfile_instructions(text):
        if word == "COPY" and "--from" not in rest:
            sources = [a for a in shlex.split(rest) if not a.startswith("--")][:-1]
            problems += [f"COPY {s}: no such path" for s in sources
                         if s != "." and not (ROOT / s).exists()]
    return problems


def hadolint(path: Path) -> tuple[int, str]:
    result = run([hadolint_path() or "hadolint", "--no-color", "--failure-threshold", "style", str(path)])
    return result.returncode, (result.stdout + result.stderr).strip()


def entrypoint_run(script: Path, binary: Path) -> list[str]:
    """The entry point with the real binary on PATH and a temporary state dir."""
    problems = []
    syntax = run(["sh", "-n", str(script)])
    if syntax.returncode != 0:
        return [f"sh -n: {syntax.stderr.strip()}"]
    with tempfile.TemporaryDirectory() as tmp:
        bindir = Path(tmp) / "bin"
        bindir.mkdir()
        (bindir / "rendezvous").symlink_to(binary)
        key = Path(tmp) / "state" / "state.key"
        key.parent.mkdir()
        env = {"PATH": f"{bindir}:/usr/bin:/bin", "RENDEZVOUS_STATE_KEY_FILE": str(key)}
        keys = []
        for _ in range(2):
            result = run(["sh", str(script), "serve", "--print-config"], env=env)
            if result.returncode != 0:
                problems.append(f"exited {result.returncode}: {result.stderr.strip()[:200]}")
            elif not re.search(r"# environment RENDEZVOUS_STATE_KEY_FILE$", result.stdout, re.M):
                problems.append("did not run rendezvous serve with the environment")
            keys.append(key.read_bytes() if key.exists() else b"")
        if len(keys[0]) != 32:
            problems.append(f"state.key has {len(keys[0])} bytes, not 32")
        elif keys[0] != keys[1]:
            problems.append("a second start replaced state.key")
        elif key.stat().st_mode & 0o077:
            problems.append(f"state.key is mode {key.stat().st_mode & 0o777:o}")
        result = run(["sh", str(script), "--version"], env={**env, "RENDEZVOUS_STATE_KEY_FILE": str(key) + "2"})
        if result.returncode != 0 or Path(str(key) + "2").exists():
            problems.append("a command other than serve made a key, or failed")
    return problems


def dockerignore_problems(text: str) -> list[str]:
    """Build output and npm packages out; what the build needs in."""
    import fnmatch
    patterns = [line.strip().rstrip("/") for line in text.splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(path: str) -> bool:
        result = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            pattern = pattern.lstrip("!")
            parts = path.split("/")
            prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
            hit = any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.replace("**/", ""))
                      for p in prefixes)
            if hit:
                result = not negate
        return result

    problems = [f"{p} is sent to the build" for p in
                ("target/debug", "web-guest/node_modules/x", "tests/browser/node_modules/x")
                if not ignored(p)]
    problems += [f"{p} is ignored, but the build needs it" for p in
                 ("Cargo.toml", "Cargo.lock", "src/main.rs", "crates/rendezvous-server/src",
                  "proto/rendezvous/v1/rendezvous.proto", "web-guest/dist/index.html",
                  "deploy/docker/entrypoint.sh")
                 if ignored(p)]
    return problems


def check_docker(binary: Path, missing: dict[str, str]) -> None:
    text = DOCKERFILE.read_text()
    if "hadolint" in missing:
        report("docker: hadolint", [missing["hadolint"]])
    else:
        version = run([hadolint_path() or "hadolint", "--version"]).stdout.strip()
        code, out = hadolint(DOCKERFILE)
        problems = [f"hadolint: {out or 'exit ' + str(code)}"] if code or out else []
        with tempfile.TemporaryDirectory() as tmp:
            bad = Path(tmp) / "Dockerfile"
            bad.write_text("FROM debian\nRUN apt-get update && apt-get install curl\n")
            bad_code, bad_out = hadolint(bad)
            if bad_code == 0 or "DL3008" not in bad_out:
                problems.append(f"hadolint passed a bad Dockerfile: it did not run ({bad_out[:200]})")
        report("docker: hadolint deploy/docker/Dockerfile, no findings", problems, version)

    problems = dockerfile_structure(text, binary)
    problems += must_reject(dockerfile_structure(text.replace("USER 10001", "USER root"), binary),
                            "USER root")
    problems += must_reject(
        dockerfile_structure(text.replace("RENDEZVOUS_LOG_FORMAT=json", "RENDEZVOUS_LOG_FORMAT=yaml"), binary),
        "a bad ENV value")
    report("docker: runtime stage (numeric user, probe, volume, STOPSIGNAL) and ENV pass --print-config",
           problems)

    problems = entrypoint_run(ENTRYPOINT, binary)
    with tempfile.TemporaryDirectory() as tmp:
        broken = Path(tmp) / "entrypoint.sh"
        broken.write_text(ENTRYPOINT.read_text().replace('[ ! -s "$key" ]', "true"))
        problems += must_reject(entrypoint_run(broken, binary), "an entry point that replaces the key")
    report("docker: entrypoint.sh makes the state key once, then execs rendezvous", problems)

    if not DOCKERIGNORE.exists():
        report("docker: .dockerignore", ["missing"])
    else:
        problems = dockerignore_problems(DOCKERIGNORE.read_text())
        problems += must_reject(dockerignore_problems(DOCKERIGNORE.read_text() + "\nweb-guest\n"),
                                "an ignored web-guest/dist")
        report("docker: .dockerignore keeps target/ and node_modules/ out, sources in", problems)
