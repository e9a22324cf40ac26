"""The helm/baton chart: rendered by Helm's engine, validated against Kubernetes' schemas."""

from __future__ import annotations

import base64
import copy
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import pytest
import yaml

from scheduler.ops.config import HttpSettings, Settings, ZooKeeperSettings, load_settings
from tests.deploy.chart import CHART_DIR, NAMESPACE, RELEASE, ROOT, Rendered, render, validate

SELECTOR = {"app.kubernetes.io/name": "baton", "app.kubernetes.io/instance": RELEASE}

#: Value sets the chart must render into valid objects: the defaults and the variations an
#: operator is most likely to make.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "service-monitor": {
        "serviceMonitor": {
            "enabled": True,
            "labels": {"release": "kube-prometheus-stack"},
            "interval": "15s",
            "scrapeTimeout": "5s",
            "metricRelabelings": [{"action": "drop", "regex": "python_gc_.*"}],
        }
    },
    "existing-secret": {"backend": {"existingSecret": "redis-credentials", "secretKey": "url"}},
    "inline-url": {"backend": {"url": "rediss://:s3cret@redis-master:6380/0"}},
    "sized": {
        "replicaCount": 5,
        "http": {"port": 9102},
        "service": {"port": 9102},
        "resources": {"requests": {"cpu": "200m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
        "podDisruptionBudget": {"enabled": True, "minAvailable": 3},
        "podAntiAffinity": {"type": "hard"},
        "jobs": ["jobs", "billing.jobs"],
        "image": {"repository": "registry.example.com/team/baton-jobs", "tag": "2024.06.1"},
    },
    "http-off": {"http": {"port": 0}},
    "zookeeper-tls": {
        "config": {
            "lease_ttl": 15,
            "renew_deadline": 10,
            "shutdown_grace": 60,
            "exit_on_lost": True,
            "zookeeper": {
                "session_timeout": 20,
                "on_suspended": "wait",
                "tls": True,
                "ca_file": "/etc/baton-tls/ca.pem",
            },
        },
        "terminationGracePeriodSeconds": 90,
        "extraVolumes": [{"name": "zk-tls", "secret": {"secretName": "zookeeper-ca"}}],
        "extraVolumeMounts": [{"name": "zk-tls", "mountPath": "/etc/baton-tls", "readOnly": True}],
        "extraEnv": [{"name": "TZ", "value": "UTC"}],
    },
    "bare": {
        "serviceAccount": {"create": False, "name": "platform-jobs"},
        "podDisruptionBudget": {"enabled": False},
        "service": {"enabled": False},
        "podAntiAffinity": {"type": "none"},
        "image": {"digest": "sha256:" + "ab" * 32},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
        "podAnnotations": {"team": "platform"},
    },
}


@pytest.fixture(scope="module")
def default() -> Rendered:
    return render()


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_rendered_object_is_valid(name: str) -> None:
    """Each value set renders, and every object validates on the oldest and a new k8s."""
    rendered = render(VALUE_SETS[name])
    assert rendered.objects
    for obj in rendered.objects:
        validate(obj)


def test_default_objects(default: Rendered) -> None:
    """Defaults: Deployment, ConfigMap, ServiceAccount, metrics Service, PDB; no Secret."""
    assert default.kinds == {
        "Deployment",
        "ConfigMap",
        "ServiceAccount",
        "Service",
        "PodDisruptionBudget",
    }
    assert all(obj["metadata"]["namespace"] == NAMESPACE for obj in default.objects)


def test_helm_lint_is_clean() -> None:
    """helm lint --strict for the chart's kubeVersion floor reports no warning or error."""
    report = helm.lint(CHART_DIR, strict=True, kube_version="v1.25.0")
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and serious == []


def test_three_replicas_roll_with_a_standby(default: Rendered) -> None:
    """3 replicas; a rollout adds the new pod before it stops an old one."""
    spec = default.one("Deployment")["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert render(VALUE_SETS["sized"]).one("Deployment")["spec"]["replicas"] == 5


def test_pod_name_is_the_replica_id(default: Rendered) -> None:
    """BATON_REPLICA_ID comes from the downward API: the pod's metadata.name."""
    assert default.env("BATON_REPLICA_ID")["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.name"}
    }
    assert "replica_id" not in default.config


def test_backend_comes_from_a_secret(default: Rendered) -> None:
    """BATON_BACKEND reads <fullname>-backend; the URL is in neither ConfigMap nor env."""
    assert default.env("BATON_BACKEND")["valueFrom"] == {
        "secretKeyRef": {"name": "baton-backend", "key": "backend"}
    }
    assert "backend" not in default.config

    existing = render(VALUE_SETS["existing-secret"])
    assert existing.env("BATON_BACKEND")["valueFrom"]["secretKeyRef"] == {
        "name": "redis-credentials",
        "key": "url",
    }
    assert "Secret" not in existing.kinds


def test_inline_url_becomes_a_secret_that_rolls_the_pods() -> None:
    """backend.url: the chart creates the Secret; a new URL changes the pod template."""
    url = VALUE_SETS["inline-url"]["backend"]["url"]
    rendered = render(VALUE_SETS["inline-url"])
    secret = rendered.one("Secret")
    assert secret["metadata"]["name"] == "baton-backend"
    assert base64.b64decode(secret["data"]["backend"]).decode() == url
    assert rendered.env("BATON_BACKEND")["valueFrom"]["secretKeyRef"]["name"] == "baton-backend"
    assert url not in rendered.sources["baton/templates/configmap.yaml"]
    assert url not in rendered.sources["baton/templates/deployment.yaml"]
    other = render({"backend": {"url": "rediss://:rotated@redis-master:6380/0"}})
    key = "checksum/backend"
    assert rendered.pod["metadata"]["annotations"][key] != other.pod["metadata"]["annotations"][key]


def test_no_credentials_in_plain_env_or_config() -> None:
    """No env var of any value set carries a URL with credentials as a plain value."""
    for values in VALUE_SETS.values():
        rendered = render(values)
        for item in rendered.container["env"]:
            assert "://" not in str(item.get("value", "")), item


@pytest.mark.parametrize("name", ["defaults", "sized"])
def test_probes_hit_the_endpoints_on_the_http_port(name: str) -> None:
    """Startup and liveness probe /healthz, readiness /readyz, on the port named http."""
    rendered = render(VALUE_SETS[name])
    port = rendered.config["http"]["port"]
    container = rendered.container
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def test_probe_timings_fit_the_lease(default: Rendered) -> None:
    """A probe answers well inside one lease; liveness gives up only after several leases."""
    lease_ttl = default.config["lease_ttl"]
    container = default.container
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["timeoutSeconds"] < lease_ttl
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 2 * lease_ttl
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30


def test_http_off_means_no_ports_probes_or_service() -> None:
    """http.port 0: nothing listens, so no probes, no Service, and NOTES warn about it."""
    rendered = render(VALUE_SETS["http-off"])
    container = rendered.container
    for key in ("ports", "startupProbe", "livenessProbe", "readinessProbe"):
        assert key not in container
    assert "Service" not in rendered.kinds
    assert rendered.config["http"]["port"] == 0
    assert "WARNING: http.port is 0" in rendered.notes


def test_metrics_service_selects_the_pods(default: Rendered) -> None:
    """The metrics Service selects every replica and targets the named http port."""
    service = default.one("Service")
    assert service["metadata"]["name"] == "baton-metrics"
    assert service["spec"]["selector"] == SELECTOR
    assert SELECTOR.items() <= default.pod["metadata"]["labels"].items()
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]


