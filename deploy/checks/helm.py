"""The Helm chart, rendered by Helm's Go SDK: lint, templates of value sets, refused values."""

from __future__ import annotations

import copy
from pathlib import Path

from .common import (CHART, DOCKERFILE, must_reject, print_config, report, serving_problems,
                     shutdown_timeout)
from .docker import image_defaults


def empty_values(node, path: str = "") -> list[str]:
    """Paths whose value is null or an empty string."""
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in empty_values(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in empty_values(v, f"{path}[{i}]")]
    return [path or "."] if node is None or node == "" else []


def manifest_problems(docs: list[dict], want_kinds: list[str], binary: Path,
                      base_env: dict[str, str]) -> list[str]:
    """One rendering: kinds, no empty values, and a Deployment that runs.

    The container's env is laid over the image's ENV (BASE_ENV), as at run
    time, and its args replace the image's CMD.
    """
    problems = []
    kinds = sorted(d.get("kind", "?") for d in docs)
    if kinds != sorted(want_kinds):
        problems.append(f"kinds {kinds}, want {sorted(want_kinds)}")
    for doc in docs:
        problems += [f"{doc.get('kind')} {p} is empty" for p in empty_values(doc)]
    deployments = [d for d in docs if d.get("kind") == "Deployment"]
    if not deployments:
        return problems + ["no Deployment"]
    spec = deployments[0]["spec"]["template"]["spec"]
    container = spec["containers"][0]
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        got = container.get(probe, {}).get("httpGet", {}).get("path")
        if got != path:
            problems.append(f"{probe} is {got}, want {path}")
    pod = spec.get("securityContext", {})
    ctx = container.get("securityContext", {})
    if not pod.get("runAsNonRoot") or not pod.get("runAsUser"):
        problems.append("the pod may run as root")
    if not ctx.get("readOnlyRootFilesystem"):
        problems.append("the root filesystem is writable")
    if ctx.get("allowPrivilegeEscalation") is not False:
        problems.append("privilege escalation is allowed")
    if ctx.get("capabilities", {}).get("drop") != ["ALL"]:
        problems.append("capabilities are not all dropped")
    if deployments[0]["spec"].get("replicas") != 1:
        problems.append("replicas is not 1")
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    env_problems, config = print_config(binary, container.get("args", []), {**base_env, **env})
    problems += [f"env/args: {p}" for p in env_problems]
    if config:
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if grace <= shutdown_timeout(config):
            problems.append(f"terminationGracePeriodSeconds {grace} is not above --shutdown-timeout")
        problems += serving_problems(config)
    mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
    for name, value in env.items():
        if name.endswith(("_FILE", "_CERT", "_KEY")) and str(Path(value).parent) not in mounts:
            problems.append(f"{name}={value} is on no mounted volume")
    return problems


# Value sets the chart renders, the kinds each gives, and the env names or
# args its Deployment must have.
HELM_CASES = [
    ("host tokens, metrics, ServiceMonitor",
     {"admission": {"hostTokens": "ci-runners 0123456789abcdef0123456789abcdef\n"},
      "publicUrl": "https://rendezvous.example.com",
      "metrics": {"enabled": True, "serviceMonitor": {"enabled": True}},
      "config": {"max-hosts": 100, "max-retained-output-bytes": 2147483648, "session-idle-timeout": "1h"}},
     ["Deployment", "Secret", "Service", "Service", "ServiceMonitor"],
     ["RENDEZVOUS_HOST_TOKEN_FILE", "RENDEZVOUS_METRICS_LISTEN", "RENDEZVOUS_MAX_HOSTS", "--insecure"]),
    ("OIDC, TLS, existing secret with a token key",
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
    ("open registration, own keys",
     {"admission": {"mode": "open"},
      "secrets": {"stateKey": "s" * 44, "tokenKey": "t" * 44}},
     ["Deployment", "Secret", "Service"],
     ["RENDEZVOUS_ALLOW_OPEN_REGISTRATION", "RENDEZVOUS_TOKEN_KEY_FILE"]),
]

# Value sets the chart must refuse to render, and a word of the refusal.
HELM_REFUSED = [
    ("the defaults (no admission given)", {}, "admission.hostTokens"),
    ("two replicas", {"replicaCount": 2, "admission": {"mode": "open"}}, "Redis"),
    ("a short state key", {"admission": {"mode": "open"}, "secrets": {"stateKey": "short"}}, "32 bytes"),
    ("oidc without an audience", {"admission": {"mode": "oidc", "oidc": {"issuers": ["https://gitlab.com"]}}},
     "audience"),
    ("a ServiceMonitor without metrics",
     {"admission": {"mode": "open"}, "metrics": {"serviceMonitor": {"enabled": True}}}, "metrics.enabled"),
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
    lint = helm.lint(str(CHART), HELM_CASES[0][1], strict=True)
    problems = [f"lint: {m['path']}: {m['error']}" for m in lint.get("messages", []) if m.get("severity", 0) >= 2]
    problems += [f"lint: {e}" for e in lint.get("errors", [])]
    report("helm: helm lint --strict deploy/helm/rendezvous", problems, version)

    with helm.Chart.load(str(CHART)) as chart:
        for case, values, kinds, env_names in HELM_CASES:
            try:
                rendered = chart.render(values, name="rv", namespace="ci")
            except helm.HelmError as e:
                report(f"helm: template, {case}", [str(e)])
                continue
            notes = rendered.pop("rendezvous/templates/NOTES.txt", "")
            docs = [d for text in rendered.values() for d in yaml.safe_load_all(text) if d]
            problems = manifest_problems(docs, kinds, binary, base_env)
            containers = [d["spec"]["template"]["spec"]["containers"][0] for d in docs if d["kind"] == "Deployment"]
            seen = {e["name"] for c in containers for e in c.get("env", [])}
            seen |= {a for c in containers for a in c.get("args", [])}
            problems += [f"no {n}" for n in env_names if n not in seen]
            if "terminationGracePeriodSeconds" not in notes:
                problems.append("NOTES.txt does not say the stop timing")
            broken = copy.deepcopy(docs)
            for d in broken:
                if d["kind"] == "Deployment":
                    c = d["spec"]["template"]["spec"]["containers"][0]
                    c.pop("readinessProbe")
                    c["env"].append({"name": "RENDEZVOUS_MAX_HOST", "value": "1"})
            problems += must_reject(manifest_problems(broken, kinds, binary, base_env),
                                    "a Deployment without readiness")
            report(f"helm: template, {case}", problems, ", ".join(kinds))

        problems = []
        for case, values, word in HELM_REFUSED:
            try:
                chart.render(values, name="rv", namespace="ci")
                problems.append(f"rendered {case}")
            except helm.HelmError as e:
                if word not in str(e):
                    problems.append(f"{case}: refused for another reason: {e}")
        report("helm: template refuses bad values", problems, "; ".join(c for c, _, _ in HELM_REFUSED))
