"""deploy/ is valid: the YAML parses, the FlinkDeployments validate against the Flink Kubernetes Operator's CRD
schema (vendored: deploy/schemas/), the Compose file against the Compose specification's JSON schema, and the
files say what riverflink needs (one image, HA, checkpoint storage, the venv's Python, current keys)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))
#: configuration keys Flink 2 no longer reads (the manifests must use their successors)
RETIRED_KEYS = {"state.checkpoints.dir", "state.savepoints.dir", "state.backend", "high-availability",
                "restart-strategy", "kubernetes.jobmanager.replicas"}


@functools.lru_cache(maxsize=None)
def _crd_schema(version: str) -> dict:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load((DEPLOY / "schemas" / "flinkdeployments.flink.apache.org-v1.yml").read_text(), Loader=loader)
    (v,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return v["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_flink_deployment_validates_against_the_operator_crd(path):
    doc = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == "flink.apache.org/v1beta1" and doc["kind"] == "FlinkDeployment"
    jsonschema.validate(doc, _crd_schema("v1beta1"))
    spec = doc["spec"]
    conf = spec["flinkConfiguration"]
    assert not RETIRED_KEYS & set(conf), RETIRED_KEYS & set(conf)
    assert conf["high-availability.type"] == "kubernetes" and conf["high-availability.storageDir"]
    assert conf["execution.checkpointing.dir"] and conf["execution.checkpointing.savepoint-dir"]
    assert conf["python.executable"] == "/opt/venv/bin/python"
    args = spec["job"]["args"]
    assert args[args.index("-pyclientexec") + 1] == "/opt/venv/bin/python"
    assert spec["podTemplate"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    plugins = spec["podTemplate"]["spec"]["containers"][0]["env"]
    assert any(e["name"] == "ENABLE_BUILT_IN_PLUGINS" and "s3" in e["value"] for e in plugins)


def test_a_manifest_with_a_wrong_field_is_refused():
    """The schema check can fail: an unknown upgrade mode and a string parallelism are refused."""
    doc = yaml.safe_load(MANIFESTS[0].read_text())
    doc["spec"]["job"]["upgradeMode"] = "sometimes"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, _crd_schema("v1beta1"))


def test_compose_file_validates_against_the_compose_spec():
    doc = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    schema = json.loads((DEPLOY / "schemas" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(doc)
    services = doc["services"]
    assert services["kafka"]["environment"]["CLUSTER_ID"]
    images = {s.get("image") for name, s in services.items() if name != "kafka"}
    assert images == {"riverflink:local"}  # one image for every Flink container
    assert sum("build" in s for s in services.values()) == 1
    for name in ("jobmanager", "taskmanager"):
        assert "checkpoints:/checkpoints" in services[name]["volumes"]
    assert "healthcheck" in services["kafka"] and "healthcheck" in services["jobmanager"]
    assert "--topic requests" in (DEPLOY / "docker-compose.yml").read_text()  # the usage comment sends requests


def test_dockerfile_is_multi_stage_with_a_venv_and_a_jdk_and_has_a_dockerignore():
    text = (DEPLOY / "Dockerfile").read_text()
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2
    assert "python3 -m venv /opt/venv" in text and "openjdk-17-jdk-headless" in text
    assert "COPY --from=build /opt/venv /opt/venv" in text
    ignore = (DEPLOY.parent / ".dockerignore").read_text().split()
    assert ".venv" in ignore and ".git" in ignore
