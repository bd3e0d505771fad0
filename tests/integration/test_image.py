"""The product image built without a container engine (`make image`'s own code) is the image the
Dockerfile describes: Debian bookworm's python3, exactly the lock's distributions, the entry points,
and the final stage's user, labels, environment, command and working directory.

Skips, with the reason, where the image cannot be built here; fails instead where CD_REQUIRE_KUBELETS=1
(as in CI, which runs as root on a machine that can build it)."""

from __future__ import annotations

import io
import json
import os
import platform
import posixpath
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name

from support.imagerecipe import build, final_config, global_args, instructions, lock_pins, pyproject
from support.realnodes import REQUIRE_KUBELETS

VENV = "/opt/computedomain"
SITE_PACKAGES = f"{VENV}/lib/python{build.PYTHON_VERSION}/site-packages"
OCI_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64"}


def wanted(path: str) -> bool:
    """Files whose content the checks read (everything else is listed, not kept)."""
    return (
        path in ("/usr/lib/os-release", "/var/lib/dpkg/status", f"{VENV}/pyvenv.cfg")
        or path.startswith(f"{VENV}/bin/")
        or path.endswith((".dist-info/METADATA", ".dist-info/WHEEL"))
        or path.endswith(".pyc")
    )


@dataclass
class Layer:
    """One layer: its members by absolute path, and the kept contents (pycs: their 16-byte header)."""

    members: dict[str, tarfile.TarInfo] = field(default_factory=dict)
    contents: dict[str, bytes] = field(default_factory=dict)


@dataclass
class OciImage:
    """The image of an OCI archive: index, manifest, config, each layer and the filesystem they make."""

    archive: Path
    index: dict[str, Any]
    manifest: dict[str, Any]
    config: dict[str, Any]
    layers: list[Layer]
    files: dict[str, tarfile.TarInfo] = field(default_factory=dict)

    @classmethod
    def read(cls, archive: Path) -> OciImage:
        with tarfile.open(archive) as outer:

            def blob(digest: str) -> bytes:
                member = outer.extractfile(f"blobs/{digest.replace(':', '/')}")
                assert member is not None, digest
                return member.read()

            index_file = outer.extractfile("index.json")
            assert index_file is not None
            index = json.loads(index_file.read())
            (descriptor,) = index["manifests"]
            manifest = json.loads(blob(descriptor["digest"]))
            config = json.loads(blob(manifest["config"]["digest"]))
            layers = [read_layer(blob(layer["digest"])) for layer in manifest["layers"]]
        files: dict[str, tarfile.TarInfo] = {}
        for layer in layers:
            assert not [path for path in layer.members if "/.wh." in path], "no layer deletes anything"
            files.update(layer.members)
        return cls(archive, index, manifest, config, layers, files)

    def content(self, path: str) -> bytes:
        """A kept file's content (see wanted()), links followed."""
        resolved = self.resolve(path)
        for layer in reversed(self.layers):
            if resolved in layer.contents:
                return layer.contents[resolved]
        raise KeyError(path)

    def resolve(self, path: str) -> str:
        """`path` with every symbolic link in it followed, inside the image."""
        pending = [part for part in path.split("/") if part]
        resolved = "/"
        links = 0
        while pending:
            candidate = posixpath.join(resolved, pending.pop(0))
            member = self.files.get(candidate)
            if member is None or not member.issym():
                resolved = candidate
                continue
            links += 1
            assert links <= 40, f"too many links in {path}"
            target = posixpath.normpath(posixpath.join(resolved, member.linkname))
            pending = [part for part in target.split("/") if part] + pending
            resolved = "/"
        return resolved


def read_layer(data: bytes) -> Layer:
    layer = Layer()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|gz") as stream:
        for member in stream:
            path = "/" + member.name.removeprefix("./").rstrip("/")
            layer.members[path] = member
            if member.isfile() and wanted(path):
                handle = stream.extractfile(member)
                assert handle is not None
                layer.contents[path] = handle.read(16) if path.endswith(".pyc") else handle.read()
    return layer


@pytest.fixture(scope="session")
def image() -> OciImage:
    """The product image, built (or found up to date) through `make image`'s code, read once."""
    reason = build.cannot_build()
    if reason is not None:
        if os.environ.get(REQUIRE_KUBELETS, "") not in ("", "0"):
            pytest.fail(f"{REQUIRE_KUBELETS} is set, but the image cannot be built here: {reason}")
        pytest.skip(f"cannot build the image here: {reason}")
    return OciImage.read(build.ensure_image())


