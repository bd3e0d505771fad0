#!/usr/bin/env python3
"""The product image, built without a container engine: the image the Dockerfile describes.

The Dockerfile's final stage is Debian bookworm with python3, python3-venv and ca-certificates, and a
virtualenv at /opt/computedomain made by image/install.sh from the lock's wheels and the project's
wheel. Here the same Debian packages come from mmdebstrap, the same wheels from `pip download` (for
the image's interpreter, not this one) and `pip wheel`, install.sh runs chrooted into that root
filesystem, and umoci writes the two layers and the Dockerfile's config into an OCI archive:

    .work/image/computedomain-operator-<version>.oci.tar   (named localhost/computedomain-operator:<version>)

A build whose inputs (the source tree, the lock, install.sh, this recipe) are unchanged is skipped.
The Debian root filesystem is cached until its package list changes (--refresh-base takes Debian's
updates), the wheels until the lock changes. Timestamps come from SOURCE_DATE_EPOCH (default: the
last commit's time), so a rebuild from the same inputs and the same cached base gives the same digest.

usage: image/build.py [--print-path] [--force] [--refresh-base]
Needs Linux on x86_64 or aarch64, root (mmdebstrap --mode=root, chroot), mmdebstrap and umoci
(tools/host-packages.sh installs them), pip, and on a cold build a Debian mirror and the package index.

From Python (the repository root on sys.path): `from image import build`, then
`build.ensure_image()` returns the archive's path, building it first when stale; `build.image_tag()` is
the name index.json gives it; `build.cannot_build()` says why this machine cannot build it (None when
it can); `build.cache_dir()` holds the archive and every cache.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "image" / "requirements.txt"
INSTALL_SCRIPT = ROOT / "image" / "install.sh"
HOST_PACKAGES = ROOT / "tools" / "host-packages.sh"
WORK = ROOT / ".work" / "image"

NAME = "computedomain-operator"
REGISTRY = "localhost"
# What the wheel is built from: the Dockerfile's COPY lines (and .dockerignore's exceptions).
SOURCES = ("pyproject.toml", "README.md", "operator")
IGNORED_SOURCES = ("__pycache__", "*.pyc", "*.egg-info", ".mypy_cache", ".ruff_cache")

# The Dockerfile's base (debian:bookworm-slim) and its `apt-get install` line.
SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
# bookworm's python3, and its libc6 (the newest manylinux wheels its pip accepts).
PYTHON_VERSION = "3.11"
GLIBC_MINOR = 36
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
# Debian's slim images leave these out (and keep the copyright files); the base here does the same.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/groff/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/linda/*",
    "path-exclude=/usr/share/locale/*",
)
# merged-usr the way Debian's images are (usr-is-merged, not the usrmerge package and its Perl);
# no device nodes in the layer (the runtime provides /dev).
MMDEBSTRAP_OPTIONS = (
    "--mode=root",
    "--variant=minbase",
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    "--skip=output/dev",
    "--format=tar",
)

# The Dockerfile's final stage: what `docker build` records in the image's config.
VENV = "/opt/computedomain"
LABELS = {
    "org.opencontainers.image.title": "computedomain-operator",
    "org.opencontainers.image.description": "ComputeDomain operator: controller, node agent and IMEX daemon",
    "org.opencontainers.image.licenses": "Apache-2.0",
}
ENV = {
    "PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
}
USER = "65532:65532"
WORKDIR = "/"
CMD = ("computedomain-controller", "--help")

# machine -> (OCI architecture, wheel platform tag architecture)
ARCHITECTURES = {"x86_64": ("amd64", "x86_64"), "aarch64": ("arm64", "aarch64")}
REQUIRED_COMMANDS = ("mmdebstrap", "umoci", "unshare", "chroot", "tar")
# Where chroot and friends live for root, whatever PATH the caller had.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Log = Callable[[str], None]


class CannotBuild(RuntimeError):
    """This machine cannot build the image (the message says why)."""


def _stderr(message: str) -> None:
    print(f"image: {message}", file=sys.stderr, flush=True)


def version() -> str:
    """The project's version, from pyproject.toml."""
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def reference() -> str:
    """The image's full name, as index.json records it."""
    return f"{REGISTRY}/{NAME}:{version()}"


