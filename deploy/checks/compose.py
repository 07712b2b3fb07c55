"""The Compose file: build, state volume, stop timing, its environment; the replicas profile and its proxy."""

from __future__ import annotations

import copy
import json
import re
import shlex
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from .common import (COMPOSE, DOCKERFILE, ROOT, caddy_path, effective, is_set, must_reject, print_config,
                     report, run, seconds, serving_problems, shutdown_timeout)
from .docker import image_defaults

# The profile of replica mode, and the proxy's configuration beside the compose file.
PROFILE = "replicas"
CADDYFILE = COMPOSE.parent / "Caddyfile"
# Where the official caddy image reads its configuration.
CADDY_CONFIG = "/etc/caddy/Caddyfile"
# Load-balancing policies that keep one client on one replica.
STICKY_POLICIES = {"client_ip_hash", "ip_hash", "cookie", "header"}


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def service_config(service: dict, image: tuple[dict[str, str], list[str]], binary: Path) -> tuple[list[str], str]:
    """A rendezvous service's environment over the image's ENV, and its command, through --print-config."""
    image_env_vars, image_cmd = image
    command = service.get("command", image_cmd)
    command = shlex.split(command) if isinstance(command, str) else list(command)
    problems, config = print_config(binary, command, {**image_env_vars, **environment(service)})
    return [f"environment: {p}" for p in problems], config


def builds_the_image(service: dict) -> list[str]:
    problems = []
    build = service.get("build") or {}
    context = (COMPOSE.parent / build.get("context", ".")).resolve()
    dockerfile = context / build.get("dockerfile", "Dockerfile")
    if context != ROOT:
        problems.append(f"build context {context} is not the repository root")
    if dockerfile.resolve() != DOCKERFILE:
        problems.append(f"builds {dockerfile}, not deploy/docker/Dockerfile")
    return problems


def hardening_problems(name: str, service: dict, config: str) -> list[str]:
    """What every rendezvous service keeps: read-only, no capabilities, probe, stop timing."""
    problems = []
    if service.get("read_only") is not True:
        problems.append(f"{name}: the root filesystem is writable")
    if service.get("cap_drop") != ["ALL"]:
        problems.append(f"{name}: capabilities are not all dropped")
    if "no-new-privileges:true" not in (service.get("security_opt") or []):
        problems.append(f"{name}: no no-new-privileges")
    test = " ".join(map(str, (service.get("healthcheck") or {}).get("test", [])))
    if "/healthz" not in test:
        problems.append(f"{name}: no healthcheck of /healthz")
    grace = service.get("stop_grace_period")
    if not grace or (config and seconds(str(grace)) <= shutdown_timeout(config)):
        problems.append(f"{name}: stop_grace_period {grace} is not above --shutdown-timeout")
    return problems


def published_problems(name: str, service: dict, config: str) -> list[str]:
    return [f"{name}: port {port}: cleartext published beyond loopback"
            for port in service.get("ports", [])
            if not str(port).startswith("127.0.0.1:") and effective(config, "insecure") == "true"]


def compose_problems(doc: dict, image: tuple[dict[str, str], list[str]], binary: Path) -> list[str]:
    """The single server (no profile): build, state volume, probe, stop timing, environment."""
    problems = []
    image_env_vars, _ = image
    services = doc.get("services") or {}
    server = services.get("rendezvous")
    if not server:
        return ["no service rendezvous"]
    if server.get("profiles"):
        problems.append("the single server is behind a profile: `docker compose up` would start nothing")
    problems += builds_the_image(server)
    volumes = doc.get("volumes") or {}
    state_dir = str(Path(image_env_vars.get("RENDEZVOUS_STATE_KEY_FILE", "/x/x")).parent)
    mounted = [v.split(":") for v in server.get("volumes", []) if isinstance(v, str)]
    if not any(src in volumes and dst == state_dir for src, dst, *_ in mounted):
        problems.append(f"no named volume on {state_dir}")
    env = environment(server)
    env_problems, config = service_config(server, image, binary)
    problems += env_problems
    problems += hardening_problems("rendezvous", server, config)
    secrets = doc.get("secrets") or {}
    for name, value in env.items():
        if value.startswith("/run/secrets/") and value.split("/")[3] not in secrets:
            problems.append(f"{name}: no secret {value.split('/')[3]}")
    for name, service in services.items():
        if service.get("image", "").startswith("redis:") and PROFILE not in (service.get("profiles") or []):
            problems.append(f"{name} (Redis) starts by default: gate it behind the profile {PROFILE}")
    if config:
        problems += serving_problems(config)
        problems += published_problems("rendezvous", server, config)
    return problems


