"""The deployment artefacts stay true to the code.

The Dockerfile's targets run modules that exist and copy files that exist; every kustomize
overlay renders, passes the Kubernetes schemas of 1.29 and of the newest release
kubernetes-validate bundles (strict), and keeps the policies of issue 6: probes on real routes,
hardened pods, safe rollouts, a gateway that drains, least-privilege network rules, settings
the services accept, and alerts on metrics the services export.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from services.broadcast_gateway.settings import GatewaySettings
from services.persister.settings import PersisterSettings
from services.score_api import service as api_service
from services.score_api.settings import DEV_JWT_SECRET, MIN_PRODUCTION_SECRET, ApiSettings
from shared import health

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
MONITORING = K8S / "components" / "monitoring"
NAMESPACE = "leaderboard"
PART_OF = {"app.kubernetes.io/part-of": "leaderboard"}

# Image target -> the module its CMD must run, and that module's settings class.
TARGETS = {
    "score-api": "services.score_api",
    "broadcast-gateway": "services.broadcast_gateway",
    "persister": "services.persister",
}
SETTINGS: dict[str, type[BaseSettings]] = {
    "services.score_api": ApiSettings,
    "services.broadcast_gateway": GatewaySettings,
    "services.persister": PersisterSettings,
}
# Which setting is the listening port and address of each service.
LISTENER = {
    "services.score_api": ("api_host", "api_port"),
    "services.broadcast_gateway": ("gateway_host", "gateway_port"),
    "services.persister": ("persister_metrics_host", "persister_metrics_port"),
}
# Environment the interpreter reads (set by the Dockerfile), not the services' settings.
PYTHON_ENV = {"PATH", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}
# Values standing in for the Secret in the settings test; the secret is long enough for production.
TEST_SECRETS = {
    "REDIS_URL": "redis://redis.test:6379/0",
    "DATABASE_URL": "postgresql://leaderboard@postgres.test:5432/leaderboard",
    "JWT_SECRET": "t" * (MIN_PRODUCTION_SECRET + 8),
}
MONITORING_API = "monitoring.coreos.com/v1"
CRD_KINDS = {(MONITORING_API, "PrometheusRule"), (MONITORING_API, "PodMonitor")}
ALERT_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
REDIS_PORT, POSTGRES_PORT, DNS_PORT = 6379, 5432, 53
INGRESS_NAMESPACE = "ingress-nginx"
MONITORING_NAMESPACE = "monitoring"
WEBSOCKET_TIMEOUT = 3600
PRIVATE_PATHS = ("/healthz", "/readyz", "/metrics")
SOURCE_SUFFIXES = {".py", ".lua", ".sql", ".html", ".js", ".css"}


# The Dockerfile


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Image:
    """What one build target ends up with, following its FROM chain."""

    cmd: list[str]
    user: str
    env: dict[str, str]
    expose: list[int]
    copies: list[tuple[list[str], str]]  # (sources, destination) from the build context
    runs: list[str]


def parse_dockerfile(text: str) -> list[Stage]:
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        op, _, rest = line.partition(" ")
        op = op.upper()
        rest = rest.strip()
        if op == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif op == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            stages.append(Stage(name, base))
        else:
            assert stages, f"{op} before the first FROM"
            stages[-1].instructions.append((op, rest))
    return stages


def env_pairs(rest: str) -> dict[str, str]:
    return dict(word.split("=", 1) for word in shlex.split(rest))


def stage_chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and its FROM ancestors, base first."""
    chain: list[Stage] = []
    while name in stages:
        chain.insert(0, stages[name])
        name = stages[name].base
    return chain