def archive_path() -> Path:
    """Where the OCI archive is (or will be): .work/image/computedomain-operator-<version>.oci.tar."""
    return WORK / f"{NAME}-{version()}.oci.tar"


def image_tag() -> str:
    """The image's full name, as the archive's index.json records it (what an import is tagged)."""
    return reference()


def cache_dir() -> Path:
    """The folder of the archive and the build's caches (root filesystem, wheels)."""
    return WORK


def ensure_image() -> Path:
    """The archive's path, after building it when it is missing or its inputs changed (see build())."""
    return build()


def _stamp_path() -> Path:
    return archive_path().with_suffix(".json")


def machine() -> str:
    return platform.machine()


def platform_tags(arch: str) -> list[str]:
    """Every manylinux tag bookworm's python3 accepts on `arch` (wheel spelling), newest first."""
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(GLIBC_MINOR, 4, -1)]
    legacy = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}
    return tags + [f"{alias}_{arch}" for alias, minor in legacy.items() if arch == "x86_64" or minor >= 17]


def target_options(arch: str) -> list[str]:
    """pip options that choose wheels for the image's interpreter on `arch` instead of the running one."""
    options = ["--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp"]
    options += ["--abi", "cp" + PYTHON_VERSION.replace(".", "")]
    for tag in platform_tags(arch):
        options += ["--platform", tag]
    return options


def _sources_entries(text: str) -> Iterator[tuple[str, str]]:
    """(suite, URI) of each `deb` entry of a deb822 .sources file."""
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" in fields.get("types", "").split() and fields.get("uris"):
            for suite in fields.get("suites", "").split():
                yield suite, fields["uris"].split()[0]


def _list_entries(text: str) -> Iterator[tuple[str, str]]:
    """(suite, URI) of each `deb` line of a one-line-style sources.list."""
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words[:1] != ["deb"]:
            continue
        words = words[1:]
        if words and words[0].startswith("["):
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2:
            yield words[1], words[0]


def apt_sources(etc: Path = Path("/etc/apt")) -> list[str]:
    """The suite, its updates and its security suite, from the mirrors this machine's apt uses."""
    found: dict[str, str] = {}
    files = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file() or path.suffix not in (".list", ".sources"):
            continue
        read = _sources_entries if path.suffix == ".sources" else _list_entries
        for suite, uri in read(path.read_text(errors="replace")):
            if uri.startswith(("http://", "https://")):
                found.setdefault(suite, uri.rstrip("/"))
    main = found.get(SUITE, DEFAULT_MIRROR)
    updates = found.get(f"{SUITE}-updates", main)
    security = found.get(f"{SUITE}-security", DEFAULT_SECURITY_MIRROR)
    return [
        f"deb {main} {SUITE} main",
        f"deb {updates} {SUITE}-updates main",
        f"deb {security} {SUITE}-security main",
    ]


def _digest(*parts: bytes) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(len(part).to_bytes(8, "big"))
        hasher.update(part)
    return hasher.hexdigest()


def base_key(sources: list[str]) -> str:
    """What the Debian root filesystem depends on: its packages, options, mirrors and architecture."""
    recipe = {
        "suite": SUITE,
        "packages": sorted(PACKAGES),
        "dpkg": DPKG_OPTIONS,
        "mmdebstrap": MMDEBSTRAP_OPTIONS,
        "sources": sources,
        "machine": machine(),
    }
    return _digest(json.dumps(recipe, sort_keys=True).encode())[:16]


def wheels_key() -> str:
    """What the downloaded wheels depend on: the lock and the interpreter they are chosen for."""
    return _digest(LOCK.read_bytes(), json.dumps(target_options(ARCHITECTURES[machine()][1])).encode())[:16]


def _ignored(name: str) -> bool:
    return any(Path(name).match(pattern) for pattern in IGNORED_SOURCES)


def source_files(root: Path = ROOT) -> list[Path]:
    """The files the project's wheel is built from, relative to `root`, sorted."""
    files: list[Path] = []
    for source in SOURCES:
        path = root / source
        if path.is_file():
            files.append(Path(source))
            continue
        for directory, subdirectories, names in os.walk(path):
            subdirectories[:] = sorted(name for name in subdirectories if not _ignored(name))
            files.extend(
                (Path(directory) / name).relative_to(root) for name in sorted(names) if not _ignored(name)
            )
    return sorted(files)


