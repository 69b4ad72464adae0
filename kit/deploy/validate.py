"""Offline validation of the rendered Kubernetes manifests: strict OpenAPI schema (CRDs by envelope) and checkov.
Needs no cluster; validate_dir runs both on a directory and returns one report with the verdict."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.core.errors import DeployError
from kit.core.io import rel_path
from kit.deploy.checkov import CheckovResult, find_checkov, run_checkov
from kit.deploy.manifests import load_manifests

__all__ = ["schema_validate", "ValidationReport", "validate_dir"]


# ------------------------------------------------------------------------------------------- validation
# Knative/KServe are CRDs: kubernetes-validate ships only built-in kinds. Their envelope is checked against the
# small schemas below (written from the Knative Serving v1 and KServe v1beta1 API references), and the pod part
# they inline is checked against the core/v1 PodSpec schema of the same Kubernetes version.
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_META = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": _STR_MAP,
                   "annotations": _STR_MAP},
    "additionalProperties": False,
}  # fmt: skip


def _crd_envelope(api_version: str, kind: str, spec_required: list[str], spec_properties: dict) -> dict:
    """Schema of a custom resource's outer shape: apiVersion, kind, metadata and a closed spec."""
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _META,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": spec_required,
                "properties": spec_properties,
            },
        },
    }


_KNATIVE_SERVICE = _crd_envelope(
    "serving.knative.dev/v1",
    "Service",
    ["template"],
    {
        "template": {
            "type": "object",
            "additionalProperties": False,
            "required": ["spec"],
            "properties": {"metadata": {**_META, "required": []}, "spec": {"type": "object"}},
        },
        "traffic": {"type": "array"},
    },
)
_KNATIVE_REVISION_KEYS = {
    "containerConcurrency": {"type": "integer", "minimum": 0, "maximum": 1000},
    "timeoutSeconds": {"type": "integer", "minimum": 0},
    "responseStartTimeoutSeconds": {"type": "integer", "minimum": 0},
    "idleTimeoutSeconds": {"type": "integer", "minimum": 0},
}
_KSERVE_SERVICE = _crd_envelope(
    "serving.kserve.io/v1beta1", "InferenceService", ["predictor"], {"predictor": {"type": "object"}}
)
_KSERVE_PREDICTOR_KEYS = {
    "minReplicas": {"type": "integer", "minimum": 0},
    "maxReplicas": {"type": "integer", "minimum": 0},
    "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
    "scaleTarget": {"type": "integer", "minimum": 1},
    "containerConcurrency": {"type": "integer", "minimum": 0},
    "timeout": {"type": "integer", "minimum": 0},
}
_KNATIVE_ANNOTATION_RULES = {
    "autoscaling.knative.dev/min-scale": r"^\d+$",
    "autoscaling.knative.dev/max-scale": r"^\d+$",
    "autoscaling.knative.dev/target": r"^\d+(\.\d+)?$",
    "autoscaling.knative.dev/metric": r"^(concurrency|rps|cpu|memory)$",
    "autoscaling.knative.dev/scale-to-zero-pod-retention-period": r"^\d+(s|m|h)$",
}


# prometheus-operator kinds (monitoring.coreos.com/v1), from its API reference: the fields the kit writes, closed so a
# misspelt key fails here rather than being dropped by the operator. The PrometheusRule comes from `kit monitor rules`.
_DURATION = {"type": "string", "pattern": r"^((\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?|0)$"}
_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"matchLabels": _STR_MAP, "matchExpressions": {"type": "array"}},
}
_SERVICE_MONITOR = _crd_envelope(
    "monitoring.coreos.com/v1",
    "ServiceMonitor",
    ["selector", "endpoints"],
    {
        "selector": _SELECTOR,
        "namespaceSelector": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}},
        },
        "jobLabel": {"type": "string"},
        "endpoints": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "port": {"type": "string"},
                    "targetPort": {"type": ["string", "integer"]},
                    "path": {"type": "string", "pattern": "^/"},
                    "scheme": {"enum": ["http", "https"]},
                    "interval": _DURATION,
                    "scrapeTimeout": _DURATION,
                    "honorLabels": {"type": "boolean"},
                },
            },
        },
    },
)
_RULE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["expr"],
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
    "properties": {
        "alert": {"type": "string"},
        "record": {"type": "string"},
        "expr": {"type": ["string", "integer"]},
        "for": _DURATION,
        "keep_firing_for": _DURATION,
        "labels": _STR_MAP,
        "annotations": _STR_MAP,
    },
}
_PROMETHEUS_RULE = _crd_envelope(
    "monitoring.coreos.com/v1",
    "PrometheusRule",
    ["groups"],
    {
        "groups": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "rules"],
                "properties": {
                    "name": {"type": "string"},
                    "interval": _DURATION,
                    "limit": {"type": "integer"},
                    "rules": {"type": "array", "items": _RULE},
                },
            },
        },
    },
)


