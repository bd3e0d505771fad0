"""The Dockerfile and the engine-less image build (image/build.py) describe the same image; the lock pins
exactly the runtime dependencies. Pure checks: nothing is built or downloaded."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from support.imagerecipe import (
    DOCKERIGNORE,
    INSTALL_SCRIPT,
    LOCK,
    REPO,
    Instruction,
    apt_packages,
    build,
    final_config,
    global_args,
    instructions,
    lock_pins,
    pyproject,
    stages,
)

# The interpreter the lock is resolved for: Debian bookworm's python3 on the build machine's kind.
IMAGE_MARKERS = {
    "python_version": build.PYTHON_VERSION,
    "python_full_version": f"{build.PYTHON_VERSION}.2",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "extra": "",
}


# --- the Dockerfile against the recipe ----------------------------------------------------------------


def test_every_stage_starts_from_debian_slim_of_the_recipe_suite() -> None:
    found = instructions()
    assert global_args(found) == {"BASE_IMAGE": f"debian:{build.SUITE}-slim"}
    assert [stage[0].arguments.split()[0] for stage in stages(found)] == ["${BASE_IMAGE}"] * 2


def test_every_stage_installs_the_recipe_packages() -> None:
    for stage in stages(instructions()):
        assert apt_packages(stage) == set(build.PACKAGES), stage[0]
        apt = [i.arguments for i in stage if i.keyword == "RUN" and "apt-get install" in i.arguments]
        assert all("--no-install-recommends" in run for run in apt), apt


def test_final_stage_config_is_the_recipe_config() -> None:
    config = final_config()
    assert config.labels == build.LABELS
    assert config.env == build.ENV
    assert config.user == build.USER == "65532:65532"
    assert config.workdir == build.WORKDIR == "/"
    assert config.cmd == list(build.CMD) == ["computedomain-controller", "--help"]
    assert config.entrypoint is None, "the chart and the controller set each container's command"


def test_path_finds_the_virtualenv_first() -> None:
    path = final_config().env["PATH"].split(":")
    assert path[0] == f"{build.VENV}/bin"
    assert {"/usr/bin", "/bin"} <= set(path), "sh and python3 for the chart's init container and the doubles"


def test_no_bytecode_writes_and_unbuffered_logs() -> None:
    env = final_config().env
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"


def test_final_stage_installs_with_install_script_from_the_lock_and_wheels_only() -> None:
    final = stages(instructions())[-1]
    runs = [i.arguments for i in final if i.keyword == "RUN" and "install.sh" in i.arguments]
    assert len(runs) == 1, runs
    (run,) = runs
    assert "--mount=type=bind,from=build,source=/wheels,target=/wheels" in run
    assert "--mount=type=bind,source=image,target=/image" in run
    assert run.endswith('["sh", "/image/install.sh", "/wheels", "/image/requirements.txt"]')
    copies = [i for i in final if i.keyword in ("COPY", "ADD")]
    assert copies == [], "the final stage receives no source tree"


def test_wheels_stage_downloads_exactly_the_lock_and_builds_the_project() -> None:
    first = stages(instructions())[0]
    runs = [i.arguments for i in first if i.keyword == "RUN"]
    download = next(run for run in runs if '"download"' in run)
    for option in ('"--only-binary=:all:"', '"--no-deps"', '"--require-hashes"', '"image/requirements.txt"'):
        assert option in download
    assert any('"wheel"' in run and '"--no-deps"' in run for run in runs)
    copied = {word for i in first if i.keyword == "COPY" for word in i.arguments.split()[:-1]}
    assert {"image/requirements.txt", "pyproject.toml", "README.md", "operator/"} <= copied


def test_the_wheel_is_built_from_what_the_dockerfile_copies() -> None:
    first = stages(instructions())[0]
    copied: set[str] = set()
    for instruction in first:
        if instruction.keyword == "COPY":
            copied.update(word.rstrip("/") for word in instruction.arguments.split()[:-1])
    assert set(build.SOURCES) == copied - {"image/requirements.txt"}


def test_dockerignore_admits_every_build_input() -> None:
    patterns = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    for source in (*build.SOURCES, "image/requirements.txt", "image/install.sh"):
        assert f"!{source}" in patterns or f"!{source}/" in patterns, source


def test_install_script_makes_the_recipe_virtualenv_offline_from_hashes() -> None:
    script = INSTALL_SCRIPT.read_text()
    assert f"venv={build.VENV}\n" in script
    installs = [line for line in script.splitlines() if line.startswith("run_pip install")]
    assert len(installs) == 2
    assert all("--no-index" in line and "--no-deps" in line for line in installs)
    assert "--require-hashes" in installs[0]
    assert '-r "$lock"' in installs[0]
    assert "--without-pip" in script, "no installer in the image"
    assert "--invalidation-mode unchecked-hash" in script
    shell = shutil.which("sh")
    assert shell is not None
    subprocess.run([shell, "-n", str(INSTALL_SCRIPT)], check=True)


def test_instructions_parse_continuations_and_exec_forms() -> None:
    text = 'FROM x AS a\nLABEL a="b c" \\\n      d=e\n# comment\nCMD ["p", "--help"]\n'
    assert instructions(text) == [
        Instruction("FROM", "x AS a"),
        Instruction("LABEL", 'a="b c" d=e'),
        Instruction("CMD", '["p", "--help"]'),
    ]
    config = final_config(instructions(text))
    assert config.labels == {"a": "b c", "d": "e"}
    assert config.cmd == ["p", "--help"]


# --- the lock --------------------------------------------------------------------------------------


def test_lock_pins_every_runtime_dependency_at_its_pyproject_version() -> None:
    pins = lock_pins()
    for text in pyproject()["dependencies"]:
        requirement = Requirement(text)
        pin = pins.get(canonicalize_name(requirement.name))
        assert pin is not None, f"{requirement.name} is not in {LOCK.name}"
        assert requirement.specifier.contains(pin.version), f"{pin.name}=={pin.version} against {text}"


def test_lock_holds_no_test_or_lint_dependency() -> None:
    pins = lock_pins()
    assert "kubernetes-asyncio" not in pins
    runtime = {canonicalize_name(Requirement(text).name) for text in pyproject()["dependencies"]}
    for extra, requirements in pyproject()["optional-dependencies"].items():
        for text in requirements:
            name = canonicalize_name(Requirement(text).name)
            assert name in runtime or name not in pins, f"{name} (extra {extra}) is in {LOCK.name}"


def test_every_pin_is_exact_and_hashed() -> None:
    pins = lock_pins()
    assert len(pins) >= len(pyproject()["dependencies"])
    for pin in pins.values():
        assert re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", pin.version), pin
        assert pin.hashes, f"{pin.name} has no hash"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", digest) for digest in pin.hashes), pin


def test_lock_is_closed_under_dependencies() -> None:
    """Each pin's own requirements (as installed here at the same version) are pinned too."""
    pins = lock_pins()
    checked = set()
    for key, pin in pins.items():
        try:
            installed = metadata.distribution(pin.name)
        except metadata.PackageNotFoundError:
            continue
        if installed.version != pin.version:
            continue
        checked.add(key)
        for text in installed.requires or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate(IMAGE_MARKERS):
                continue
            needed = pins.get(canonicalize_name(requirement.name))
            assert needed is not None, f"{pin.name} needs {text}, which {LOCK.name} lacks"
            assert requirement.specifier.contains(needed.version, prereleases=True), (
                f"{pin.name} needs {text}; {LOCK.name} pins {needed.version}"
            )
    direct = {canonicalize_name(Requirement(text).name) for text in pyproject()["dependencies"]}
    assert direct <= checked, f"not installed here at the locked version: {sorted(direct - checked)}"