@pytest.fixture(scope="session")
def rootfs(image: OciImage, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's layers unpacked in order, as a runtime would see its root filesystem."""
    root = tmp_path_factory.mktemp("image-rootfs")
    with tarfile.open(image.archive) as outer:
        for layer in image.manifest["layers"]:
            blob = outer.extractfile(f"blobs/{layer['digest'].replace(':', '/')}")
            assert blob is not None
            subprocess.run(
                ["tar", "--extract", "--gzip", "--directory", str(root)], input=blob.read(), check=True
            )
    return root


def distributions(image: OciImage) -> dict[str, str]:
    """Canonical name -> version of every distribution in the image's virtualenv."""
    found: dict[str, str] = {}
    for path in image.files:
        if path.startswith(SITE_PACKAGES) and path.endswith(".dist-info/METADATA"):
            headers = HeaderParser().parsestr(image.content(path).decode())
            found[canonicalize_name(headers["Name"])] = headers["Version"]
    return found


def dpkg_version(image: OciImage, package: str) -> str | None:
    for paragraph in image.content("/var/lib/dpkg/status").decode().split("\n\n"):
        fields: dict[str, str] = dict(re.findall(r"^([A-Za-z-]+): (.*)$", paragraph, re.MULTILINE))
        if fields.get("Package") == package and fields.get("Status") == "install ok installed":
            return fields["Version"]
    return None


# --- identity and config ------------------------------------------------------------------------------


def test_archive_carries_the_full_image_name(image: OciImage) -> None:
    (descriptor,) = image.index["manifests"]
    name = f"localhost/computedomain-operator:{pyproject()['version']}"
    assert descriptor["annotations"]["org.opencontainers.image.ref.name"] == name
    assert build.image_tag() == name


def test_config_is_the_dockerfile_final_stage(image: OciImage) -> None:
    expected = final_config()
    config = image.config["config"]
    assert config.get("User") == expected.user
    assert config.get("Labels") == expected.labels
    assert dict(entry.split("=", 1) for entry in config.get("Env", [])) == expected.env
    assert config.get("Cmd") == expected.cmd
    assert config.get("WorkingDir") == expected.workdir
    assert config.get("Entrypoint") == expected.entrypoint
    assert image.config["os"] == "linux"
    assert image.config["architecture"] == OCI_ARCHITECTURES[platform.machine()]


def test_layers_match_the_config(image: OciImage) -> None:
    assert len(image.manifest["layers"]) == len(image.config["rootfs"]["diff_ids"]) == 2
    assert all(layer["mediaType"].endswith("tar+gzip") for layer in image.manifest["layers"])
    application = image.layers[-1]
    outside = [path for path in application.members if not path.startswith(VENV)]
    assert outside == [], "the install step leaves only the virtualenv behind"


# --- the interpreter ----------------------------------------------------------------------------------


def test_python_is_debian_bookworm_python3_as_the_dockerfile_base(image: OciImage) -> None:
    base = global_args(instructions())["BASE_IMAGE"]
    suite = base.split(":", 1)[1].removesuffix("-slim")
    release = dict(re.findall(r'^(\w+)="?([^"\n]*)"?$', image.content("/etc/os-release").decode(), re.M))
    assert release["VERSION_CODENAME"] == suite == build.SUITE
    version = dpkg_version(image, "python3")
    assert version is not None
    assert version.startswith(f"{build.PYTHON_VERSION}.")
    assert image.files[image.resolve(f"/usr/bin/python{build.PYTHON_VERSION}")].isfile()
    assert image.resolve("/usr/bin/python3") == f"/usr/bin/python{build.PYTHON_VERSION}"
    venv = dict(line.split(" = ", 1) for line in image.content(f"{VENV}/pyvenv.cfg").decode().splitlines())
    assert venv["home"] == "/usr/bin"
    assert venv["executable"] == f"/usr/bin/python{build.PYTHON_VERSION}"
    assert venv["version"] == version.split("-")[0]
    assert venv["include-system-site-packages"] == "false"


def test_extension_modules_are_built_for_that_python(image: OciImage) -> None:
    tag = f"cpython-{build.PYTHON_VERSION.replace('.', '')}-{platform.machine()}-linux-gnu"
    extensions = [path for path in image.files if path.startswith(SITE_PACKAGES) and path.endswith(".so")]
    assert extensions, "the lock has compiled distributions (pydantic-core, grpcio, ...)"
    wrong = [path for path in extensions if tag not in path and ".abi3." not in path]
    assert wrong == []


def test_shell_and_python_for_the_chart_and_the_doubles(image: OciImage) -> None:
    files = image.files
    for command in ("/bin/sh", "/usr/bin/env", "/usr/bin/python3"):
        resolved = image.resolve(command)
        assert resolved in files, command
        assert files[resolved].isfile(), command
        assert files[resolved].mode & 0o111, command


# --- the virtualenv -------------------------------------------------------------------------------------


def test_distributions_are_exactly_the_lock_and_the_project(image: OciImage) -> None:
    expected = {key: pin.version for key, pin in lock_pins().items()}
    expected[canonicalize_name(pyproject()["name"])] = pyproject()["version"]
    assert distributions(image) == expected


def test_no_test_dependency_and_no_installer(image: OciImage) -> None:
    found = distributions(image)
    assert "kubernetes-asyncio" not in found
    assert not [path for path in image.files if "kubernetes_asyncio" in path]
    assert "pip" not in found, "nothing installs packages at run time"
    assert "setuptools" not in found


def test_entry_points_run_their_modules(image: OciImage) -> None:
    files = image.files
    scripts: dict[str, str] = pyproject()["scripts"]
    assert set(scripts) == {
        "computedomain-controller",
        "computedomain-agent",
        "compute-domain-daemon",
        "computedomain-kubelet-plugin",
        "kubectl-computedomain",
    }
    for name, target in scripts.items():
        path = f"{VENV}/bin/{name}"
        assert path in files, f"{name} is not in {VENV}/bin"
        assert files[path].mode & 0o111, f"{name} is not executable"
        text = image.content(path).decode()
        assert text.startswith(f"#!{VENV}/bin/python\n"), text.splitlines()[0]
        module, _, function = target.partition(":")
        assert f"from {module} import {function}\n" in text, text


def test_bytecode_is_compiled_and_independent_of_mtimes(image: OciImage) -> None:
    package = f"{SITE_PACKAGES}/computedomain"
    sources = [path for path in image.files if path.startswith(package) and path.endswith(".py")]
    assert sources
    suffix = f".cpython-{build.PYTHON_VERSION.replace('.', '')}.pyc"
    for source in sources:
        directory, name = posixpath.split(source)
        header = image.content(f"{directory}/__pycache__/{name.removesuffix('.py')}{suffix}")
        assert int.from_bytes(header[4:8], "little") == 0b01, f"{source}: not an unchecked-hash pyc"
    dated = [
        path for path, data in image.layers[-1].contents.items() if path.endswith(".pyc") and data[4] == 0
    ]
    assert dated == [], "mtime-stamped pycs are invalid once the layer's mtimes are fixed"


# --- the image runs -------------------------------------------------------------------------------------


def chroot_runner(rootfs: Path, image: OciImage) -> Callable[..., subprocess.CompletedProcess[str]]:
    config = image.config["config"]
    env = dict(entry.split("=", 1) for entry in config["Env"])
    chroot = shutil.which("chroot", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    assert chroot is not None

    def run(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [chroot, f"--userspec={config['User']}", str(rootfs), *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run


def test_entry_points_start_as_the_image_user(image: OciImage, rootfs: Path) -> None:
    run = chroot_runner(rootfs, image)
    for name in pyproject()["scripts"]:
        result = run(name, "--help")
        assert result.returncode == 0, f"{name}: {result.stderr}"
        assert result.stdout.startswith(f"usage: {name}"), result.stdout


def test_imex_double_and_init_container_can_run(image: OciImage, rootfs: Path) -> None:
    run = chroot_runner(rootfs, image)
    shell = run("sh", "-c", "id -u; /usr/bin/env python3 -c 'import sys; print(sys.version_info[:2])'")
    assert shell.returncode == 0, shell.stderr
    user, version = shell.stdout.split("\n")[:2]
    assert user == image.config["config"]["User"].split(":")[0]
    assert version == str(tuple(int(part) for part in build.PYTHON_VERSION.split(".")))