_OPERATOR_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _SERVICE_MONITOR,
    ("monitoring.coreos.com/v1", "PrometheusRule"): _PROMETHEUS_RULE,
}


def _core_validator(type_file: str, version: str) -> Any:
    """A jsonschema validator for one core type (e.g. podspec-v1) of kubernetes-validate's strict schemas."""
    import jsonschema
    from kubernetes_validate import utils as kv
    from referencing import Registry, Resource

    schema_version = [v for v in kv.all_versions() if kv.major_minor(v) <= kv.major_minor(version)][-1]
    base = f"kubernetes-json-schema/v{schema_version}-local-strict"
    schema = kv.schema_contents(f"{base}/{type_file}.json", version)
    defs = kv.schema_contents(f"{base}/_definitions.json", version)
    registry = Resource.from_contents(defs) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def _errors(validator: Any, doc: Any, prefix: str = "") -> list[str]:
    out = []
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(p) for p in err.absolute_path)
        out.append(f"{prefix}{path or '<root>'}: {err.message}")
    return out


def _split_pod(spec: dict[str, Any], extra_keys: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = {k: v for k, v in spec.items() if k not in extra_keys}
    extra = {k: v for k, v in spec.items() if k in extra_keys}
    return pod, extra


def _validate_crd(doc: dict[str, Any], version: str) -> tuple[list[str], str]:
    import re

    import jsonschema

    kind = (doc.get("apiVersion"), doc.get("kind"))
    if kind in _OPERATOR_KINDS:  # no pod inside: the envelope is the whole check
        how = f"{kind[1]} schema (prometheus-operator monitoring.coreos.com/v1)"
        return _errors(jsonschema.Draft202012Validator(_OPERATOR_KINDS[kind]), doc), how
    pod_v = _core_validator("podspec-v1", version)
    errors: list[str] = []
    if kind == ("serving.knative.dev/v1", "Service"):
        errors += _errors(jsonschema.Draft202012Validator(_KNATIVE_SERVICE), doc)
        tmpl = (doc.get("spec") or {}).get("template") or {}
        pod, extra = _split_pod(tmpl.get("spec") or {}, _KNATIVE_REVISION_KEYS)
        extra_schema = {"type": "object", "properties": _KNATIVE_REVISION_KEYS}
        errors += _errors(jsonschema.Draft202012Validator(extra_schema), extra, "spec.template.spec.")
        errors += _errors(pod_v, pod, "spec.template.spec.")
        ann = (tmpl.get("metadata") or {}).get("annotations") or {}
        for key, pattern in _KNATIVE_ANNOTATION_RULES.items():
            if key in ann and not re.match(pattern, str(ann[key])):
                errors.append(f"spec.template.metadata.annotations.{key}: {ann[key]!r} does not match {pattern}")
        ports = [p for c in pod.get("containers") or [] for p in c.get("ports") or []]
        if len(ports) > 1:
            errors.append("spec.template.spec.containers: Knative allows a single container port")
        how = "Knative Service envelope + inlined core/v1 PodSpec (strict)"
    elif kind == ("serving.kserve.io/v1beta1", "InferenceService"):
        errors += _errors(jsonschema.Draft202012Validator(_KSERVE_SERVICE), doc)
        pod, extra = _split_pod((doc.get("spec") or {}).get("predictor") or {}, _KSERVE_PREDICTOR_KEYS)
        extra_schema = {"type": "object", "properties": _KSERVE_PREDICTOR_KEYS}
        errors += _errors(jsonschema.Draft202012Validator(extra_schema), extra, "spec.predictor.")
        errors += _errors(pod_v, pod, "spec.predictor.")
        how = "KServe InferenceService envelope + inlined core/v1 PodSpec (strict)"
    else:
        raise DeployError(f"no schema for {kind[0]} {kind[1]}: not a built-in kind nor a known CRD")
    return errors, how


def schema_validate(docs: Iterable[tuple[Path, dict[str, Any]]], version: str) -> list[dict[str, Any]]:
    """Validate each manifest offline against the Kubernetes OpenAPI schema of `version` (strict: unknown fields fail).

    Args:
        docs: (file, manifest) pairs, as from load_manifests.
        version: Kubernetes version, e.g. "1.33.0".

    Returns:
        One row per manifest: file, kind, name, how it was checked, errors (empty when valid).
    """
    from kubernetes_validate import utils as kv

    rows = []
    for path, doc in docs:
        name = (doc.get("metadata") or {}).get("name")
        try:
            kv.validate(doc, version, strict=True)
            errors, how = [], f"kubernetes-validate {version} strict"
        except kv.ValidationError as exc:
            where = ".".join(str(p) for p in exc.absolute_path) or "<root>"
            errors, how = [f"{where}: {exc.message}"], f"kubernetes-validate {version} strict"
        except kv.SchemaNotFoundError:
            errors, how = _validate_crd(doc, version)
        except kv.VersionNotSupportedError as exc:
            raise DeployError(f"deploy.k8s_version: {exc.message} (kubernetes-validate knows 1.25-1.37)") from None
        rows.append({"file": str(path), "kind": doc.get("kind"), "name": name, "checked_with": how, "errors": errors})
    return rows


# ------------------------------------------------------------------------------------------ validate dir
@dataclass
class ValidationReport:
    """Schema rows per manifest and the checkov result (None when checkov was not run, with the reason)."""

    schema: list[dict[str, Any]]
    checkov: CheckovResult | None
    checkov_note: str = ""

    @property
    def ok(self) -> bool:
        return all(not r["errors"] for r in self.schema) and (self.checkov is None or self.checkov.ok)

    def failing_files(self) -> list[str]:
        """Every file with a schema error or a failed checkov check, sorted."""
        bad = {r["file"] for r in self.schema if r["errors"]}
        bad |= {f["file"] for f in (self.checkov.failed if self.checkov else [])}
        return sorted(bad)

    def relative_to(self, root: str | Path) -> ValidationReport:
        """The same report with every file named relative to `root` (what reports and notebooks may show)."""
        rows = [{**r, "file": rel_path(r["file"], root)} for r in self.schema]
        ck = self.checkov
        if ck is not None:
            ck = dataclasses.replace(ck, failed=[{**f, "file": rel_path(f["file"], root)} for f in ck.failed])
        return ValidationReport(schema=rows, checkov=ck, checkov_note=self.checkov_note)

    def lines(self) -> list[str]:
        """Human-readable summary, one line per problem plus totals."""
        out = []
        for r in self.schema:
            for e in r["errors"]:
                out.append(f"{r['file']}: {r['kind']}/{r['name']}: {e}")
        bad = sum(1 for r in self.schema if r["errors"])
        out.append(f"schema: {len(self.schema) - bad}/{len(self.schema)} manifests valid")
        if self.checkov is None:
            out.append(f"checkov: not run ({self.checkov_note})")
        else:
            for f in self.checkov.failed:
                out.append(f"checkov FAILED {f['check']} {f['resource']} ({f['file']}): {f['name']}")
            out.append(
                f"checkov: {self.checkov.passed} passed, {len(self.checkov.failed)} failed, "
                f"{len(self.checkov.skipped)} skipped with a reason in the manifest"
            )
        return out


def validate_dir(
    directory: str | Path, version: str, checkov: bool | None = None, *, root: str | Path | None = None
) -> ValidationReport:
    """Schema-validate every manifest under `directory` and scan the directory with checkov.

    Args:
        directory: rendered manifests.
        version: Kubernetes version for the schemas.
        checkov: True: require checkov; False: skip it; None: run it when installed, else note why not.
        root: project root whose .tools/checkov is looked for (default: found from cwd).

    Returns:
        The report (`.ok` is the verdict).
    """
    docs = load_manifests(directory)
    rows = schema_validate(docs, version)
    exe = find_checkov(root) if checkov is not False else None
    if checkov is True and exe is None:
        raise DeployError("checkov not found: run scripts/tools.sh (creates .tools/checkov) or set KIT_CHECKOV")
    if exe is None:
        note = "disabled" if checkov is False else "not installed; run scripts/tools.sh"
        return ValidationReport(schema=rows, checkov=None, checkov_note=note)
    return ValidationReport(schema=rows, checkov=run_checkov([directory], "kubernetes", exe))