def test_service_monitor_scrapes_the_metrics_service() -> None:
    """Off by default; when on, it selects the metrics Service and scrapes /metrics on http."""
    assert "ServiceMonitor" not in render().kinds
    rendered = render(VALUE_SETS["service-monitor"])
    monitor = rendered.one("ServiceMonitor")
    service = rendered.one("Service")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert (endpoint["path"], endpoint["interval"]) == ("/metrics", "15s")


def test_service_monitor_schema_catches_mistakes() -> None:
    """The embedded ServiceMonitor schema is not a rubber stamp."""
    monitor = render(VALUE_SETS["service-monitor"]).one("ServiceMonitor")
    for mutate in (
        lambda m: m["spec"]["endpoints"][0].update(interval="15 seconds"),
        lambda m: m["spec"].update(endpoint=m["spec"].pop("endpoints")),
        lambda m: m["spec"]["selector"].update(matchLabels=["not", "a", "map"]),
        lambda m: m["metadata"].update(labels={"release": 1}),
    ):
        broken = copy.deepcopy(monitor)
        mutate(broken)
        with pytest.raises(jsonschema.ValidationError):
            validate(broken)


def test_pod_disruption_budget(default: Rendered) -> None:
    """A PDB over the replicas lets drains take one at a time (or keeps minAvailable)."""
    pdb = default.one("PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": SELECTOR}}
    sized = render(VALUE_SETS["sized"]).one("PodDisruptionBudget")
    assert sized["spec"]["minAvailable"] == 3 and "maxUnavailable" not in sized["spec"]
    assert "PodDisruptionBudget" not in render(VALUE_SETS["bare"]).kinds


