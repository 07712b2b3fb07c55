"""The Compose file: build, state volume, stop timing, redis profile, its environment."""

from __future__ import annotations

import copy
import shlex
from pathlib import Path

from .common import (COMPOSE, DOCKERFILE, ROOT, effective, must_reject, print_config, report,
                     seconds, serving_problems, shutdown_timeout)
from .docker import image_defaults


def compose_problems(doc: dict, image: tuple[dict[str, str], list[str]], binary: Path) -> list[str]:
    problems = []
    image_env_vars, image_cmd = image
    services = doc.get("services") or {}
    server = services.get("rendezvous")
    if not server:
        return ["no service rendezvous"]
    build = server.get("build") or {}
    context = (COMPOSE.parent / build.get("context", ".")).resolve()
    dockerfile = context / build.get("dockerfile", "Dockerfile")
    if context != ROOT:
        problems.append(f"build context {context} is not the repository root")
    if dockerfile.resolve() != DOCKERFILE:
        problems.append(f"builds {dockerfile}, not deploy/docker/Dockerfile")
    volumes = doc.get("volumes") or {}
    state_dir = str(Path(image_env_vars.get("RENDEZVOUS_STATE_KEY_FILE", "/x/x")).parent)
    mounted = [v.split(":") for v in server.get("volumes", []) if isinstance(v, str)]
    if not any(src in volumes and dst == state_dir for src, dst, *_ in mounted):
        problems.append(f"no named volume on {state_dir}")
    test = " ".join(map(str, (server.get("healthcheck") or {}).get("test", [])))
    if "/healthz" not in test:
        problems.append("no healthcheck of /healthz")
    env = server.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    env = {k: str(v) for k, v in env.items()}
    command = server.get("command", image_cmd)
    command = shlex.split(command) if isinstance(command, str) else list(command)
    env_problems, config = print_config(binary, command, {**image_env_vars, **env})
    problems += [f"environment: {p}" for p in env_problems]
    grace = server.get("stop_grace_period")
    if not grace or (config and seconds(str(grace)) <= shutdown_timeout(config)):
        problems.append(f"stop_grace_period {grace} is not above --shutdown-timeout")
    secrets = doc.get("secrets") or {}
    for name, value in env.items():
        if value.startswith("/run/secrets/") and value.split("/")[3] not in secrets:
            problems.append(f"{name}: no secret {value.split('/')[3]}")
    redis = services.get("redis")
    if redis is not None and not redis.get("profiles"):
        problems.append("redis starts by default: gate it behind a profile")
    if config:
        problems += serving_problems(config)
        for port in server.get("ports", []):
            if not str(port).startswith("127.0.0.1:") and effective(config, "insecure") == "true":
                problems.append(f"port {port}: cleartext published beyond loopback")
    return problems


def check_compose(binary: Path, missing: dict[str, str]) -> None:
    name = "compose: docker-compose.yml parses, builds deploy/docker/Dockerfile, env passes --print-config"
    if "yaml" in missing:
        report(name, [missing["yaml"]])
        return
    import yaml
    try:
        doc = yaml.safe_load(COMPOSE.read_text())
    except yaml.YAMLError as e:
        report(name, [f"YAML: {e}"])
        return
    image = image_defaults(DOCKERFILE.read_text())
    problems = compose_problems(doc, image, binary)
    broken = copy.deepcopy(doc)
    broken["services"]["rendezvous"]["build"]["dockerfile"] = "Dockerfile"
    broken["services"]["rendezvous"]["stop_grace_period"] = "10s"
    problems += must_reject(compose_problems(broken, image, binary), "a wrong Dockerfile and a 10s grace")
    report(name, problems)