def source_digest(root: Path = ROOT) -> str:
    """A digest of the source tree the wheel is built from (names, contents, executable bits)."""
    parts: list[bytes] = []
    for relative in source_files(root):
        path = root / relative
        parts += [str(relative).encode(), b"x" if os.access(path, os.X_OK) else b"-", path.read_bytes()]
    return _digest(*parts)


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH when set, else the last commit's time (0 outside a git checkout)."""
    if os.environ.get("SOURCE_DATE_EPOCH", "").isdigit():
        return int(os.environ["SOURCE_DATE_EPOCH"])
    with contextlib.suppress(OSError, subprocess.CalledProcessError, ValueError):
        result = subprocess.run(
            ["git", "-C", str(ROOT), "log", "-1", "--format=%ct"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return int(result.stdout.strip())
    return 0


def inputs_digest(sources: list[str] | None = None) -> str:
    """Everything the archive depends on: unchanged means the archive on disk is this build's."""
    recipe = Path(__file__).resolve()
    apt = apt_sources() if sources is None else sources
    return _digest(
        recipe.read_bytes(),
        INSTALL_SCRIPT.read_bytes(),
        LOCK.read_bytes(),
        source_digest().encode(),
        base_key(apt).encode(),
        str(source_date_epoch()).encode(),
    )


def cannot_build(install: bool = True) -> str | None:
    """Why this machine cannot build the image, or None. With `install`, missing Debian packages are
    installed first (tools/host-packages.sh), as `make image` does."""
    if sys.platform != "linux":
        return f"needs Linux (this is {sys.platform})"
    if machine() not in ARCHITECTURES:
        return f"needs x86_64 or aarch64 (this is {machine()})"
    if os.geteuid() != 0:
        return "needs root (mmdebstrap --mode=root, chroot into the image's root filesystem)"
    if importlib.util.find_spec("pip") is None:
        return f"needs pip in {sys.executable} (make venv)"
    missing = [command for command in REQUIRED_COMMANDS if not _which(command)]
    if missing and install:
        result = subprocess.run([str(HOST_PACKAGES)], capture_output=True, text=True, check=False)
        missing = [command for command in REQUIRED_COMMANDS if not _which(command)]
        if missing and result.returncode != 0:
            return f"missing {', '.join(missing)}: {result.stderr.strip() or result.stdout.strip()}"
    if missing:
        return f"missing {', '.join(missing)} (tools/host-packages.sh installs them)"
    return None


def _which(command: str) -> str | None:
    return shutil.which(command, path=os.environ.get("PATH", "") + ":" + SYSTEM_PATH)


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """One build at a time per work folder (make image and a test session may overlap)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(command: list[str], log_file: Path, env: dict[str, str] | None = None) -> None:
    """Run `command` with its output in `log_file`; on failure the error carries the log's tail."""
    executable = _which(command[0]) or command[0]
    with log_file.open("ab") as output:
        output.write(f"$ {' '.join(command)}\n".encode())
        output.flush()
        result = subprocess.run(
            [executable, *command[1:]], stdout=output, stderr=subprocess.STDOUT, env=env, check=False
        )
    if result.returncode != 0:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{command[0]} failed (exit {result.returncode}); {log_file}:\n{tail}")


def _tar_options(epoch: int) -> list[str]:
    # Fixed owners, modes and mtimes, sorted names, no atime/ctime or PID-named pax headers: the same
    # files give the same bytes.
    return [
        "--sort=name",
        f"--mtime=@{epoch}",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "--format=posix",
        "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
    ]


def _base(sources: list[str], epoch: int, refresh: bool, log: Log, logs: Path) -> Path:
    """The Debian root filesystem as a tar (the image's first layer), cached per base_key()."""
    tarball = WORK / f"base-{base_key(sources)}.tar"
    if tarball.exists() and not refresh:
        return tarball
    for old in WORK.glob("base-*.tar"):
        old.unlink()
    log(f"Debian {SUITE} root filesystem: {' '.join(PACKAGES)} (mmdebstrap, about 1-2 minutes)")
    started = time.monotonic()
    partial = WORK / "base.partial"
    command = ["unshare", "--mount", "--propagation", "private", "mmdebstrap", *MMDEBSTRAP_OPTIONS]
    command += [f"--include={','.join(PACKAGES)}", *(f"--dpkgopt={option}" for option in DPKG_OPTIONS)]
    command += [SUITE, str(partial), *sources]
    env = {**os.environ, "PATH": SYSTEM_PATH, "SOURCE_DATE_EPOCH": str(epoch), "LC_ALL": "C.UTF-8"}
    _run(command, logs / "mmdebstrap.log", env)
    partial.rename(tarball)
    log(f"root filesystem {tarball.stat().st_size / 1e6:.1f} MB in {time.monotonic() - started:.1f} s")
    return tarball


def _wheels(log: Log, logs: Path) -> Path:
    """A wheel for every pin of the lock, for the image's interpreter, cached per wheels_key()."""
    directory = WORK / f"wheels-{wheels_key()}"
    if (directory / ".complete").exists():
        return directory
    for old in WORK.glob("wheels-*"):
        shutil.rmtree(old)
    log(f"wheels of {LOCK.relative_to(ROOT)} for CPython {PYTHON_VERSION} {machine()}")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--quiet"]
    command += ["--requirement", str(LOCK), "--dest", str(directory)]
    command += target_options(ARCHITECTURES[machine()][1])
    _run(command, logs / "pip-download.log")
    (directory / ".complete").touch()
    return directory


def _project_wheel(scratch: Path, epoch: int, logs: Path) -> Path:
    """The project's wheel, built from a copy of the sources the Dockerfile copies (no build debris here)."""
    source = scratch / "src"
    for relative in source_files():
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, source / relative)
    dist = scratch / "dist"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(dist)]
    _run([*command, str(source)], logs / "pip-wheel.log", {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)})
    (wheel,) = dist.glob("*.whl")
    return wheel