def test_lock_says_how_to_regenerate_it() -> None:
    header = LOCK.read_text().split("\n\n", 1)[0]
    assert "image/lock.py" in header
    assert "pyproject.toml" in header


# --- the engine-less build's own rules -------------------------------------------------------------


def test_wheels_are_chosen_for_bookworm_python() -> None:
    options = build.target_options("x86_64")
    assert options[options.index("--python-version") + 1] == "3.11"
    assert options[options.index("--abi") + 1] == "cp311"
    tags = build.platform_tags("x86_64")
    assert tags[0] == "manylinux_2_36_x86_64", "bookworm's glibc is 2.36: nothing newer"
    assert {"manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert "manylinux1_aarch64" not in build.platform_tags("aarch64")


def test_archive_is_named_after_the_project_version() -> None:
    version = pyproject()["version"]
    assert build.image_tag() == f"localhost/computedomain-operator:{version}"
    assert build.archive_path() == REPO / ".work" / "image" / f"computedomain-operator-{version}.oci.tar"
    assert build.archive_path().parent == build.cache_dir()


def source_tree(root: Path) -> None:
    (root / "operator" / "pkg").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\n")
    (root / "README.md").write_text("readme\n")
    (root / "operator" / "pkg" / "mod.py").write_text("x = 1\n")


def test_source_digest_follows_sources_only(tmp_path: Path) -> None:
    source_tree(tmp_path)
    first = build.source_digest(tmp_path)
    (tmp_path / "operator" / "pkg" / "__pycache__").mkdir()
    (tmp_path / "operator" / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "operator" / "x.egg-info").mkdir()
    (tmp_path / "unrelated.txt").write_text("not a build input\n")
    assert build.source_digest(tmp_path) == first
    (tmp_path / "operator" / "pkg" / "mod.py").write_text("x = 2\n")
    changed = build.source_digest(tmp_path)
    assert changed != first
    os.chmod(tmp_path / "operator" / "pkg" / "mod.py", 0o755)
    assert build.source_digest(tmp_path) != changed
    (tmp_path / "README.md").write_text("another readme\n")
    assert len({first, changed, build.source_digest(tmp_path)}) == 3


def test_inputs_digest_follows_the_lock_and_install_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock, script = tmp_path / "requirements.txt", tmp_path / "install.sh"
    shutil.copy(LOCK, lock)
    shutil.copy(INSTALL_SCRIPT, script)
    monkeypatch.setattr(build, "LOCK", lock)
    monkeypatch.setattr(build, "INSTALL_SCRIPT", script)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    sources = ["deb http://deb.debian.org/debian bookworm main"]
    first = build.inputs_digest(sources)
    assert build.inputs_digest(sources) == first
    lock.write_text(lock.read_text() + "\n")
    after_lock = build.inputs_digest(sources)
    script.write_text(script.read_text() + "\n")
    after_script = build.inputs_digest(sources)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000001")
    after_epoch = build.inputs_digest(sources)
    after_mirror = build.inputs_digest(["deb http://mirror.example/debian bookworm main"])
    assert len({first, after_lock, after_script, after_epoch, after_mirror}) == 5


def test_base_key_follows_the_package_list(monkeypatch: pytest.MonkeyPatch) -> None:
    sources = ["deb http://deb.debian.org/debian bookworm main"]
    first = build.base_key(sources)
    monkeypatch.setattr(build, "PACKAGES", (*build.PACKAGES, "bash"))
    assert build.base_key(sources) != first


def test_apt_sources_come_from_the_machine(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security/\nSuites: bookworm-security\n"
    )
    (tmp_path / "sources.list.d" / "other.list").write_text(
        "deb [arch=amd64] https://apt.example/repo nodistro main\n"
    )
    assert build.apt_sources(tmp_path) == [
        "deb http://mirror.example/debian bookworm main",
        "deb http://mirror.example/debian bookworm-updates main",
        "deb http://mirror.example/debian-security bookworm-security main",
    ]
    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text("deb http://old.example/debian bookworm main contrib\n")
    assert build.apt_sources(tmp_path) == [
        "deb http://old.example/debian bookworm main",
        "deb http://old.example/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    ]
