"""Render helm/baton with Helm's own engine and validate every object it renders.

The renderer is helm-python-sdk: Helm's Go SDK (v4) compiled into a shared library inside
the wheel, called through ctypes. It renders a local chart directory offline, applies
values.schema.json, and runs the templates' ``fail`` checks, exactly as ``helm template``
would. No cluster and no network are involved (``lookup`` returns nothing).

Core objects are validated by kubernetes-validate against the OpenAPI schemas it bundles
for each Kubernetes release, in strict mode (an unknown field is an error). The
ServiceMonitor is a CRD with no schema there: it is validated against a subset of the
Prometheus Operator's CRD written below, whose metadata and selector reuse the bundled
Kubernetes definitions.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import referencing
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "baton"
RELEASE = "baton"
NAMESPACE = "ops"
#: The chart's kubeVersion floor (the oldest release kubernetes-validate ships schemas for)
#: and a current release: every object must be valid on both.
KUBE_VERSIONS = ("1.25", "1.37")

Obj = dict[str, Any]


@functools.cache
def chart() -> helm.Chart:
    """The chart, loaded once (a loaded chart is immutable and thread-safe)."""
    return helm.Chart.load(CHART_DIR)


@dataclass(frozen=True)
class Rendered:
    """The objects (and NOTES.txt) of one render, with shortcuts into the Deployment."""

    objects: list[Obj]
    notes: str
    sources: dict[str, str] = field(repr=False)

    def all(self, kind: str) -> list[Obj]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str) -> Obj:
        found = self.all(kind)
        assert len(found) == 1, f"expected one {kind}, got {len(found)}"
        return found[0]

    @property
    def kinds(self) -> set[str]:
        return {obj["kind"] for obj in self.objects}

    @property
    def pod(self) -> Obj:
        """The Deployment's pod template."""
        template: Obj = self.one("Deployment")["spec"]["template"]
        return template

    @property
    def container(self) -> Obj:
        (container,) = self.pod["spec"]["containers"]
        return dict(container)

    def env(self, name: str) -> Obj:
        matches = [item for item in self.container["env"] if item["name"] == name]
        assert len(matches) == 1, f"env {name}: {len(matches)} entries"
        return dict(matches[0])

    @property
    def config_text(self) -> str:
        text: str = self.one("ConfigMap")["data"]["baton.yaml"]
        return text

    @property
    def config(self) -> Obj:
        """baton.yaml from the ConfigMap, parsed."""
        data: Obj = yaml.safe_load(self.config_text)
        return data


def render(values: Obj | None = None, *, release: str = RELEASE) -> Rendered:
    """Render the chart as ``helm install RELEASE helm/baton -n ops`` would.

    Raises:
        helm_python.HelmValuesError: the values break values.schema.json.
        helm_python.HelmRenderError: a template refused the values (``fail``).
    """
    sources = chart().render(values or {}, name=release, namespace=NAMESPACE, is_install=True)
    objects: list[Obj] = []
    notes = ""
    for path, text in sorted(sources.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return Rendered(objects=objects, notes=notes, sources=sources)


def validate(obj: Obj) -> None:
    """Validate one rendered object against its schema on every version in KUBE_VERSIONS.

    Raises:
        jsonschema.ValidationError: the object does not match its schema.
        kubernetes_validate.SchemaNotFoundError: no schema for this kind (never skipped).
    """
    for version in KUBE_VERSIONS:
        if obj["apiVersion"] == "monitoring.coreos.com/v1":
            _service_monitor_validator(version).validate(obj)
        else:
            kubernetes_validate.validate(obj, version, strict=True)


# A subset of the Prometheus Operator's ServiceMonitor CRD (monitoring.coreos.com/v1): the
# fields this chart renders, with the CRD's types and patterns, and nothing else allowed.
_DURATION = (
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
    r"(([0-9]+)ms)?)$"
)
_META = "/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1."
SERVICE_MONITOR_SCHEMA: Obj = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://kubernetes.io/api/servicemonitor-monitoring-v1.json",
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"$ref": _META + "ObjectMeta"},
        "spec": {
            "type": "object",
            "required": ["endpoints", "selector"],
            "additionalProperties": False,
            "properties": {
                "selector": {"$ref": _META + "LabelSelector"},
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": _DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": _DURATION},
                            "relabelings": {"type": "array", "items": {"type": "object"}},
                            "metricRelabelings": {
                                "type": "array",
                                "items": {"type": "object"},
                            },
                        },
                    },
                },
            },
        },
    },
}


@functools.cache
def _service_monitor_validator(version: str) -> jsonschema.Draft202012Validator:
    folder = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    definitions = json.loads(
        (folder / f"v{version}.0-local-strict" / "_definitions.json").read_text()
    )
    registry: referencing.Registry[Any] = referencing.Registry().with_resource(
        definitions["$id"], referencing.Resource.from_contents(definitions)
    )
    return jsonschema.Draft202012Validator(SERVICE_MONITOR_SCHEMA, registry=registry)