def image_for(target: str) -> Image:
    stages = {s.name: s for s in parse_dockerfile((ROOT / "Dockerfile").read_text())}
    chain = stage_chain(stages, target)
    assert chain, f"no stage {target!r} in the Dockerfile"
    image = Image(cmd=[], user="", env={}, expose=[], copies=[], runs=[])
    feeding: list[Stage] = []  # stages this image copies from (COPY --from): their COPY/RUN count
    for stage in chain:
        for op, rest in stage.instructions:
            if op == "CMD":
                assert rest.startswith("["), f"{target}: CMD must be the exec (JSON) form"
                image.cmd = json.loads(rest)
            elif op == "USER":
                image.user = rest
            elif op == "ENV":
                image.env.update(env_pairs(rest))
            elif op == "EXPOSE":
                image.expose += [int(p.split("/")[0]) for p in rest.split()]
            elif op == "RUN":
                image.runs.append(rest)
            elif op in {"COPY", "ADD"}:
                assert op == "COPY", "ADD fetches and unpacks; COPY only copies"
                words = shlex.split(rest)
                source_stage = [w.split("=", 1)[1] for w in words if w.startswith("--from=")]
                if source_stage:
                    feeding += [s for s in stage_chain(stages, source_stage[0]) if s not in chain]
                    continue
                paths = [w for w in words if not w.startswith("--")]
                image.copies.append((paths[:-1], paths[-1]))
    for stage in feeding:
        for op, rest in stage.instructions:
            if op == "COPY":
                assert "--from" not in rest, "one level of COPY --from is enough here"
                paths = [w for w in shlex.split(rest) if not w.startswith("--")]
                image.copies.append((paths[:-1], paths[-1]))
            elif op == "RUN":
                image.runs.append(rest)
    return image


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*")
        rules.append((keep, re.compile(regex.replace(r"\?", "[^/]") + "$")))
    return rules


