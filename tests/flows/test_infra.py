"""The container files in infra/ hang together (they are not run here: no Docker engine)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"
REPO_ROOT = INFRA.parent


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((INFRA / "compose.yaml").read_text())
    return document


def test_compose_services_depend_only_on_services_it_defines() -> None:
    services = _compose()["services"]

    for name, service in services.items():
        assert set(service.get("depends_on", {})) <= set(services), name


def test_compose_mounts_only_files_that_exist() -> None:
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (INFRA / source).is_file(), f"{name}: {source}"


def test_compose_builds_the_image_from_the_repository_root() -> None:
    build = _compose()["services"]["migrate"]["build"]

    assert (INFRA / build["context"]).resolve() == REPO_ROOT
    assert (REPO_ROOT / build["dockerfile"]).is_file()


def test_compose_runs_serve_or_a_worker_never_both() -> None:
    services = _compose()["services"]

    assert services["mlc-serve"]["profiles"] == ["serve"]
    assert services["worker"]["profiles"] == services["deploy"]["profiles"] == ["worker"]


def test_the_dockerfile_copies_only_paths_that_exist_and_the_ignore_file_keeps() -> None:
    dockerfile = (INFRA / "Dockerfile").read_text()
    ignore = (INFRA / "Dockerfile.dockerignore").read_text()

    # Every argument of a COPY but the last is a source in the build context.
    copied = [
        source
        for line in re.findall(r"^COPY (.+)$", dockerfile, flags=re.M)
        for source in line.split()[:-1]
    ]
    assert copied
    for path in copied:
        assert (REPO_ROOT / path).exists(), path
        assert f"!{path}" in ignore or f"!{path}/**" in ignore, path


def test_the_seaweedfs_keys_match_the_compose_defaults() -> None:
    compose = (INFRA / "compose.yaml").read_text()
    config = (INFRA / "seaweedfs" / "s3.json").read_text()

    for key in re.findall(r"\$\{S3_(?:ACCESS|SECRET)_KEY:-([^}]+)\}", compose):
        assert f'"{key}"' in config