def _install(base: Path, wheels: Path, project: Path, scratch: Path, epoch: int, logs: Path) -> Path:
    """Run install.sh chrooted into the base; returns the tar of what it made (the second layer)."""
    rootfs = scratch / "rootfs"
    rootfs.mkdir()
    _run(["tar", "--extract", "--file", str(base), "--directory", str(rootfs)], logs / "install.log")
    staging = rootfs / "tmp" / "image-build"
    (staging / "wheels").mkdir(parents=True)
    for wheel in [*wheels.glob("*.whl"), project]:
        shutil.copy2(wheel, staging / "wheels" / wheel.name)
    shutil.copy2(LOCK, staging / "requirements.txt")
    shutil.copy2(INSTALL_SCRIPT, staging / "install.sh")
    inside = "/tmp/image-build"
    env = {"PATH": SYSTEM_PATH, "HOME": "/root", "LANG": "C.UTF-8", "SOURCE_DATE_EPOCH": str(epoch)}
    command = ["chroot", str(rootfs), "/bin/sh", f"{inside}/install.sh", f"{inside}/wheels"]
    _run([*command, f"{inside}/requirements.txt"], logs / "install.log", env)
    # The layer is the virtualenv alone, as the Dockerfile's RUN leaves it (its inputs were bind mounts).
    layer = scratch / "app.tar"
    command = ["tar", "--create", "--file", str(layer), "--directory", str(rootfs), *_tar_options(epoch)]
    _run([*command, VENV.lstrip("/")], logs / "install.log")
    return layer


def _assemble(base: Path, app: Path, scratch: Path, epoch: int, logs: Path) -> Path:
    """The OCI layout: both layers and the Dockerfile's config, named with the full reference."""
    layout = scratch / "oci"
    image = f"{layout}:{version()}"
    created = datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    oci_arch = ARCHITECTURES[machine()][0]
    log_file = logs / "umoci.log"
    _run(["umoci", "init", "--layout", str(layout)], log_file)
    _run(["umoci", "new", "--image", image], log_file)
    layers = {
        base: f"Debian {SUITE} minbase with {' '.join(PACKAGES)}",
        app: f"image/install.sh: {VENV} from image/requirements.txt and {NAME} {version()}",
    }
    for layer, created_by in layers.items():
        history = ["--history.created", created, "--history.created_by", created_by]
        _run(["umoci", "raw", "add-layer", "--image", image, *history, str(layer)], log_file)
    config = ["umoci", "config", "--image", image, "--no-history", "--created", created]
    config += ["--architecture", oci_arch, "--os", "linux", "--config.user", USER]
    config += ["--config.workingdir", WORKDIR]
    for key, value in ENV.items():
        config += ["--config.env", f"{key}={value}"]
    for key, value in LABELS.items():
        config += ["--config.label", f"{key}={value}"]
    for word in CMD:
        config += ["--config.cmd", word]
    _run(config, log_file)
    _run(["umoci", "gc", "--layout", str(layout)], log_file)
    # umoci names the tag only; importers (ctr images import) keep the name index.json gives.
    index_file = layout / "index.json"
    index = json.loads(index_file.read_text())
    (manifest,) = index["manifests"]
    manifest["annotations"] = {"org.opencontainers.image.ref.name": reference()}
    index_file.write_text(json.dumps(index, separators=(",", ":")))
    archive = scratch / "image.oci.tar"
    command = ["tar", "--create", "--file", str(archive), "--directory", str(layout), *_tar_options(epoch)]
    _run([*command, "--mode=u=rwX,go=rX", "oci-layout", "index.json", "blobs"], log_file)
    return archive


