"""The Helm chart, rendered by Helm's Go SDK: lint, templates of value sets, replica mode, refused values."""

from __future__ import annotations

import base64
import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from .common import (CHART, DOCKERFILE, effective, is_set, must_reject, print_config, report,
                     serving_problems, shutdown_timeout)
from .docker import image_defaults

# What the kubelet would put in status.podIP, for the downward API.
POD_IP = "10.1.2.3"
# Values for a secretKeyRef into a Secret the chart does not make
# (redis.existingSecret), by variable.
EXTERNAL_SECRET_VALUES = {"RENDEZVOUS_REDIS_URL": "redis://:placeholder@redis.invalid:6379/0"}
# The in-chart Redis's image.
REDIS_IMAGE = "redis:7-bookworm"


@dataclass
class HelmCase:
    """A value set the chart renders, and what its rendering must hold."""
    name: str
    values: dict
    kinds: list[str]
    # Env names or args the server's container must have.
    env_names: list[str]
    replicas: int = 1
    # Replica mode's Redis: "" (off), "url" (redis.url in the chart's
    # Secret), "existing" (redis.existingSecret) or "bundled" (redis.enabled).
    redis: str = ""


def empty_values(node, path: str = "") -> list[str]:
    """Paths whose value is null or an empty string (but `redis-server --save ""`)."""
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in empty_values(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [p for i, v in enumerate(node)
                if not (v == "" and i and node[i - 1] == "--save")
                for p in empty_values(v, f"{path}[{i}]")]
    return [path or "."] if node is None or node == "" else []


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def pod_spec(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def pod_labels(deployment: dict) -> dict:
    return deployment["spec"]["template"]["metadata"].get("labels", {})


def selects(selector: dict | None, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def server_deployments(docs: list[dict]) -> list[dict]:
    """The Deployments whose pods run the rendezvous container."""
    return [d for d in of_kind(docs, "Deployment")
            if any(c.get("name") == "rendezvous" for c in pod_spec(d).get("containers", []))]


def redis_deployments(docs: list[dict]) -> list[dict]:
    return [d for d in of_kind(docs, "Deployment")
            if any(c.get("image") == REDIS_IMAGE for c in pod_spec(d).get("containers", []))]


def rendered_secrets(docs: list[dict]) -> dict[str, dict[str, str]]:
    """The rendered Secrets by name: key -> decoded value."""
    secrets = {}
    for doc in of_kind(docs, "Secret"):
        data = {k: base64.b64decode(str(v)).decode() for k, v in (doc.get("data") or {}).items()}
        data.update({k: str(v) for k, v in (doc.get("stringData") or {}).items()})
        secrets[doc["metadata"]["name"]] = data
    return secrets


def expand(value: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion: only variables defined above; $$ escapes."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)


def container_env(container: dict, secrets: dict[str, dict[str, str]]) -> tuple[dict[str, str], list[str]]:
    """The container's environment as the kubelet makes it: values expanded,
    status.podIP from the downward API, secretKeyRefs read from the rendered
    Secrets (or EXTERNAL_SECRET_VALUES for a Secret the chart does not make)."""
    env, problems = {}, []
    for item in container.get("env", []):
        name = item["name"]
        source = item.get("valueFrom")
        if "value" in item:
            env[name] = expand(str(item["value"]), env)
        elif source and source.get("fieldRef", {}).get("fieldPath") == "status.podIP":
            env[name] = POD_IP
        elif source and "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            if ref["name"] in secrets:
                if ref["key"] in secrets[ref["name"]]:
                    env[name] = secrets[ref["name"]][ref["key"]]
                else:
                    problems.append(f"{name}: Secret {ref['name']} has no key {ref['key']}")
            else:
                env[name] = EXTERNAL_SECRET_VALUES.get(name, "placeholder")
        else:
            problems.append(f"{name}: a source this check does not know: {source}")
    return env, problems


def manifest_problems(docs: list[dict], case: HelmCase, binary: Path, base_env: dict[str, str]) -> list[str]:
    """One rendering: kinds, no empty values, a Deployment that runs, replica mode.

    The container's env is laid over the image's ENV (BASE_ENV), as at run
    time, and its args replace the image's CMD.
    """
    problems = []
    kinds = sorted(d.get("kind", "?") for d in docs)
    if kinds != sorted(case.kinds):
        problems.append(f"kinds {kinds}, want {sorted(case.kinds)}")
    for doc in docs:
        problems += [f"{doc.get('kind')} {p} is empty" for p in empty_values(doc)]
    deployments = server_deployments(docs)
    if len(deployments) != 1:
        return problems + [f"{len(deployments)} Deployments of rendezvous, want 1"]
    deployment = deployments[0]
    spec = pod_spec(deployment)
    container = next(c for c in spec["containers"] if c["name"] == "rendezvous")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        got = container.get(probe, {}).get("httpGet", {}).get("path")
        if got != path:
            problems.append(f"{probe} is {got}, want {path}")
    problems += security_problems(spec, container, "the server")
    if deployment["spec"].get("replicas") != case.replicas:
        problems.append(f"replicas is {deployment['spec'].get('replicas')}, want {case.replicas}")
    secrets = rendered_secrets(docs)
    env, env_problems = container_env(container, secrets)
    problems += env_problems
    print_problems, config = print_config(binary, container.get("args", []), {**base_env, **env})
    problems += [f"env/args: {p}" for p in print_problems]
    if config:
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if grace <= shutdown_timeout(config):
            problems.append(f"terminationGracePeriodSeconds {grace} is not above --shutdown-timeout")
        problems += serving_problems(config)
    problems += key_file_problems(spec, container, env, secrets)
    seen = {e["name"] for e in container.get("env", [])} | set(container.get("args", []))
    problems += [f"no {n}" for n in case.env_names if n not in seen]
    if case.redis:
        problems += replica_problems(docs, case, deployment, container, config, secrets)
    else:
        if redis_deployments(docs):
            problems.append("a Redis without replica mode")
        if config and is_set(config, "redis-url"):
            problems.append("--redis-url without replica mode")
    return problems


def security_problems(spec: dict, container: dict, who: str) -> list[str]:
    problems = []
    pod = spec.get("securityContext", {})
    ctx = container.get("securityContext", {})
    if not pod.get("runAsNonRoot") or not pod.get("runAsUser"):
        problems.append(f"{who}: the pod may run as root")
    if not ctx.get("readOnlyRootFilesystem"):
        problems.append(f"{who}: the root filesystem is writable")
    if ctx.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{who}: privilege escalation is allowed")
    if ctx.get("capabilities", {}).get("drop") != ["ALL"]:
        problems.append(f"{who}: capabilities are not all dropped")
    return problems


def key_file_problems(spec: dict, container: dict, env: dict[str, str],
                      secrets: dict[str, dict[str, str]]) -> list[str]:
    """Every file a variable names is on a mounted volume, and in its Secret when the chart makes it."""
    problems = []
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for name, value in env.items():
        if not name.endswith(("_FILE", "_CERT", "_KEY")):
            continue
        directory = str(Path(value).parent)
        if directory not in mounts:
            problems.append(f"{name}={value} is on no mounted volume")
            continue
        secret = volumes.get(mounts[directory], {}).get("secret", {}).get("secretName")
        if secret in secrets and Path(value).name not in secrets[secret]:
            problems.append(f"{name}={value}: Secret {secret} has no key {Path(value).name}")
    return problems


def replica_problems(docs: list[dict], case: HelmCase, deployment: dict, container: dict, config: str,
                     secrets: dict[str, dict[str, str]]) -> list[str]:
    """Replica mode: Redis, advertise URL, cluster key, affinity, disruption budget, the in-chart Redis."""
    problems = []
    port = next((p["containerPort"] for p in container.get("ports", []) if p.get("name") == "http"), None)
    if config:
        if not is_set(config, "redis-url"):
            problems.append("no --redis-url")
        advertise = effective(config, "advertise-url")
        if advertise != f"http://{POD_IP}:{port}":
            problems.append(f"advertise-url is {advertise}, want http://POD_IP:{port} with status.podIP")
        for key in ("cluster-key-file", "state-key-file"):
            if not is_set(config, key):
                problems.append(f"no --{key}: the replicas need the same one")
    spec_env = {e["name"]: e for e in container.get("env", [])}
    redis_ref = spec_env.get("RENDEZVOUS_REDIS_URL", {}).get("valueFrom", {}).get("secretKeyRef")
    if not redis_ref:
        problems.append("RENDEZVOUS_REDIS_URL is not from a Secret (secretKeyRef): it may hold a password")
    want_secret = {"url": deployment["metadata"]["name"], "existing": "redis-url-secret",
                   "bundled": f"{deployment['metadata']['name']}-redis"}[case.redis]
    if redis_ref and redis_ref["name"] != want_secret:
        problems.append(f"RENDEZVOUS_REDIS_URL from Secret {redis_ref['name']}, want {want_secret}")
    # The main Service (port http), not the metrics one.
    services = [s for s in of_kind(docs, "Service")
                if selects(s["spec"].get("selector"), pod_labels(deployment))
                and any(p.get("name") == "http" for p in s["spec"].get("ports", []))]
    if not services:
        problems.append("no Service of the server's pods")
    for service in services:
        if service["spec"].get("sessionAffinity") != "ClientIP":
            problems.append(f"Service {service['metadata']['name']}: sessionAffinity is "
                            f"{service['spec'].get('sessionAffinity')}, want ClientIP")
    budgets = [b for b in of_kind(docs, "PodDisruptionBudget")
               if selects(b["spec"].get("selector", {}).get("matchLabels"), pod_labels(deployment))]
    if case.replicas > 1 and [b["spec"].get("maxUnavailable") for b in budgets] != [1]:
        problems.append("no PodDisruptionBudget with maxUnavailable 1 for the server's pods")
    if case.redis == "bundled":
        url = secrets.get(want_secret, {}).get("url", "")
        problems += bundled_redis_problems(docs, deployment, url, secrets.get(want_secret, {}))
    elif redis_deployments(docs):
        problems.append("an in-chart Redis beside an external one")
    return problems


def bundled_redis_problems(docs: list[dict], server: dict, url: str, secret: dict[str, str]) -> list[str]:
    """The in-chart Redis: no persistence, non-root, probed, behind its own Service, reached by the URL."""
    problems = []
    redis = redis_deployments(docs)
    if len(redis) != 1:
        return [f"{len(redis)} Redis Deployments, want 1"]
    deployment = redis[0]
    spec = pod_spec(deployment)
    container = next(c for c in spec["containers"] if c.get("image") == REDIS_IMAGE)
    args = container.get("command", []) + container.get("args", [])
    pairs = set(zip(args, args[1:]))
    if ("--save", "") not in pairs or ("--appendonly", "no") not in pairs:
        problems.append(f"Redis persists (args {args}): want --save \"\" --appendonly no")
    for probe in ("livenessProbe", "readinessProbe"):
        if container.get(probe, {}).get("exec", {}).get("command") != ["redis-cli", "ping"]:
            problems.append(f"Redis {probe} is not redis-cli ping")
    problems += security_problems(spec, container, "Redis")
    if deployment["spec"].get("replicas") != 1 or deployment["spec"].get("strategy", {}).get("type") != "Recreate":
        problems.append("Redis is not one pod, replaced by Recreate")
    if selects(server["spec"]["selector"]["matchLabels"], pod_labels(deployment)):
        problems.append("the server's selector selects the Redis pod")
    # The password Redis requires is the URL's.
    env = {e["name"]: e for e in container.get("env", [])}
    ref = env.get("REDIS_PASSWORD", {}).get("valueFrom", {}).get("secretKeyRef", {})
    parsed = urlsplit(url)
    if ("--requirepass", "$(REDIS_PASSWORD)") not in pairs or not ref \
            or secret.get(ref.get("key")) != parsed.password or not parsed.password:
        problems.append("the Redis URL's password is not the one Redis requires (--requirepass from the Secret)")
    redis_port = next((p["containerPort"] for p in container.get("ports", []) if p.get("name") == "redis"), None)
    services = [s for s in of_kind(docs, "Service") if selects(s["spec"].get("selector"), pod_labels(deployment))]
    if len(services) != 1:
        return problems + [f"{len(services)} Services of the Redis pod, want 1"]
    service = services[0]
    ports = service["spec"].get("ports", [])
    if not any(p.get("port") == parsed.port and p.get("targetPort") in ("redis", redis_port) for p in ports):
        problems.append(f"Redis Service {service['metadata']['name']} has no port {parsed.port} to the container")
    if parsed.hostname != service["metadata"]["name"]:
        problems.append(f"the Redis URL names {parsed.hostname}, not the Service {service['metadata']['name']}")
    policies = [p for p in of_kind(docs, "NetworkPolicy")
                if selects(p["spec"].get("podSelector", {}).get("matchLabels"), pod_labels(deployment))]
    froms = [f.get("podSelector", {}).get("matchLabels") for p in policies
             for rule in p["spec"].get("ingress", []) for f in rule.get("from", [])]
    if not froms or not all(selects(f, pod_labels(server)) for f in froms):
        problems.append("no NetworkPolicy that admits only the server's pods to Redis")
    return problems


# ------------------------------------------------------------ breakages
# Each turns a good replica-mode rendering into one the check must refuse.


def server_container(docs: list[dict]) -> dict:
    return next(c for d in server_deployments(docs) for c in pod_spec(d)["containers"] if c["name"] == "rendezvous")


def drop_env(name: str) -> Callable[[list[dict]], None]:
    def breaks(docs: list[dict]) -> None:
        c = server_container(docs)
        c["env"] = [e for e in c["env"] if e["name"] != name]
    return breaks


def pod_ip_last(docs: list[dict]) -> None:
    c = server_container(docs)
    c["env"].sort(key=lambda e: e["name"] == "POD_IP")


def plain_redis_url(docs: list[dict]) -> None:
    for e in server_container(docs)["env"]:
        if e["name"] == "RENDEZVOUS_REDIS_URL":
            e.pop("valueFrom", None)
            e["value"] = "redis://:password@redis:6379/0"


def no_affinity(docs: list[dict]) -> None:
    for s in of_kind(docs, "Service"):
        s["spec"]["sessionAffinity"] = "None"


def drop_kind(kind: str, component: str = "") -> Callable[[list[dict]], None]:
    def breaks(docs: list[dict]) -> None:
        docs[:] = [d for d in docs if not (d.get("kind") == kind and
                   d["metadata"].get("labels", {}).get("app.kubernetes.io/component", "") == component)]
    return breaks


def no_cluster_key_in_secret(docs: list[dict]) -> None:
    for s in of_kind(docs, "Secret"):
        (s.get("data") or {}).pop("cluster.key", None)


def redis_persists(docs: list[dict]) -> None:
    c = pod_spec(redis_deployments(docs)[0])["containers"][0]
    c["args"] = [a for a in c["args"] if a not in ("--save", "")]


def redis_as_root(docs: list[dict]) -> None:
    pod_spec(redis_deployments(docs)[0])["securityContext"].update(runAsNonRoot=False, runAsUser=0)


COMMON_BREAKAGES = [
    ("POD_IP not from the downward API", drop_env("POD_IP")),
    ("POD_IP defined after the advertise URL", pod_ip_last),
    ("no cluster key file", drop_env("RENDEZVOUS_CLUSTER_KEY_FILE")),
    ("the Redis URL in plain env", plain_redis_url),
    ("a Service without affinity", no_affinity),
    ("no PodDisruptionBudget", drop_kind("PodDisruptionBudget")),
]
BREAKAGES = {
    "url": COMMON_BREAKAGES + [("a Secret without cluster.key", no_cluster_key_in_secret)],
    "existing": COMMON_BREAKAGES,
    "bundled": COMMON_BREAKAGES + [
        ("a Secret without cluster.key", no_cluster_key_in_secret),
        ("no Redis Service", drop_kind("Service", "redis")),
        ("no Redis NetworkPolicy", drop_kind("NetworkPolicy", "redis")),
        ("a Redis that saves snapshots", redis_persists),
        ("a Redis that runs as root", redis_as_root),
    ],
}


def generic_breakage(docs: list[dict]) -> None:
    c = server_container(docs)
    c.pop("readinessProbe")
    c["env"].append({"name": "RENDEZVOUS_MAX_HOST", "value": "1"})


# Value sets the chart renders.
OPEN = {"mode": "open"}
HELM_CASES = [
    HelmCase("host tokens, metrics, ServiceMonitor",
             {"admission": {"hostTokens": "ci-runners 0123456789abcdef0123456789abcdef\n"},
              "publicUrl": "https://rendezvous.example.com",
              "metrics": {"enabled": True, "serviceMonitor": {"enabled": True}},
              "config": {"max-hosts": 100, "max-retained-output-bytes": 2147483648, "session-idle-timeout": "1h"}},
             ["Deployment", "Secret", "Service", "Service", "ServiceMonitor"],
             ["RENDEZVOUS_HOST_TOKEN_FILE", "RENDEZVOUS_METRICS_LISTEN", "RENDEZVOUS_MAX_HOSTS", "--insecure"]),
    HelmCase("OIDC, TLS, existing secret with a token key",
             {"admission": {"mode": "oidc",
                            "oidc": {"issuers": ["https://token.actions.githubusercontent.com", "https://gitlab.com"],
                                     "audience": "https://rendezvous.example.com",
                                     "require": ["repository_owner=acme"]}},
              "secrets": {"existingSecret": "rendezvous-keys", "existingSecretHasTokenKey": True},
              "tls": {"secretName": "rendezvous-tls"},
              "extraArgs": ["--allowed-origin", "https://ci.example.com"]},
             ["Deployment", "Service"],
             ["RENDEZVOUS_HOST_OIDC_AUDIENCE", "RENDEZVOUS_TLS_CERT", "RENDEZVOUS_TOKEN_KEY_FILE",
              "--host-oidc-issuer=https://gitlab.com"]),
    HelmCase("open registration, own keys",
             {"admission": {"mode": "open"},
              "secrets": {"stateKey": "s" * 44, "tokenKey": "t" * 44}},
             ["Deployment", "Secret", "Service"],
             ["RENDEZVOUS_ALLOW_OPEN_REGISTRATION", "RENDEZVOUS_TOKEN_KEY_FILE"]),
    HelmCase("replicas: 2 with redis.url, host tokens, token key",
             {"replicaCount": 2,
              "redis": {"url": "redis://:hunter2hunter2@redis.internal:6379/0"},
              "admission": {"hostTokens": "ci-runners 0123456789abcdef0123456789abcdef\n"},
              "secrets": {"tokenKey": "t" * 44},
              "config": {"redis-lease": "20s"}},
             ["Deployment", "PodDisruptionBudget", "Secret", "Service"],
             ["RENDEZVOUS_REDIS_URL", "RENDEZVOUS_ADVERTISE_URL", "RENDEZVOUS_CLUSTER_KEY_FILE",
              "RENDEZVOUS_STATE_KEY_FILE", "RENDEZVOUS_HOST_TOKEN_FILE", "RENDEZVOUS_TOKEN_KEY_FILE",
              "RENDEZVOUS_REDIS_LEASE"],
             replicas=2, redis="url"),
    HelmCase("replicas: 2, redis.existingSecret and secrets.existingSecret",
             {"replicaCount": 2, "admission": OPEN,
              "redis": {"existingSecret": "redis-url-secret", "existingSecretKey": "url"},
              "secrets": {"existingSecret": "rendezvous-keys"}},
             ["Deployment", "PodDisruptionBudget", "Service"],
             ["RENDEZVOUS_REDIS_URL", "RENDEZVOUS_ADVERTISE_URL", "RENDEZVOUS_CLUSTER_KEY_FILE"],
             replicas=2, redis="existing"),
    HelmCase("replicas: 3 with the in-chart Redis, own cluster key, metrics",
             {"replicaCount": 3, "admission": OPEN,
              "redis": {"enabled": True},
              "secrets": {"stateKey": "s" * 44, "clusterKey": "c" * 44},
              "metrics": {"enabled": True}},
             ["Deployment", "Deployment", "NetworkPolicy", "PodDisruptionBudget", "Secret", "Secret",
              "Service", "Service", "Service"],
             ["RENDEZVOUS_REDIS_URL", "RENDEZVOUS_ADVERTISE_URL", "RENDEZVOUS_CLUSTER_KEY_FILE", "POD_IP"],
             replicas=3, redis="bundled"),
]

# Value sets the chart must refuse to render, and a word of the refusal.
HELM_REFUSED = [
    ("the defaults (no admission given)", {}, "admission.hostTokens"),
    ("two replicas without Redis", {"replicaCount": 2, "admission": OPEN}, "needs Redis"),
    ("a short state key", {"admission": OPEN, "secrets": {"stateKey": "short"}}, "32 bytes"),
    ("a short cluster key", {"admission": OPEN, "redis": {"enabled": True}, "secrets": {"clusterKey": "short"}},
     "secrets.clusterKey must be 32 bytes"),
    ("oidc without an audience", {"admission": {"mode": "oidc", "oidc": {"issuers": ["https://gitlab.com"]}}},
     "audience"),
    ("a ServiceMonitor without metrics",
     {"admission": OPEN, "metrics": {"serviceMonitor": {"enabled": True}}}, "metrics.enabled"),
    ("two Redis at once", {"admission": OPEN, "redis": {"enabled": True, "url": "redis://redis:6379/0"}},
     "set one of"),
    ("a redis.url that is no Redis URL", {"admission": OPEN, "redis": {"url": "redis.internal:6379"}},
     "redis.url must be"),
    ("redis.url with secrets.existingSecret",
     {"admission": OPEN, "redis": {"url": "redis://redis:6379/0"}, "secrets": {"existingSecret": "keys"}},
     "redis.existingSecret"),
    ("replicas with TLS in the pod",
     {"replicaCount": 2, "admission": OPEN, "redis": {"enabled": True}, "tls": {"secretName": "tls"}},
     "tls.secretName"),
    ("an unknown session affinity", {"admission": OPEN, "service": {"sessionAffinity": "Cookie"}},
     "service.sessionAffinity"),
]


def check_helm(binary: Path, missing: dict[str, str]) -> None:
    name = "helm: lint --strict and template (Helm's Go SDK via helm-python-sdk)"
    if "helm_python" in missing or "yaml" in missing:
        report(name, [missing.get("helm_python") or missing["yaml"]])
        return
    import helm_python as helm
    import yaml

    version = f"Helm SDK {helm.helm_sdk_version()}"
    base_env, _ = image_defaults(DOCKERFILE.read_text())
    problems = []
    for case in HELM_CASES:
        lint = helm.lint(str(CHART), case.values, strict=True)
        problems += [f"lint ({case.name}): {m['path']}: {m['error']}"
                     for m in lint.get("messages", []) if m.get("severity", 0) >= 2]
        problems += [f"lint ({case.name}): {e}" for e in lint.get("errors", [])]
    report("helm: helm lint --strict deploy/helm/rendezvous", problems,
           f"{version}, {len(HELM_CASES)} value sets")

    with helm.Chart.load(str(CHART)) as chart:
        for case in HELM_CASES:
            try:
                rendered = chart.render(case.values, name="rv", namespace="ci")
            except helm.HelmError as e:
                report(f"helm: template, {case.name}", [str(e)])
                continue
            notes = rendered.pop("rendezvous/templates/NOTES.txt", "")
            docs = [d for text in rendered.values() for d in yaml.safe_load_all(text) if d]
            problems = manifest_problems(docs, case, binary, base_env)
            if "terminationGracePeriodSeconds" not in notes:
                problems.append("NOTES.txt does not say the stop timing")
            if case.redis and "Replica mode" not in notes:
                problems.append("NOTES.txt does not say replica mode")
            breakages = [("a Deployment without readiness", generic_breakage), *BREAKAGES.get(case.redis, [])]
            for what, breaks in breakages:
                broken = copy.deepcopy(docs)
                breaks(broken)
                problems += must_reject(manifest_problems(broken, case, binary, base_env), what)
            detail = ", ".join(case.kinds)
            if case.redis:
                detail += f"; {len(breakages)} broken copies refused"
            report(f"helm: template, {case.name}", problems, detail)

        problems = []
        for case, values, word in HELM_REFUSED:
            try:
                chart.render(values, name="rv", namespace="ci")
                problems.append(f"rendered {case}")
            except helm.HelmError as e:
                if word not in str(e):
                    problems.append(f"{case}: refused for another reason: {e}")
        report("helm: template refuses bad values", problems, "; ".join(c for c, _, _ in HELM_REFUSED))