def secret_file(doc: dict, service: dict, path: str | None) -> str | None:
    """The file behind a /run/secrets/NAME path the service mounts, or None."""
    if not path or not path.startswith("/run/secrets/"):
        return None
    name = path.split("/")[3]
    if name not in (service.get("secrets") or []):
        return None
    return ((doc.get("secrets") or {}).get(name) or {}).get("file")


def in_profile(service: dict) -> bool:
    return PROFILE in (service.get("profiles") or [])


def replicas_problems(doc: dict, image: tuple[dict[str, str], list[str]], binary: Path,
                      caddyfile: str, caddy: str | None) -> list[str]:
    """The replicas profile: Redis, two or more replicas that share everything but their advertise URLs, a proxy."""
    problems = []
    services = doc.get("services") or {}
    profiled = {n: s for n, s in services.items() if in_profile(s)}
    redis = {n: s for n, s in profiled.items() if str(s.get("image", "")).startswith("redis:")}
    replicas = {n: s for n, s in profiled.items()
                if s.get("image") == services.get("rendezvous", {}).get("image")}
    proxies = {n: s for n, s in profiled.items() if str(s.get("image", "")).startswith("caddy:")}
    if len(redis) != 1:
        return [f"{len(redis)} Redis services in profile {PROFILE}, want 1"]
    if len(replicas) < 2:
        return [f"{len(replicas)} rendezvous services in profile {PROFILE}, want 2 or more"]
    if len(proxies) != 1:
        return [f"{len(proxies)} proxy (caddy) services in profile {PROFILE}, want 1"]
    (redis_name, redis_service), = redis.items()
    command = redis_service.get("command", [])
    command = shlex.split(command) if isinstance(command, str) else list(command)
    pairs = set(zip(command, command[1:]))
    if ("--save", "") not in pairs or ("--appendonly", "no") not in pairs:
        problems.append(f"{redis_name}: persists (command {command}): want --save \"\" --appendonly no")
    if "redis-cli" not in " ".join(map(str, (redis_service.get("healthcheck") or {}).get("test", []))):
        problems.append(f"{redis_name}: no healthcheck with redis-cli ping")
    if redis_service.get("ports"):
        problems.append(f"{redis_name}: published: only the replicas need it")

    configs, advertised, shared = {}, {}, {}
    for name, service in replicas.items():
        problems += [f"{name}: {p}" for p in builds_the_image(service)]
        env = environment(service)
        env_problems, config = service_config(service, image, binary)
        problems += [f"{name}: {p}" for p in env_problems]
        problems += hardening_problems(name, service, config)
        if not config:
            continue
        configs[name] = config
        problems += [f"{name}: {p}" for p in serving_problems(config)]
        problems += published_problems(name, service, config)
        url = urlsplit(env.get("RENDEZVOUS_REDIS_URL", ""))
        if not is_set(config, "redis-url") or url.scheme != "redis" or url.hostname != redis_name \
                or (url.port or 6379) != 6379:
            problems.append(f"{name}: RENDEZVOUS_REDIS_URL is not redis://{redis_name}:6379/…")
        depends = service.get("depends_on") or {}
        if redis_name not in depends:
            problems.append(f"{name}: does not depend on {redis_name}")
        listen_port = (effective(config, "listen") or "127.0.0.1:8080").rsplit(":", 1)[1]
        advertise = urlsplit(effective(config, "advertise-url") or "")
        if advertise.scheme != "http" or advertise.hostname != name or str(advertise.port) != listen_port:
            problems.append(f"{name}: advertise-url {advertise.geturl()}, want http://{name}:{listen_port}")
        advertised[name] = advertise.geturl()
        shared.setdefault("redis-url", {})[name] = env.get("RENDEZVOUS_REDIS_URL")
        # The files every replica must share: each one's secret file.
        for key in ("cluster-key-file", "state-key-file", "host-token-file", "token-key-file"):
            value = effective(config, key)
            if key in ("cluster-key-file", "state-key-file") and not value:
                problems.append(f"{name}: no --{key}")
            elif value and secret_file(doc, service, value) is None:
                problems.append(f"{name}: --{key} {value} is no secret file of the service")
            shared.setdefault(key, {})[name] = secret_file(doc, service, value)
    if len(set(advertised.values())) != len(advertised):
        problems.append(f"the replicas advertise the same URL: {advertised}")
    for key, values in shared.items():
        if len(set(values.values())) > 1:
            problems.append(f"the replicas' --{key} differ: {values}")
    # Everything else alike: the configurations differ only in advertise-url.
    alike = {name: re.sub(r"^advertise-url = .*$", "", c, flags=re.M) for name, c in configs.items()}
    if len(set(alike.values())) > 1:
        problems.append("the replicas' configurations differ beyond advertise-url")

    (proxy_name, proxy), = proxies.items()
    mounts = [v.split(":") for v in proxy.get("volumes", []) if isinstance(v, str)]
    if not any((COMPOSE.parent / src).resolve() == CADDYFILE and dst == CADDY_CONFIG for src, dst, *_ in mounts):
        problems.append(f"{proxy_name}: does not mount ./Caddyfile on {CADDY_CONFIG}")
    ports = [str(p) for p in proxy.get("ports", [])]
    if ports != ["127.0.0.1:8080:8080"]:
        problems.append(f"{proxy_name}: ports {ports}, want 127.0.0.1:8080:8080 (loopback, for the TLS proxy)")
    if set(replicas) - set(proxy.get("depends_on") or []):
        problems.append(f"{proxy_name}: does not depend on every replica")
    listen_ports = {n: (effective(c, "listen") or "127.0.0.1:8080").rsplit(":", 1)[1] for n, c in configs.items()}
    problems += caddyfile_problems(caddyfile, caddy, {f"{n}:{p}" for n, p in listen_ports.items()},
                                   ports[0].rsplit(":", 1)[1] if ports else "8080")
    return problems