def test_anti_affinity_spreads_replicas_over_nodes(default: Rendered) -> None:
    """Default: preferred anti-affinity on kubernetes.io/hostname; hard and none on demand."""
    (term,) = default.pod["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["weight"] == 100
    assert term["podAffinityTerm"] == {
        "topologyKey": "kubernetes.io/hostname",
        "labelSelector": {"matchLabels": SELECTOR},
    }
    hard = render(VALUE_SETS["sized"]).pod["spec"]["affinity"]["podAntiAffinity"]
    assert list(hard) == ["requiredDuringSchedulingIgnoredDuringExecution"]
    assert "affinity" not in render(VALUE_SETS["bare"]).pod["spec"]
    term = {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["jobs"]}]}
    required = {"nodeSelectorTerms": [term]}
    custom = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}
    assert render({"affinity": custom}).pod["spec"]["affinity"] == custom


def _dockerfile_uid() -> int:
    text = (ROOT / "Dockerfile").read_text()
    match = re.search(r"^ARG BATON_UID=(\d+)$", text, re.MULTILINE)
    assert match, "Dockerfile declares ARG BATON_UID"
    return int(match.group(1))


def test_runs_as_the_image_user_with_nothing_writable_but_scratch(default: Rendered) -> None:
    """Non-root (the image's UID), read-only root, no capabilities, emptyDir scratch."""
    pod = default.pod["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == _dockerfile_uid()
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = default.container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in default.container["volumeMounts"]}
    assert mounts["/etc/baton"]["readOnly"] is True
    assert volumes[mounts["/etc/baton"]["name"]]["configMap"]["name"] == "baton-config"
    for path in ("/tmp", "/app/.baton"):
        assert "emptyDir" in volumes[mounts[path]["name"]]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "baton"


def test_service_links_are_off(default: Rendered) -> None:
    """No BATON_*_PORT & co. injected from Services (BATON_HTTP_PORT would break config)."""
    assert default.pod["spec"]["enableServiceLinks"] is False


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, 45),
        ({"config": {"shutdown_grace": 60}}, 75),
        ({"config": {"shutdown_grace": 30.5}}, 46),
        ({"config": {"shutdown_grace": 0}}, 15),
        ({"terminationGraceMargin": 30}, 60),
        ({"terminationGracePeriodSeconds": 31}, 31),
    ],
)
def test_termination_grace_exceeds_shutdown_grace(values: dict[str, Any], expected: int) -> None:
    """terminationGracePeriodSeconds = ceil(shutdown_grace) + margin, or explicit > grace."""
    rendered = render(values)
    grace = rendered.pod["spec"]["terminationGracePeriodSeconds"]
    assert grace == expected
    assert grace > rendered.config["shutdown_grace"]


def test_checksum_annotation_follows_the_config() -> None:
    """A config change changes the pod template (pods roll); other changes do not."""

    def checksum(values: dict[str, Any]) -> str:
        annotation: str = render(values).pod["metadata"]["annotations"]["checksum/config"]
        return annotation

    base = checksum({})
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert checksum({}) == base
    assert checksum({"config": {"lease_ttl": 12}}) != base
    assert checksum({"jobs": ["billing"]}) != base
    assert checksum({"http": {"port": 9000}}) != base
    assert checksum({"replicaCount": 7}) == base
    assert render({"podAnnotations": {"team": "x"}}).pod["metadata"]["annotations"]["team"] == "x"


@pytest.mark.parametrize("name", VALUE_SETS)
def test_baton_accepts_the_rendered_config(name: str, tmp_path: Path) -> None:
    """baton.yaml plus the pod's env loads in Baton's own config loader, unchanged."""
    values = copy.deepcopy(VALUE_SETS[name])
    zookeeper = values.get("config", {}).get("zookeeper", {})
    if "ca_file" in zookeeper:  # Baton checks that the file exists: give it one
        zookeeper["ca_file"] = str(tmp_path / "ca.pem")
        Path(zookeeper["ca_file"]).write_text("not read at load time\n")
    rendered = render(values)
    path = tmp_path / "baton.yaml"
    path.write_text(rendered.config_text)
    backend = "zookeeper://zk:2181/baton" if "zookeeper" in rendered.config else "redis://r:6379"
    env = {"BATON_BACKEND": backend, "BATON_REPLICA_ID": "baton-7d9f8c-x2x4q"}
    settings = load_settings(path, environ=env)
    assert settings.replica_id == "baton-7d9f8c-x2x4q"
    assert settings.jobs == rendered.config["jobs"]
    assert settings.http.port == rendered.config["http"]["port"]
    assert settings.lease_ttl == rendered.config["lease_ttl"]
    assert settings.log_format == "json"


