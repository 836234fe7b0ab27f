"""The project's two images, built from their Dockerfiles with buildah, and imported into the node.

No registry and no Docker: the Dockerfiles' ``FROM python:3.11-slim`` is a base image made
locally from Debian packages (``devstack/build/build-base-images.sh``), tagged with that name in
a buildah storage under the cache. An image is rebuilt only when its inputs change (the
Dockerfile and every file it copies, hashed), kept as a docker-archive in the cache, and
imported into the node's containerd (namespace ``k8s.io``) by the node's start-up.

``make images`` (``smartflow-devstack images``) builds both and prints their references.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import StackError
from .node.namespaces import ctr
from .process import run
from .versions import BASE_IMAGES_VERSION, BUILD_SCRIPTS, REPO_ROOT, cache_root

# What the Dockerfiles COPY (see runtime/Dockerfile and operator/Dockerfile).
INPUTS = ("pyproject.toml", "README.md", "runtime", "operator", "devstack")
RUNC = "/usr/sbin/runc"


@dataclass(frozen=True)
class Image:
    name: str
    reference: str
    archive: str


def _images_dir() -> Path:
    return cache_root() / "images"


def storage_args() -> list[str]:
    root = cache_root() / "buildah"
    return ["--root", str(root / "storage"), "--runroot", str(root / "run"), "--storage-driver", "overlay"]


def build_base() -> None:
    result = subprocess.run(
        [str(BUILD_SCRIPTS / "build-base-images.sh"), str(cache_root()), BASE_IMAGES_VERSION], check=False
    )
    if result.returncode != 0:
        raise StackError(f"build-base-images.sh failed (exit {result.returncode})")


def node_base_archives() -> list[Path]:
    """The pause image every pod needs; the node imports it at start."""
    return [_images_dir() / f"pause-{BASE_IMAGES_VERSION}.tar"]


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(
            [
                "git",
                "-C",
                str(REPO_ROOT),
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
                *INPUTS,
            ],
            capture_output=True,
            check=True,
        ).stdout
        return sorted(REPO_ROOT / name for name in out.decode().split("\0") if name)
    except (OSError, subprocess.CalledProcessError):
        files: list[Path] = []
        for item in INPUTS:
            path = REPO_ROOT / item
            files += [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        return sorted(p for p in files if "__pycache__" not in p.parts)


def input_hash(dockerfile: Path) -> str:
    digest = hashlib.sha256()
    for path in [dockerfile, *_tracked_files()]:
        if not path.is_file():
            continue
        digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def _mounts() -> list[str]:
    # pip in the build stage reaches the package index with the host's CA bundle and pip config.
    mounts = []
    for path in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf"):
        if Path(path).exists():
            mounts += ["--volume", f"{path}:{path}:ro"]
    return mounts


@contextlib.contextmanager
def _build_lock(name: str) -> Iterator[None]:
    """One build of ``name`` at a time on this machine: parallel test workers (or checkouts) that
    need the same image wait for the first build and then find its archive cached."""
    _images_dir().mkdir(parents=True, exist_ok=True)
    with open(_images_dir() / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build(name: str) -> Image:
    """Build ``runtime`` or ``operator`` from ``<name>/Dockerfile`` unless its inputs are cached."""
    with _build_lock(name):
        return _build(name)


def _build(name: str) -> Image:
    dockerfile = REPO_ROOT / name / "Dockerfile"
    tag = input_hash(dockerfile)
    reference = f"localhost/smartflow-{name}:{tag}"
    archive = _images_dir() / f"smartflow-{name}-{tag}.tar"
    if archive.exists() and archive.stat().st_size > 0:
        return Image(name=name, reference=reference, archive=str(archive))
    build_base()
    run(
        [
            "buildah",
            *storage_args(),
            "bud",
            "--pull=never",
            "--runtime",
            RUNC,
            "--cgroup-manager",
            "cgroupfs",
            "--network",
            "host",
            "--layers",
            *_mounts(),
            "-f",
            str(dockerfile),
            "-t",
            reference,
            str(REPO_ROOT),
        ],
        what=f"buildah bud {name}",
    )
    partial = archive.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    run(
        ["buildah", *storage_args(), "push", reference, f"docker-archive:{partial}:{reference}"],
        what=f"export {name} image",
    )
    partial.rename(archive)
    _prune(name, keep=reference)
    return Image(name=name, reference=reference, archive=str(archive))


def _prune(name: str, *, keep: str) -> None:
    """Older builds of ``name`` go: their archives (the newest two stay) and buildah's copies."""
    for old in sorted(_images_dir().glob(f"smartflow-{name}-*.tar"), key=lambda p: p.stat().st_mtime)[:-2]:
        old.unlink(missing_ok=True)
    listed = subprocess.run(
        ["buildah", *storage_args(), "images", "--format", "{{.Name}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    stale = [ref for ref in listed if ref.startswith(f"localhost/smartflow-{name}:") and ref != keep]
    if stale:
        subprocess.run(["buildah", *storage_args(), "rmi", *stale], capture_output=True, check=False)
    # Intermediate (build-stage) images left without a name.
    subprocess.run(["buildah", *storage_args(), "rmi", "--prune"], capture_output=True, check=False)


def build_all() -> list[Image]:
    return [build("runtime"), build("operator")]


def import_into_node(archives: list[Path], *, anchor_pid: int, socket: Path) -> None:
    for archive in archives:
        ctr(anchor_pid, socket, "images", "import", str(archive), what=f"import {archive.name} into the node")


def tag_in_node(source: str, target: str, *, anchor_pid: int, socket: Path) -> None:
    """A second name for an image already in the node (rollout tests roll to a new tag)."""
    ctr(anchor_pid, socket, "images", "tag", "--force", source, target, what=f"tag {target}")