def manifest_digest(index: dict[str, Any]) -> str:
    """The digest of the one manifest of an OCI index."""
    (manifest,) = index["manifests"]
    return str(manifest["digest"])


def _summary(record: dict[str, object], how: str, seconds: float) -> str:
    size = int(str(record["size"]))
    path = archive_path().relative_to(ROOT) if archive_path().is_relative_to(ROOT) else archive_path()
    return (
        f"{reference()}  manifest {record['digest']}  {size / 1e6:.1f} MB ({size} bytes)  {path}"
        f"  ({how} in {seconds:.1f} s)"
    )


def _up_to_date(inputs: str) -> dict[str, object] | None:
    archive, stamp = archive_path(), _stamp_path()
    if not archive.exists() or not stamp.exists():
        return None
    with contextlib.suppress(ValueError):
        record: dict[str, object] = json.loads(stamp.read_text())
        if record.get("inputs") == inputs and record.get("size") == archive.stat().st_size:
            return record
    return None


def build(force: bool = False, refresh_base: bool = False, log: Log = _stderr) -> Path:
    """The OCI archive's path, after building it if its inputs changed (or `force`). Raises
    CannotBuild where this machine cannot build it, RuntimeError when a step fails."""
    started = time.monotonic()
    with _exclusive(WORK / ".lock"):
        sources = apt_sources()
        inputs = inputs_digest(sources)
        record = None if force or refresh_base else _up_to_date(inputs)
        if record is not None:
            log(_summary(record, "up to date, checked", time.monotonic() - started))
            return archive_path()
        reason = cannot_build()
        if reason is not None:
            raise CannotBuild(reason)
        epoch = source_date_epoch()
        logs = WORK / "logs"
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir(parents=True)
        for stale in WORK.glob("scratch-*"):
            shutil.rmtree(stale)
        scratch = WORK / f"scratch-{os.getpid()}"
        scratch.mkdir()
        try:
            base = _base(sources, epoch, refresh_base, log, logs)
            wheels = _wheels(log, logs)
            log(f"{NAME} {version()}: wheel, install.sh chrooted into the root filesystem, OCI layout")
            project = _project_wheel(scratch, epoch, logs)
            app = _install(base, wheels, project, scratch, epoch, logs)
            archive = _assemble(base, app, scratch, epoch, logs)
            digest = manifest_digest(json.loads((scratch / "oci" / "index.json").read_text()))
            archive.rename(archive_path())
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        record = {"inputs": inputs, "digest": digest, "size": archive_path().stat().st_size}
        record["reference"] = reference()
        _stamp_path().write_text(json.dumps(record, indent=2) + "\n")
        log(_summary(record, "built", time.monotonic() - started))
        return archive_path()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--print-path",
        action="store_true",
        help="print only the archive's path on stdout (after building it when stale)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when no input changed")
    parser.add_argument(
        "--refresh-base",
        action="store_true",
        help="make the Debian root filesystem again too (takes Debian's updates)",
    )
    arguments = parser.parse_args(argv)
    try:
        path = build(force=arguments.force, refresh_base=arguments.refresh_base)
    except CannotBuild as reason:
        _stderr(f"cannot build the image here: {reason}")
        return 2
    except RuntimeError as failure:
        _stderr(str(failure))
        return 1
    if arguments.print_path:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