def test_chart_config_covers_baton_settings() -> None:
    """The schema's config keys plus what the chart sets itself are exactly Baton's keys."""
    schema = CHART_DIR.joinpath("values.schema.json").read_text()
    properties = yaml.safe_load(schema)["properties"]
    set_by_chart = {"backend", "replica_id", "jobs", "http"}
    assert set(properties["config"]["properties"]) | set_by_chart == set(Settings.model_fields)
    zookeeper = properties["config"]["properties"]["zookeeper"]["properties"]
    assert set(zookeeper) == set(ZooKeeperSettings.model_fields)
    assert set(properties["http"]["properties"]) == set(HttpSettings.model_fields)


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"replicas": 3}, "additional properties 'replicas' not allowed"),
        ({"replicaCount": "three"}, "/replicaCount"),
        ({"replicaCount": -1}, "/replicaCount"),
        ({"http": {"port": "8080"}}, "/http/port"),
        ({"http": {"port": 70000}}, "/http/port"),
        ({"config": {"lease_tt": 5}}, "additional properties 'lease_tt' not allowed"),
        ({"config": {"backend": "redis://:pw@r:6379"}}, "'backend' not allowed"),
        ({"config": {"lease_ttl": 0}}, "/config/lease_ttl"),
        ({"config": {"log_format": "xml"}}, "/config/log_format"),
        ({"config": {"zookeeper": {"on_suspended": "panic"}}}, "/config/zookeeper"),
        ({"backend": {"url": "sqlite:///baton.db"}}, "/backend/url"),
        ({"jobs": []}, "/jobs"),
        ({"jobs": ["my-jobs"]}, "/jobs/0"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"podAntiAffinity": {"type": "strict"}}, "/podAntiAffinity/type"),
        ({"terminationGracePeriodSeconds": "60"}, "/terminationGracePeriodSeconds"),
        ({"serviceMonitor": {"interval": "30 seconds"}}, "/serviceMonitor/interval"),
        ({"resources": {"request": {"cpu": "1"}}}, "'request' not allowed"),
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any], where: str) -> None:
    """values.schema.json refuses the render with a message naming the offending key."""
    with pytest.raises(helm.HelmValuesError) as caught:
        render(values)
    message = str(caught.value)
    assert "values don't meet the specifications of the schema" in message
    assert where in message


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"backend": {"url": "redis://r:6379", "existingSecret": "mine"}},
            "set either backend.existingSecret (recommended) or backend.url, not both",
        ),
        (
            {"terminationGracePeriodSeconds": 30},
            "terminationGracePeriodSeconds (30) must exceed config.shutdown_grace (30)",
        ),
        (
            {"serviceMonitor": {"enabled": True}, "http": {"port": 0}},
            "serviceMonitor.enabled needs the metrics Service",
        ),
        (
            {"podDisruptionBudget": {"enabled": True, "maxUnavailable": None}},
            "set maxUnavailable or minAvailable",
        ),
    ],
)
def test_templates_refuse_inconsistent_values(values: dict[str, Any], message: str) -> None:
    """Combinations the schema cannot see fail the render with a one-line reason."""
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)


def test_notes_tell_how_to_see_the_leader(default: Rendered) -> None:
    """NOTES.txt: baton leader / status via kubectl exec, the Secret to create, metrics."""
    notes = default.notes
    assert f"kubectl -n {NAMESPACE} exec deploy/baton -- baton leader" in notes
    assert f"kubectl -n {NAMESPACE} exec deploy/baton -- baton status" in notes
    assert f"kubectl -n {NAMESPACE} create secret generic baton-backend" in notes
    assert "/metrics" in notes
    assert "create secret" not in render(VALUE_SETS["inline-url"]).notes


def test_release_names_give_distinct_objects() -> None:
    """A second release in the namespace gets its own names, selector and Secret."""
    other = render(release="billing")
    assert other.one("Deployment")["metadata"]["name"] == "billing-baton"
    assert (
        other.env("BATON_BACKEND")["valueFrom"]["secretKeyRef"]["name"] == "billing-baton-backend"
    )
    assert other.pod["metadata"]["labels"]["app.kubernetes.io/instance"] == "billing"