def in_build_context(relative: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = relative.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for keep, pattern in dockerignore_rules():
        if any(pattern.match(c) for c in candidates):
            included = keep
    return included


# Rendering and reading manifests


@functools.cache
def rendered_text(overlay: str) -> str:
    """``kubectl kustomize`` of one overlay; a missing kubectl fails the test, never skips it."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail(
            "kubectl is required to render deploy/k8s (kubectl kustomize); "
            "install it (make test does) and run again",
            pytrace=False,
        )
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize overlays/{overlay} failed:\n{result.stderr}")
    return result.stdout


@functools.cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    return tuple(doc for doc in yaml.safe_load_all(rendered_text(overlay)) if doc)


def of_kind(resources: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["kind"] == kind]


def named(resources: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    found = [r for r in of_kind(resources, kind) if r["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def workloads(resources: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    """Deployments, Jobs, and each CronJob as the Job it creates (same kind and name)."""
    scheduled = [
        {"kind": "CronJob", "metadata": c["metadata"], "spec": c["spec"]["jobTemplate"]["spec"]}
        for c in of_kind(resources, "CronJob")
    ]
    return of_kind(resources, "Deployment") + of_kind(resources, "Job") + scheduled


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"unsupported selector {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def containers(overlay: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for workload in workloads(render(overlay)):
        for container in pod_spec(workload)["containers"]:
            yield workload, container


def target_of(container: dict[str, Any]) -> str:
    """The Dockerfile target an image was built from: the last path part of its name."""
    repository = container["image"].rsplit(":", 1)[0] if "@" not in container["image"] else ""
    target = repository.rsplit("/", 1)[-1].removeprefix("leaderboard-")
    assert target in TARGETS, f"image {container['image']} is none of {sorted(TARGETS)}"
    return target


def command_of(container: dict[str, Any]) -> list[str]:
    command: list[str] = container.get("command") or image_for(target_of(container)).cmd
    return command + list(container.get("args", []))


def module_of(container: dict[str, Any]) -> str:
    command = command_of(container)
    if command[:2] == ["sh", "-c"]:  # a script of python -m commands (the backup CronJob)
        modules = set(re.findall(r"\bpython -m (\S+)", command[2]))
        assert len(modules) == 1, f"{container['name']}: one service per script, not {modules}"
        command = ["python", "-m", modules.pop()]
    assert command[:2] == ["python", "-m"], f"{container['name']}: {command} is not python -m"
    assert command[2] in SETTINGS, f"{container['name']}: {command[2]} is none of our services"
    return command[2]


def container_env(
    overlay: str, container: dict[str, Any], secrets: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment the container starts with: image ENV, then envFrom, then env."""
    resources = render(overlay)
    env = dict(image_for(target_of(container)).env)
    for source in container.get("envFrom", []):
        assert set(source) == {"configMapRef"}, f"only ConfigMaps in envFrom, not {source}"
        env.update(named(resources, "ConfigMap", source["configMapRef"]["name"])["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        if secrets is not None:
            env[var["name"]] = secrets[ref["key"]]
        else:
            env[var["name"]] = f"<secret {ref['name']}/{ref['key']}>"
    return env


def settings_for(module: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    cls = SETTINGS[module]
    for name in cls.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return cls()


def setting_names(module: str) -> set[str]:
    return {name.upper() for name in SETTINGS[module].model_fields}


@functools.cache
def serves(package: str, path: str) -> bool:
    """Whether the service answers ``path``: its own route, or shared.health's endpoints."""
    source = service_source(package)
    return f'"{path}"' in source or (path in health.PATHS and "from shared.health import" in source)


def service_source(package: str = "") -> str:
    """The text of the services' code (``package``: one service, e.g. ``score_api``)."""
    base = ROOT / "services" / package
    files = [p for p in sorted(base.rglob("*")) if p.suffix in SOURCE_SUFFIXES]
    return "\n".join(p.read_text() for p in files)


def config_value(overlay: str, name: str) -> set[str]:
    values = set()
    for _, container in containers(overlay):
        env = container_env(overlay, container)
        if name in env:
            values.add(env[name])
    return values


# Images


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_each_image_target_runs_its_service_as_a_non_root_user(target: str) -> None:
    image = image_for(target)
    module = TARGETS[target]
    stages = {s.name: s for s in parse_dockerfile((ROOT / "Dockerfile").read_text())}
    base = stage_chain(stages, target)[0].base
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", base), f"{target} starts from {base}"
    assert image.cmd == ["python", "-m", module]
    assert (ROOT / module.replace(".", "/") / "__main__.py").is_file()
    assert image.user, f"{target}: no USER, so it runs as root"
    uid = image.user.split(":")[0]
    assert uid.isdigit(), "a numeric USER lets Kubernetes verify runAsNonRoot"
    assert int(uid) != 0
    assert image.env.get("PYTHONDONTWRITEBYTECODE") == "1", "the root filesystem is read-only"
    assert image.env.get("PYTHONUNBUFFERED") == "1"
    host_field, port_field = LISTENER[module]
    assert image.env[host_field.upper()] == "0.0.0.0"
    assert image.expose == [int(image.env[port_field.upper()])]
    assert set(image.env) <= PYTHON_ENV | setting_names(module), "unknown ENV names"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_image_copies_existing_files_that_the_build_context_keeps(target: str) -> None:
    copies = image_for(target).copies
    sources = {source.rstrip("/") for sources, _ in copies for source in sources}
    assert sources == {"requirements.lock", "services", "shared"}
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: not in the tree"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            if "__pycache__" in relative:
                continue
            assert in_build_context(relative), f"{relative} is copied but .dockerignore drops it"


def test_image_installs_the_runtime_lock_with_hashes() -> None:
    image = image_for("score-api")
    lock_destination = next(dest for srcs, dest in image.copies if srcs == ["requirements.lock"])
    installs = [run for run in image.runs if "pip install" in run]
    assert installs, "no pip install in the Dockerfile"
    for run in installs:
        assert "--require-hashes" in run
        assert f"-r {lock_destination}" in run
    lock = (ROOT / "requirements.lock").read_text()
    requirements = re.split(r"^(?=[A-Za-z0-9_.-]+==)", lock, flags=re.M)[1:]
    assert requirements
    for requirement in requirements:
        assert "--hash=sha256:" in requirement, f"no hash for {requirement.split()[0]}"
    assert not re.search(r"^(pytest|mypy|ruff|hypothesis)==", lock, flags=re.M), "dev tools"


def test_build_context_leaves_out_development_files_and_secrets() -> None:
    for path in (".venv/bin/python", ".dev/redis/dump.rdb", "tests/test_deploy.py", ".git/HEAD"):
        assert not in_build_context(path), f"{path} would be sent to the image build"
    for path in ("devstack/run.py", ".mypy_cache/x", "services/__pycache__/x.pyc", "README.md"):
        assert not in_build_context(path), f"{path} would be sent to the image build"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert DEV_JWT_SECRET not in dockerfile
    assert "JWT_SECRET" not in dockerfile


# Schemas


def check_prometheus_rule(rule: dict[str, Any]) -> None:
    assert set(rule) <= {"apiVersion", "kind", "metadata", "spec"}
    assert rule["metadata"]["name"]
    assert set(rule["spec"]) == {"groups"}
    groups = rule["spec"]["groups"]
    assert groups
    for group in groups:
        assert set(group) <= {"name", "interval", "rules"}, group.keys()
        assert group["name"]
        assert group["rules"]
        for alert in group["rules"]:
            where = f"{group['name']}/{alert.get('alert')}"
            assert set(alert) <= ALERT_KEYS, where
            assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", alert["alert"]), where
            assert isinstance(alert["expr"], str)
            assert alert["expr"].strip(), where
            assert re.fullmatch(r"\d+[smh]", alert["for"]), where
            assert alert["labels"]["severity"] in {"warning", "critical"}, where
            assert alert["annotations"]["summary"], where
            assert alert["annotations"]["description"], where


def check_pod_monitor(monitor: dict[str, Any], resources: tuple[dict[str, Any], ...]) -> None:
    assert set(monitor) <= {"apiVersion", "kind", "metadata", "spec"}
    assert set(monitor["spec"]) <= {"selector", "podMetricsEndpoints", "namespaceSelector"}
    pods = [w for w in workloads(resources) if selects(monitor["spec"]["selector"], pod_labels(w))]
    assert pods, "the PodMonitor selects no pod"
    ports = {
        port["name"]
        for workload in pods
        for container in pod_spec(workload)["containers"]
        for port in container.get("ports", [])
    }
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}
        assert endpoint["port"] in ports, f"no selected pod has a port {endpoint['port']}"
        assert f'"{endpoint["path"]}"' in service_source()


def kubernetes_versions() -> list[str]:
    return ["1.29.0", str(kubernetes_validate.latest_version())]


@pytest.mark.parametrize("version", kubernetes_versions())
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_the_kubernetes_schemas_strictly(overlay: str, version: str) -> None:
    resources = render(overlay)
    assert resources
    for resource in resources:
        kind = (resource["apiVersion"], resource["kind"])
        where = f"{resource['kind']}/{resource['metadata']['name']}"
        try:
            checked = kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            # kubernetes-validate only warns about kinds it has no schema for (exit status 0):
            # the custom resources we ship are checked here instead, anything else fails.
            assert kind in CRD_KINDS, f"{where}: no schema for {kind} in Kubernetes {version}"
            if resource["kind"] == "PrometheusRule":
                check_prometheus_rule(resource)
            else:
                check_pod_monitor(resource, resources)
            continue
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{overlay}: {where} invalid for {version} at {path}: {exc.message}")
        assert checked == version.rsplit(".", 1)[0], f"validated against {checked}, not {version}"


def test_schema_validation_rejects_unknown_fields_and_reports_unknown_kinds() -> None:
    deployment = next(r for r in render(OVERLAYS[0]) if r["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.29.0", strict=True)
    garbage = {"apiVersion": "example.com/v1", "kind": "Garbage", "metadata": {"name": "x"}}
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(garbage, "1.29.0", strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_resource_lives_in_the_namespace_and_carries_the_app_label(overlay: str) -> None:
    for resource in render(overlay):
        metadata = resource["metadata"]
        where = f"{resource['kind']}/{metadata['name']}"
        if resource["kind"] != "Namespace":
            assert metadata.get("namespace") == NAMESPACE, where
        assert PART_OF.items() <= metadata.get("labels", {}).items(), where
    for workload in workloads(render(overlay)):
        assert PART_OF.items() <= pod_labels(workload).items()


# Workloads


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_hardened_and_sized(overlay: str) -> None:
    for workload, container in containers(overlay):
        where = f"{overlay}: {workload['kind']}/{workload['metadata']['name']}"
        pod = pod_spec(workload)
        pod_security = pod.get("securityContext", {})
        security = container.get("securityContext", {})
        assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True, where
        assert security.get("runAsUser", pod_security.get("runAsUser", 1)) != 0, where
        assert security.get("readOnlyRootFilesystem") is True, where
        assert security.get("allowPrivilegeEscalation") is False, where
        assert security.get("capabilities", {}).get("drop") == ["ALL"], where
        assert "add" not in security.get("capabilities", {}), where
        assert pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert pod.get("automountServiceAccountToken") is False, where
        assert pod.get("serviceAccountName"), where
        named(render(overlay), "ServiceAccount", pod["serviceAccountName"])
        for kind in ("requests", "limits"):
            assert set(container.get("resources", {}).get(kind, {})) == {"cpu", "memory"}, where
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        assert tmp, f"{where}: /tmp must be writable (emptyDir)"
        assert "emptyDir" in volumes[tmp[0]["name"]], where
        image = container["image"]
        assert ":" in image.rsplit("/", 1)[-1] or "@" in image, f"{where}: untagged {image}"
        assert not image.endswith(":latest"), f"{where}: {image}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployments_probe_real_routes_on_named_ports_and_roll_out_safely(overlay: str) -> None:
    for deployment in of_kind(render(overlay), "Deployment"):
        where = f"{overlay}: Deployment/{deployment['metadata']['name']}"
        spec = deployment["spec"]
        assert spec["strategy"]["type"] == "RollingUpdate", where
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, where
        assert spec.get("minReadySeconds", 0) > 0, where
        assert selects(spec["selector"], pod_labels(deployment)), where
        spread = pod_spec(deployment).get("topologySpreadConstraints", [])
        assert {c["topologyKey"] for c in spread} >= {"topology.kubernetes.io/zone"}, where
        for constraint in spread:
            assert selects(constraint["labelSelector"], pod_labels(deployment)), where
        for container in pod_spec(deployment)["containers"]:
            package = module_of(container).split(".")[1]
            ports = {p["name"] for p in container.get("ports", [])}
            for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                assert probe in container, f"{where}: no {probe}"
                check = container[probe]["httpGet"]
                assert check["path"] == path, f"{where}: {probe} must ask {path}"
                assert check["port"] in ports, f"{where}: {probe} on unnamed/unknown port"
                assert serves(package, path), f"{package} serves no {path}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_containers_listen_on_all_interfaces_at_their_declared_ports(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for workload, container in containers(overlay):
        if workload["kind"] != "Deployment":
            continue
        module = module_of(container)
        env = container_env(overlay, container, TEST_SECRETS)
        settings = settings_for(module, env, monkeypatch)
        host_field, port_field = LISTENER[module]
        assert getattr(settings, host_field) == "0.0.0.0"
        assert [p["containerPort"] for p in container["ports"]] == [getattr(settings, port_field)]


def shutdown_seconds(module: str, settings: Any) -> float:
    """How long each service may take after SIGTERM, as the code and its settings say."""
    if module == "services.score_api":
        # running() hands this to uvicorn as timeout_graceful_shutdown.
        service = (ROOT / "services" / "score_api" / "service.py").read_text()
        assert "timeout_graceful_shutdown=SHUTDOWN_SECONDS" in service
        return float(api_service.SHUTDOWN_SECONDS)
    if module == "services.broadcast_gateway":
        return float(settings.gateway_shutdown_seconds)
    return float(settings.persister_shutdown_seconds)


def pre_stop_seconds(container: dict[str, Any]) -> float:
    pre_stop = container.get("lifecycle", {}).get("preStop")
    if not pre_stop:
        return 0.0
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep", f"unexpected preStop {command}"
    return float(command[1])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_get_time_to_finish_and_the_gateway_drains_its_connections(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for deployment in of_kind(render(overlay), "Deployment"):
        grace = pod_spec(deployment).get("terminationGracePeriodSeconds", 30)
        for container in pod_spec(deployment)["containers"]:
            module = module_of(container)
            env = container_env(overlay, container, TEST_SECRETS)
            settings = settings_for(module, env, monkeypatch)
            needed = pre_stop_seconds(container) + shutdown_seconds(module, settings)
            assert grace > needed, f"{container['name']}: {grace}s grace < {needed}s needed"
            if module == "services.broadcast_gateway":
                # The pause lets the endpoint leave the Ingress before the 1012 batches start.
                assert 5 <= pre_stop_seconds(container) <= 15
                assert grace >= needed + 5, "no margin for the last close handshakes"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_replicated_workloads_have_autoscalers_and_disruption_budgets(overlay: str) -> None:
    resources = render(overlay)
    autoscaled = {}
    for hpa in of_kind(resources, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment"
        autoscaled[target["name"]] = hpa["spec"]["minReplicas"]
        assert hpa["spec"]["maxReplicas"] >= hpa["spec"]["minReplicas"]
    assert {"score-api", "broadcast-gateway"} <= set(autoscaled)
    budgets = of_kind(resources, "PodDisruptionBudget")
    for deployment in of_kind(resources, "Deployment"):
        name = deployment["metadata"]["name"]
        if name in autoscaled:
            assert "replicas" not in deployment["spec"], f"{name}: the HPA owns replicas"
            replicas = autoscaled[name]
        else:
            replicas = deployment["spec"].get("replicas", 1)
        covering = [b for b in budgets if selects(b["spec"]["selector"], pod_labels(deployment))]
        if replicas > 1:
            assert len(covering) == 1, f"{overlay}: {name} has {replicas} replicas and no PDB"
            assert covering[0]["spec"].get("maxUnavailable") == 1
        else:
            assert not covering, f"{overlay}: a PDB on single-replica {name} blocks node drains"


# Settings


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_configured_variable_is_a_setting_of_the_service_that_gets_it(overlay: str) -> None:
    resources = render(overlay)
    for workload, container in containers(overlay):
        module = module_of(container)
        env = container_env(overlay, container)
        unknown = set(env) - setting_names(module) - PYTHON_ENV
        assert not unknown, f"{overlay}: {workload['metadata']['name']} gets non-settings {unknown}"
    valid = set().union(*(setting_names(m) for m in SETTINGS))
    for config in of_kind(resources, "ConfigMap"):
        if config["metadata"].get("labels", {}).get("grafana_dashboard"):
            continue
        unknown = set(config["data"]) - valid
        assert not unknown, f"{config['metadata']['name']}: {unknown} are no setting"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_accept_the_rendered_settings(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for workload, container in containers(overlay):
        env = container_env(overlay, container, TEST_SECRETS)
        try:
            settings_for(module_of(container), env, monkeypatch)
        except ValidationError as exc:
            pytest.fail(f"{overlay}: {workload['metadata']['name']} refuses its settings: {exc}")


def test_production_requires_issuer_audience_and_no_development_secret() -> None:
    assert config_value("production", "ENVIRONMENT") == {"production"}
    for _, container in containers("production"):
        env = container_env("production", container)
        if module_of(container) == "services.score_api":
            assert env.get("JWT_ISSUER")
            assert env.get("JWT_AUDIENCE")
            assert env.get("JWT_SECRET", "").startswith("<secret "), "JWT_SECRET not from Secret"
        assert "dev" not in container["image"].rsplit(":", 1)[-1]
    for overlay in OVERLAYS:
        assert DEV_JWT_SECRET not in rendered_text(overlay)
        assert not of_kind(render(overlay), "Secret"), "secrets are created outside git"
    for path in K8S.rglob("*"):
        if path.is_file():
            assert DEV_JWT_SECRET not in path.read_text(), path


def test_secret_template_covers_every_reference_and_cannot_go_live_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    template = yaml.safe_load((K8S / "base" / "secret.template.yaml").read_text())
    kubernetes_validate.validate(template, "1.29.0", strict=True)
    keys = set(template["stringData"])
    for overlay in OVERLAYS:
        for _, container in containers(overlay):
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == template["metadata"]["name"]
                    assert ref["key"] in keys
    env = {**template["stringData"], "ENVIRONMENT": "production"}
    env |= {"JWT_ISSUER": "https://issuer.test/", "JWT_AUDIENCE": "leaderboard"}
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        settings_for("services.score_api", env, monkeypatch)


# Network


def allowed_ports(policies: list[dict[str, Any]], labels: dict[str, str], way: str) -> set[Any]:
    """Ports a pod may use in one direction ("ingress"/"egress"), with the peer's namespace."""
    found: set[Any] = set()
    for policy in policies:
        if not selects(policy["spec"]["podSelector"], labels):
            continue
        for rule in policy["spec"].get(way, []):
            peers = rule.get("from" if way == "ingress" else "to", [{}])
            for peer in peers:
                namespace = (
                    peer.get("namespaceSelector", {})
                    .get("matchLabels", {})
                    .get("kubernetes.io/metadata.name", "*")
                )
                for port in rule.get("ports", [{"port": "*"}]):
                    found.add((namespace, port["port"]))
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_allow_only_what_each_pod_needs(
    overlay: str,
) -> None:
    resources = render(overlay)
    policies = of_kind(resources, "NetworkPolicy")
    assert any(
        p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in policies
    ), "no deny-all policy"
    monitored = bool(of_kind(resources, "PodMonitor"))
    needs = {
        "score-api": {REDIS_PORT},
        "broadcast-gateway": {REDIS_PORT},
        "persister": {REDIS_PORT, POSTGRES_PORT},
        "migrations": {POSTGRES_PORT},
        "backup": {POSTGRES_PORT},
    }
    public_port = {"score-api": "http", "broadcast-gateway": "ws"}
    for workload in workloads(resources):
        name = workload["metadata"]["name"]
        labels = pod_labels(workload)
        egress = allowed_ports(policies, labels, "egress")
        assert ("kube-system", DNS_PORT) in egress, f"{name}: no DNS"
        assert {port for ns, port in egress if ns == "*"} == needs[name], name
        # A named port the pod does not have opens nothing on it.
        ports = {p["name"] for c in pod_spec(workload)["containers"] for p in c.get("ports", [])}
        ingress = {(ns, port) for ns, port in allowed_ports(policies, labels, "ingress")}
        ingress = {(ns, port) for ns, port in ingress if not isinstance(port, str) or port in ports}
        expected = {(INGRESS_NAMESPACE, public_port[name])} if name in public_port else set()
        if monitored:
            expected |= {(MONITORING_NAMESPACE, port) for port in ports}
        assert ingress == expected, f"{name}: ingress {ingress}"


def ingress_route(ingresses: list[dict[str, Any]], path: str) -> tuple[str, str] | None:
    """The (service, port name) an HTTP path reaches through the Ingresses, if any."""
    best: tuple[int, tuple[str, str]] | None = None
    for ingress in ingresses:
        for rule in ingress["spec"]["rules"]:
            for entry in rule["http"]["paths"]:
                prefix = entry["path"]
                if entry["pathType"] == "Exact":
                    hit = path == prefix
                else:
                    hit = path == prefix or path.startswith(prefix.rstrip("/") + "/")
                if hit and (best is None or len(prefix) > best[0]):
                    backend = entry["backend"]["service"]
                    best = (len(prefix), (backend["name"], backend["port"]["name"]))
    return best[1] if best else None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_routes_public_paths_only_and_keeps_websockets_open(overlay: str) -> None:
    resources = render(overlay)
    ingresses = of_kind(resources, "Ingress")
    api_routes = re.findall(r'(?:Route|Mount)\("([^"]+)"', service_source("score_api"))
    gateway_path = str(GatewaySettings.model_fields["gateway_path"].default)
    assert ingress_route(ingresses, "/") == ("score-api", "http")
    assert ingress_route(ingresses, "/api/score") == ("score-api", "http")
    assert ingress_route(ingresses, "/static/app.js") == ("score-api", "http")
    assert ingress_route(ingresses, "/config.json") == ("score-api", "http")
    assert ingress_route(ingresses, gateway_path) == ("broadcast-gateway", "ws")
    for path in PRIVATE_PATHS:
        assert ingress_route(ingresses, path) is None, f"{path} is public"
    hosts = set()
    for ingress in ingresses:
        annotations = ingress["metadata"].get("annotations", {})
        for rule in ingress["spec"]["rules"]:
            hosts.add(rule["host"])
            for entry in rule["http"]["paths"]:
                backend = entry["backend"]["service"]
                service = named(resources, "Service", backend["name"])
                assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
                if backend["name"] == "score-api":
                    matches = [r for r in api_routes if r.startswith(entry["path"].rstrip("/"))]
                    assert matches, f"{entry['path']} reaches no API route"
                if backend["name"] == "broadcast-gateway":
                    for key in ("proxy-read-timeout", "proxy-send-timeout"):
                        value = annotations[f"nginx.ingress.kubernetes.io/{key}"]
                        assert int(value) >= WEBSOCKET_TIMEOUT
        assert {h for tls in ingress["spec"]["tls"] for h in tls["hosts"]} == hosts
    assert len(hosts) == 1
    (host,) = hosts
    assert config_value(overlay, "API_GATEWAY_URL") == {f"wss://{host}{gateway_path}"}
    # Behind the Ingress the peer is the controller: per-address limits need its header believed.
    for _, container in containers(overlay):
        if module_of(container) in {"services.score_api", "services.broadcast_gateway"}:
            env = container_env(overlay, container)
            trusted = [name for name in env if name.endswith("TRUSTED_PROXIES")]
            assert trusted, f"{container['name']}: no trusted proxies behind the Ingress"
            assert all(json.loads(env[name]) for name in trusted)
    assert config_value(overlay, "GATEWAY_ALLOWED_ORIGINS") == {json.dumps([f"https://{host}"])}


# Deploying


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migrations_job_can_run_before_the_services_roll_out(overlay: str) -> None:
    """README step 1 applies ``-l 'app.kubernetes.io/component notin (api,gateway,persister)'``."""
    resources = render(overlay)
    services = {"api", "gateway", "persister"}

    def first_step(resource: dict[str, Any]) -> bool:
        labels = resource["metadata"].get("labels", {})
        return labels.get("app.kubernetes.io/component") not in services

    early = tuple(r for r in resources if first_step(r))
    assert not of_kind(early, "Deployment"), "step 1 must not roll out a service"
    job = named(early, "Job", "migrations")
    (container,) = pod_spec(job)["containers"]
    assert target_of(container) == "persister"
    assert command_of(container) == ["python", "-m", "services.persister", "migrate"]
    assert "migrate" in service_source("persister")
    named(early, "ServiceAccount", pod_spec(job)["serviceAccountName"])
    named(early, "Namespace", NAMESPACE)
    for source in container.get("envFrom", []):
        named(early, "ConfigMap", source["configMapRef"]["name"])
    egress = allowed_ports(of_kind(early, "NetworkPolicy"), pod_labels(job), "egress")
    assert ("*", POSTGRES_PORT) in egress
    assert job["spec"].get("ttlSecondsAfterFinished"), "a finished Job blocks the next release"


# Monitoring


def metric_names(expr: str) -> set[str]:
    """Series names in a PromQL expression (functions, keywords and labels removed)."""
    text = re.sub(r'"[^"]*"', " ", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    keywords = {"and", "or", "unless", "bool", "offset"}
    names = set()
    for match in re.finditer(r"\b[A-Za-z_:][A-Za-z0-9_:]*\b(\s*\()?", text):
        word = match.group(0).rstrip("( \n")
        if not match.group(1) and word not in keywords:
            names.add(word)
    return names


def label_matchers(expr: str) -> list[tuple[str, str, str]]:
    return re.findall(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)"', expr)


def monitoring_expressions() -> list[tuple[str, str]]:
    rule = yaml.safe_load((MONITORING / "prometheus-rule.yaml").read_text())
    exprs = [(r["alert"], r["expr"]) for g in rule["spec"]["groups"] for r in g["rules"]]
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    exprs += [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
    return exprs


def test_alerts_and_dashboard_query_metrics_the_services_export() -> None:
    source = service_source()
    for where, expr in monitoring_expressions():
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        for name in names:
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            assert base.startswith(("score_api_", "gateway_", "persister_")), f"{where}: {name}"
            assert f'"{base}"' in source, f"{where}: {name} is not exported by any service"
        for label, op, value in label_matchers(expr):
            assert f'"{label}"' in source, f"{where}: no metric has a label {label!r}"
            values = value.split("|") if op in {"=~", "!~"} else [value]
            for word in values:
                if re.fullmatch(r"\w+", word) and not word.isdigit():
                    assert re.search(rf"\b{word}\b", source), f"{where}: {label}={word}?"


def test_alerts_cover_lag_dead_letters_errors_slow_clients_and_redis() -> None:
    rule = yaml.safe_load((MONITORING / "prometheus-rule.yaml").read_text())
    check_prometheus_rule(rule)
    exprs = " ".join(r["expr"] for g in rule["spec"]["groups"] for r in g["rules"])
    for needed in (
        "persister_oldest_unpersisted_age_seconds",
        "persister_dead_letters_total",
        'score_api_requests_total{status=~"5..',
        'gateway_closes_total{reason="slow"}',
        "gateway_redis_errors_total",
        'route="readyz", status="503"',
    ):
        assert needed in exprs, f"no alert on {needed}"


def test_monitoring_is_an_optional_component_that_ships_the_dashboard() -> None:
    component = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    assert component["kind"] == "Component"
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert "components" not in base
    resources = render("production")
    (dashboard,) = [
        c
        for c in of_kind(resources, "ConfigMap")
        if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]
    (body,) = dashboard["data"].values()
    titles = {p["title"] for p in json.loads(body)["panels"]}
    for needed in ("Score updates", "API 5xx rate", "API p99 latency", "Persister lag"):
        assert needed in titles
    assert {"Gateway connections", "Gateway closes"} <= titles
