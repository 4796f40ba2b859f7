"""docker/k8s: every manifest valid for one fixed Kubernetes release, offline and strict (unknown
fields rejected), and the properties a rollout depends on: probes, drain time, GPU, security."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
from shipped import (
    K8S,
    KUBERNETES_VERSION,
    dockerfile_stages,
    load_yaml,
    settings_variables,
    shutdown_budget_s,
)

MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _by_kind() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in (load_yaml(p) for p in MANIFESTS)}


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    return _by_kind()


@pytest.fixture(scope="module")
def container(manifests) -> dict:
    (main,) = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    return main


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid(path):
    kubernetes_validate.validate(load_yaml(path), KUBERNETES_VERSION, strict=True)


def test_validation_rejects_a_misspelt_field(manifests):
    broken = copy.deepcopy(manifests["Deployment"])
    spec = broken["spec"]["template"]["spec"]["containers"][0]
    spec["readinesProbe"] = spec.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = load_yaml(K8S / "kustomization.yaml")
    assert sorted(kustomization["resources"]) == [p.name for p in MANIFESTS]


def test_probes(container):
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    # uvicorn listens only after the models load: liveness must not start before that.
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/health"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    assert {"name": "http", "containerPort": 8000} in container["ports"]


def test_grace_period_covers_pre_stop_and_drain(manifests, container):
    config = manifests["ConfigMap"]["data"]
    budget = shutdown_budget_s(float(config["VOXGUARD_REQUEST_TIMEOUT_S"]))
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = manifests["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert pre_stop >= 3, "endpoints need a moment to drop the pod before SIGTERM"
    assert grace > pre_stop + budget, (grace, pre_stop, budget)


def test_gpu_limit_and_settings(manifests, container):
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["envFrom"] == [{"configMapRef": {"name": manifests["ConfigMap"]["metadata"]["name"]}}]
    config = manifests["ConfigMap"]["data"]
    assert set(config) <= settings_variables(), set(config) - settings_variables()
    assert config["VOXGUARD_DEVICE"] == "cuda"
    assert config["VOXGUARD_HOST"] == "0.0.0.0"


def test_read_only_non_root_with_writable_tmp_and_checkpoints_volume(manifests, container):
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    image_user = dict(dockerfile_stages()["runtime"][1])["USER"]  # "10001:10001"
    assert f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}" == image_user
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    checkpoints = mounts[manifests["ConfigMap"]["data"]["VOXGUARD_CHECKPOINT_DIR"]]
    assert checkpoints["readOnly"] is True
    claim = volumes[checkpoints["name"]]["persistentVolumeClaim"]["claimName"]
    assert claim == manifests["PersistentVolumeClaim"]["metadata"]["name"]


def test_service_and_autoscaler_target_the_deployment(manifests):
    deployment = manifests["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = manifests["Service"]["spec"]
    assert service["selector"].items() <= labels.items()
    assert service["ports"][0]["targetPort"] == "http"
    hpa = manifests["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] >= 2, "one replica left during a drain is no redundancy"
    assert manifests["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
