"""Deployment files: the Kubernetes manifests validate offline, apply in a working order, and the
Dockerfile runs real CLI subcommands."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from common.cli import _build_parser

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
NAMESPACE = "conduit-fleet"
CLUSTER_SCOPED = {"Namespace"}


def top_level_files() -> list[Path]:
    return sorted(path for path in K8S.iterdir() if path.is_file())


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def all_objects() -> list[dict]:
    return [doc for path in top_level_files() for doc in documents(path)]


def cli_subcommands() -> set[str]:
    parser = _build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(actions[0].choices)


def test_manifests_pass_strict_validation():
    pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed (test extra)")
    files = [str(path) for path in top_level_files()] + [str(path) for path in sorted((K8S / "optional").glob("*.yaml"))]

    result = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", *files],
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr


def test_top_level_files_are_kubernetes_objects():
    for path in top_level_files():
        assert path.suffix == ".yaml", f"{path.name}: only .yaml manifests belong at the top of k8s/"
        assert path.name not in ("kustomization.yaml", "kustomization.yml"), path.name
        docs = documents(path)
        assert docs, f"{path.name} contains no object"
        for doc in docs:
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path.name
            assert doc["kind"] != "Kustomization", path.name
            assert doc["metadata"].get("name"), path.name


def test_namespace_and_config_apply_first():
    files = top_level_files()
    first_kinds = [documents(path)[0]["kind"] for path in files[:2]]

    assert first_kinds == ["Namespace", "ConfigMap"]
    assert files[2].name.startswith("02-secret"), "the Secret must exist before the workloads that read it"


def test_objects_live_in_fleet_namespace():
    for doc in all_objects():
        if doc["kind"] in CLUSTER_SCOPED:
            assert doc["metadata"]["name"] == NAMESPACE
        else:
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]


def workloads() -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in all_objects() if doc["kind"] in ("Deployment", "StatefulSet")}


def test_grace_period_longer_than_drain():
    config = next(doc for doc in all_objects() if doc["kind"] == "ConfigMap")
    drain_s = float(config["data"]["CF_DRAIN_TIMEOUT_S"])
    worker = workloads()["shard-worker"]["spec"]["template"]["spec"]

    assert worker["terminationGracePeriodSeconds"] > drain_s
    assert config["data"]["CF_LOG_FORMAT"] == "json"


def test_containers_non_root_read_only_with_limits():
    for name, workload in workloads().items():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert {"cpu", "memory"} <= container["resources"]["requests"].keys(), name
            assert {"cpu", "memory"} <= container["resources"]["limits"].keys(), name


def test_probes_use_served_paths():
    coordinator = workloads()["coordinator"]["spec"]["template"]["spec"]["containers"][0]
    worker = workloads()["shard-worker"]["spec"]["template"]["spec"]["containers"][0]

    assert coordinator["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert coordinator["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert workloads()["coordinator"]["spec"]["replicas"] == 2
    assert workloads()["shard-worker"]["spec"]["replicas"] == 3


def test_workload_args_are_cli_subcommands():
    for name in ("coordinator", "shard-worker"):
        container = workloads()[name]["spec"]["template"]["spec"]["containers"][0]
        assert container["args"][0] in cli_subcommands(), name


def dockerfile_instruction(name: str) -> list[str]:
    """Return the JSON-array form of the last `name` instruction (the final stage's)."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    found = re.findall(rf"^{name}\s+(\[.*\])\s*$", text, re.MULTILINE)
    assert found, f"Dockerfile has no {name} in JSON-array form"
    return json.loads(found[-1])


def test_dockerfile_runs_cli_subcommand():
    scripts = re.search(r'^conduit-fleet = "common.cli:main"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)

    assert scripts, "pyproject.toml no longer defines the conduit-fleet script"
    assert dockerfile_instruction("ENTRYPOINT") == ["conduit-fleet"]
    assert dockerfile_instruction("CMD")[0] in cli_subcommands()