def caddyfile_problems(text: str, caddy: str | None, upstreams: set[str], port: str) -> list[str]:
    """The proxy's Caddyfile, adapted and provisioned by Caddy: the replicas as h2c upstreams, sticky, probed."""
    if caddy is None:
        return ["no caddy 2.7 or later to adapt the Caddyfile"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "Caddyfile"
        path.write_text(text)
        result = run([caddy, "adapt", "--config", str(path), "--adapter", "caddyfile", "--validate"])
    if result.returncode != 0:
        return [f"caddy adapt: {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else result.returncode}"]
    servers = json.loads(result.stdout).get("apps", {}).get("http", {}).get("servers", {})
    server = next((s for s in servers.values() if f":{port}" in s.get("listen", [])), None)
    if server is None:
        return [f"Caddyfile: no server on :{port}, the proxy's published port"]
    problems = []
    if "h2c" not in server.get("protocols", []):
        problems.append("Caddyfile: no h2c: the TLS proxy's gRPC (h2c) would not pass")
    proxies = [h for route in server.get("routes", []) for h in route.get("handle", [])
               if h.get("handler") == "reverse_proxy"]
    if len(proxies) != 1:
        return problems + [f"Caddyfile: {len(proxies)} reverse_proxy handlers, want 1"]
    handler = proxies[0]
    dials = {u.get("dial") for u in handler.get("upstreams", [])}
    if dials != upstreams:
        problems.append(f"Caddyfile: upstreams {sorted(dials)}, want the replicas {sorted(upstreams)}")
    if "h2c" not in handler.get("transport", {}).get("versions", []):
        problems.append("Caddyfile: the replicas are not reached over h2c")
    policy = handler.get("load_balancing", {}).get("selection_policy", {}).get("policy", "random")
    if policy not in STICKY_POLICIES:
        problems.append(f"Caddyfile: lb_policy {policy} spreads one client over the replicas")
    if policy == "client_ip_hash" and not server.get("trusted_proxies"):
        problems.append("Caddyfile: client_ip_hash without trusted_proxies hashes the TLS proxy's address")
    if handler.get("health_checks", {}).get("active", {}).get("uri") != "/readyz":
        problems.append("Caddyfile: no active health check of /readyz")
    if handler.get("flush_interval") != -1:
        problems.append("Caddyfile: gRPC-Web messages are buffered (want flush_interval -1)")
    return problems


def check_compose(binary: Path, missing: dict[str, str]) -> None:
    name = "compose: docker-compose.yml parses, builds deploy/docker/Dockerfile, env passes --print-config"
    if "yaml" in missing:
        report(name, [missing["yaml"]])
        report(f"compose: profile {PROFILE}", [missing["yaml"]])
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

    caddy = caddy_path()
    caddyfile = CADDYFILE.read_text() if CADDYFILE.exists() else ""
    problems = replicas_problems(doc, image, binary, caddyfile, caddy)
    for what, broken, broken_caddyfile in replicas_breakages(doc, caddyfile):
        problems += must_reject(replicas_problems(broken, image, binary, broken_caddyfile, caddy), what)
    report(f"compose: profile {PROFILE}: Redis, replicas sharing keys with their own advertise URLs, "
           "Caddy in front (caddy adapt)", problems,
           f"{', '.join(n for n, s in (doc.get('services') or {}).items() if in_profile(s))}; "
           f"caddy {run([caddy, 'version']).stdout.split()[0] if caddy else 'missing'}")


def replicas_breakages(doc: dict, caddyfile: str) -> list[tuple[str, dict, str]]:
    """Broken copies of the replicas profile (compose file, Caddyfile), each of which the check must refuse."""
    services = doc.get("services") or {}
    names = [n for n, s in services.items() if in_profile(s) and s.get("image") == services["rendezvous"].get("image")]
    if len(names) < 2:
        return []
    first, second = names[0], names[1]
    out = []

    def variant(what: str, change, text: str = caddyfile) -> None:
        broken = copy.deepcopy(doc)
        change(broken["services"], broken)
        out.append((what, broken, text))

    def env(s: dict) -> dict:
        s["environment"] = environment(s)
        return s["environment"]

    variant("two replicas with one advertise URL", lambda s, d: env(s[second]).update(
        RENDEZVOUS_ADVERTISE_URL=env(s[first])["RENDEZVOUS_ADVERTISE_URL"]))

    def own_cluster_key(s: dict, d: dict) -> None:
        d["secrets"]["cluster-key-2"] = {"file": "./cluster-key-2"}
        s[second]["secrets"] = [x for x in s[second]["secrets"] if x != "cluster-key"] + ["cluster-key-2"]
        env(s[second])["RENDEZVOUS_CLUSTER_KEY_FILE"] = "/run/secrets/cluster-key-2"
    variant("a replica with a cluster key of its own", own_cluster_key)
    variant("a state key in the replica's own volume", lambda s, d: env(s[second]).update(
        RENDEZVOUS_STATE_KEY_FILE="/var/lib/rendezvous/state.key"))
    variant("a Redis URL on localhost", lambda s, d: env(s[first]).update(
        RENDEZVOUS_REDIS_URL="redis://localhost:6379/0"))
    variant("a writable replica", lambda s, d: s[second].update(read_only=False))
    variant("a replica with a 10s grace", lambda s, d: s[second].update(stop_grace_period="10s"))
    variant("a Redis with snapshots", lambda s, d: [s[n].update(command=["redis-server"]) for n in s
                                                      if str(s[n].get("image", "")).startswith("redis:")])
    variant("a Caddyfile without the second replica", lambda s, d: None,
            re.sub(rf"\s+h2c://{re.escape(second)}:\d+", "", caddyfile))
    variant("a Caddyfile with lb_policy random", lambda s, d: None,
            re.sub(r"lb_policy \S+", "lb_policy random", caddyfile))
    variant("a Caddyfile without h2c from the TLS proxy", lambda s, d: None,
            re.sub(r"protocols h1 h2c", "protocols h1", caddyfile))
    variant("a Caddyfile that is not one", lambda s, d: None, caddyfile.replace("reverse_proxy", "reverse_proxi"))
    return out
