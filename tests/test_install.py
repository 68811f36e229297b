"""`nvhook install` into a throw-away --prefix: what it writes, that a re-run is a no-op,
that it keeps what it does not own, and that it never overwrites a file it cannot parse."""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from nvhook import config as config_mod
from nvhook.cli import app
from nvhook.ops import install as install_mod

ENGINES = [e.value for e in install_mod.Engine]
NVIDIA_CONFIG = "/etc/nvidia-container-runtime/config.toml"
HOOKS_D = Path("usr/share/containers/oci/hooks.d")

# Sarus's hook schema, as far as nvhook's file is concerned (sarus: etc/hook.schema.json).
SARUS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "hook", "when", "stages"],
    "properties": {
        "version": {"const": "1.0.0"},
        "hook": {
            "type": "object",
            "additionalProperties": False,
            "required": ["path"],
            "properties": {
                "path": {"type": "string", "pattern": "^/"},
                "args": {"type": "array", "items": {"type": "string"}},
                "env": {"type": "array", "items": {"type": "string", "pattern": "^[^=]+="}},
                "timeout": {"type": "integer", "minimum": 1},
            },
        },
        "when": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": False,
            "properties": {
                "always": {"type": "boolean"},
                "annotations": {"type": "object"},
                "commands": {"type": "array"},
                "hasBindMounts": {"type": "boolean"},
            },
        },
        "stages": {
            "type": "array",
            "minItems": 1,
            "items": {"enum": ["prestart", "createRuntime", "createContainer", "startContainer",
                               "poststart", "poststop"]},
        },
    },
}


@pytest.fixture(autouse=True)
def _no_env_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(config_mod.CONFIG_ENV, raising=False)


STAGED_NVHOOK = "/usr/local/bin/nvhook"


@pytest.fixture
def prefix(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    root.chmod(0o755)  # Sarus's rules apply to the prefix as "/"
    # Sarus checks the hook binary's parents up to "/"; this venv's console script may live
    # under a world-writable /tmp, so the sarus installs use one staged inside the prefix.
    put(root, STAGED_NVHOOK, "#!/bin/sh\n").chmod(0o755)
    return root


def install(prefix: Path, *args: str) -> tuple[int, str]:
    if "sarus" in args and "--nvhook-path" not in args:
        args = (*args, "--nvhook-path", STAGED_NVHOOK)
    result = CliRunner().invoke(app, ["install", "--prefix", str(prefix), *args])
    return result.exit_code, result.output


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def put(prefix: Path, path: str, text: str) -> Path:
    target = prefix / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


def parses(path: Path) -> None:
    if path.suffix == ".json" or path.name.endswith(".json.nvhook-disabled"):
        json.loads(path.read_bytes())
    elif path.suffix == ".toml":
        tomllib.loads(path.read_text())


@pytest.mark.parametrize("engine", ENGINES)
def test_install_writes_parseable_files_and_rerun_is_a_noop(prefix: Path, engine: str) -> None:
    code, out = install(prefix, "--engine", engine)
    assert code == 0, out
    first = snapshot(prefix)
    assert set(first) - {STAGED_NVHOOK.lstrip("/")}, "install wrote nothing"
    for rel in first:
        parses(prefix / rel)
    code, out = install(prefix, "--engine", engine)
    assert code == 0, out
    assert "nothing to do" in out
    assert snapshot(prefix) == first  # byte-identical, and no new backup file


@pytest.mark.parametrize("engine", ENGINES)
def test_dry_run_writes_nothing_and_prints_a_diff(prefix: Path, engine: str) -> None:
    put(prefix, "/etc/docker/daemon.json", '{"debug": true}\n')
    before = snapshot(prefix)
    code, out = install(prefix, "--engine", engine, "--dry-run")
    assert code == 0, out
    assert snapshot(prefix) == before
    assert re.search(r"^--- .*\n\+\+\+ .*\n@@ ", out, re.M), out
    assert "nothing written" in out


@pytest.mark.parametrize(
    ("engine", "nvidia_dirs"),
    [
        pytest.param("podman", ["usr/share/containers/oci/hooks.d"], id="podman"),
        pytest.param("crio", ["usr/share/containers/oci/hooks.d", "etc/containers/oci/hooks.d"],
                     id="crio, both default dirs"),
    ],
)
def test_hooks_d_moves_nvidia_hook_aside(prefix: Path, engine: str, nvidia_dirs: list[str]) -> None:
    for d in nvidia_dirs:
        put(prefix, f"{d}/oci-nvidia-hook.json", '{"nvidia": 1}')
    code, out = install(prefix, "--engine", engine)
    assert code == 0, out
    for d in nvidia_dirs:
        aside = prefix / d / "oci-nvidia-hook.json.nvhook-disabled"
        assert not (prefix / d / "oci-nvidia-hook.json").exists()
        assert aside.read_text() == '{"nvidia": 1}'
        assert f"mv {aside} {prefix / d / 'oci-nvidia-hook.json'}" in out
    hook = json.loads((prefix / HOOKS_D / "nvrw-hook.json").read_text())
    assert hook["hook"]["path"] == str(install_mod.nvhook_executable())


def test_hook_file_is_the_repo_file_with_the_installed_path() -> None:
    repo = json.loads((Path(__file__).parents[1] / "hooks.d" / "nvrw-hook.json").read_text())
    ours = install_mod.hook_document(Path("/opt/x/nvhook"))
    assert ours["hook"].pop("path") == "/opt/x/nvhook"
    repo["hook"].pop("path")
    assert ours == repo


def test_hooks_dir_option(prefix: Path) -> None:
    code, out = install(prefix, "--engine", "podman", "--hooks-dir", "/srv/hooks")
    assert code == 0, out
    assert (prefix / "srv/hooks/nvrw-hook.json").is_file()


def test_docker_keeps_other_keys_and_backs_up(prefix: Path) -> None:
    original = json.dumps({"debug": True, "runtimes": {"nvidia": {"path": "/usr/bin/ncr"}},
                           "log-driver": "journald"}, indent=2)
    path = put(prefix, "/etc/docker/daemon.json", original)
    code, out = install(prefix, "--engine", "docker")
    assert code == 0, out
    doc = json.loads(path.read_text())
    assert doc["debug"] is True and doc["log-driver"] == "journald"
    assert doc["runtimes"]["nvidia"] == {"path": "/usr/bin/ncr"}
    assert doc["runtimes"]["nvhook"] == {"path": str(install_mod.nvhook_executable()),
                                         "runtimeArgs": ["runtime"]}
    assert path.read_text().startswith('{\n    "')  # indent 4
    backups = list(path.parent.glob("daemon.json.nvhook-bak.*"))
    assert [b.read_text() for b in backups] == [original]
    assert re.fullmatch(r"daemon\.json\.nvhook-bak\.\d{8}T\d{6}Z", backups[0].name)


CONTAINERD = {
    2: ("# my containerd\nversion = 2\n\n"
        '[plugins."io.containerd.grpc.v1.cri".containerd]\n'
        '  default_runtime_name = "runc"  # keep this comment\n\n'
        '  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n'
        '    runtime_type = "io.containerd.runc.v2"\n'),
    3: ("# my containerd v3\nversion = 3\n\n"
        "[plugins]\n"
        "  # cri runtime\n"
        "  [plugins.'io.containerd.cri.v1.runtime']\n"
        "    enable_cdi = false # keep this comment\n"),
}
CRI_KEY = {2: "io.containerd.grpc.v1.cri", 3: "io.containerd.cri.v1.runtime"}


@pytest.mark.parametrize("version", [2, 3], ids=["containerd v2", "containerd v3"])
def test_containerd_merges_runtime_and_keeps_comments(prefix: Path, version: int) -> None:
    path = put(prefix, "/etc/containerd/config.toml", CONTAINERD[version])
    code, out = install(prefix, "--engine", "containerd")
    assert code == 0, out
    text = path.read_text()
    for line in CONTAINERD[version].splitlines():
        assert line in text  # every original line, comments included, is still there
    doc = tomllib.loads(text)
    runtime = doc["plugins"][CRI_KEY[version]]["containerd"]["runtimes"]["nvhook"]
    assert runtime == {"runtime_type": "io.containerd.runc.v2",
                       "options": {"BinaryName": "/usr/local/bin/nvhook-runc"}}
    wrapper = prefix / "usr/local/bin/nvhook-runc"
    assert wrapper.read_text() == (
        f'#!/bin/sh\nexec {install_mod.nvhook_executable()} runtime "$@"\n'
    )
    assert wrapper.stat().st_mode & 0o777 == 0o755
    code, out = install(prefix, "--engine", "containerd")
    assert "nothing to do" in out


def test_containerd_creates_a_v2_config(prefix: Path) -> None:
    install(prefix, "--engine", "containerd")
    doc = tomllib.loads((prefix / "etc/containerd/config.toml").read_text())
    assert doc["version"] == 2
    assert "nvhook" in doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]


def test_nvidia_config_keeps_comments(prefix: Path) -> None:
    original = ('# NVIDIA toolkit config\ndisable-require = false\n\n'
                '[nvidia-container-cli]\n# the ldconfig\nldconfig = "@/sbin/ldconfig"\n\n'
                '[nvidia-container-runtime]\n# auto, legacy or cdi\nmode = "auto"  # inline\n')
    path = put(prefix, NVIDIA_CONFIG, original)
    code, out = install(prefix, "--engine", "podman", "--nvidia-config", NVIDIA_CONFIG)
    assert code == 0, out
    text = path.read_text()
    for comment in ("# NVIDIA toolkit config", "# the ldconfig", "# auto, legacy or cdi",
                    "# inline"):
        assert comment in text
    doc = tomllib.loads(text)
    assert doc["nvidia-container-runtime"]["mode"] == "legacy"
    assert doc["nvidia-container-runtime-hook"]["skip-mode-detection"] is True
    assert doc["nvidia-container-cli"]["ldconfig"] == "@/sbin/ldconfig"
    assert text.index("disable-require") < text.index("[nvidia-container-cli]")


@pytest.mark.parametrize(
    ("engine", "path", "text", "line", "extra"),
    [
        pytest.param("docker", "/etc/docker/daemon.json", '{\n  "debug": true,\n  oops\n}\n', 3,
                     [], id="daemon.json"),
        pytest.param("containerd", "/etc/containerd/config.toml",
                     'version = 2\n[plugins\nx = 1\n', 2, [], id="containerd config.toml"),
        pytest.param("podman", NVIDIA_CONFIG, '[nvidia-container-runtime]\nmode = \n', 2,
                     ["--nvidia-config", NVIDIA_CONFIG], id="NVIDIA config.toml"),
    ],
)
def test_broken_file_is_left_alone(prefix: Path, engine: str, path: str, text: str, line: int,
                                   extra: list[str]) -> None:
    target = put(prefix, path, text)
    before = snapshot(prefix)
    code, out = install(prefix, "--engine", engine, *extra)
    assert code == 4
    assert target.read_text() == text
    assert snapshot(prefix) == before  # nothing else written either
    lines = out.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"nvhook: {target}:{line}:")


def test_sarus_hook_is_schema_valid(prefix: Path) -> None:
    code, out = install(prefix, "--engine", "sarus")
    assert code == 0, out
    path = prefix / "opt/sarus/etc/hooks.d/nvhook.json"
    doc = json.loads(path.read_text())
    jsonschema.validate(doc, SARUS_SCHEMA)
    assert set(doc) == {"version", "hook", "when", "stages"}
    assert doc["hook"]["args"] == ["nvhook", "prestart"]
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    ("bad", "mode"),
    [
        pytest.param("opt/sarus", 0o777, id="world-writable parent dir"),
        pytest.param("opt/sarus/etc", 0o775, id="group-writable parent dir"),
        pytest.param("usr/local/bin/nvhook", 0o757, id="world-writable hook binary"),
    ],
)
def test_sarus_rejects_writable_paths(prefix: Path, bad: str, mode: int) -> None:
    (prefix / "opt/sarus/etc/hooks.d").mkdir(parents=True)
    binary = put(prefix, "/usr/local/bin/nvhook", "#!/bin/sh\n")
    binary.chmod(0o755)
    os.chmod(prefix / bad, mode)
    code, out = install(prefix, "--engine", "sarus", "--nvhook-path", "/usr/local/bin/nvhook")
    assert code == 9, out
    assert f"{prefix / bad}: mode {mode:04o}" in out
    assert not (prefix / "opt/sarus/etc/hooks.d/nvhook.json").exists()


def test_own_config_is_the_defaults_and_never_replaced(prefix: Path) -> None:
    install(prefix, "--engine", "docker")
    path = prefix / "etc/nvhook/config.toml"
    text = path.read_bytes()
    parsed = config_mod.parse(text, path)
    assert parsed == config_mod.Config(path=path)
    assert text.count(b"#") > 10  # commented
    path.write_text("version = 1\n# mine\n")
    install(prefix, "--engine", "podman")
    assert path.read_text() == "version = 1\n# mine\n"


def test_unknown_engine_is_a_usage_error(prefix: Path) -> None:
    code, out = install(prefix, "--engine", "lxc")
    assert code == 2
    assert "unknown engine 'lxc'" in out


@pytest.mark.parametrize("text", [
    pytest.param('{"runtimes": {"runc": {"path": "runc"}, "nvidia": {"path": "x", "Path": "y"}}}',
                 id="a folded twin in a runtime"),
    pytest.param('{"debug": true, "debug": false}', id="a repeated key"),
    pytest.param('{"Default-Runtime": "runc"}', id="a field in another case"),
])
def test_docker_file_go_reads_otherwise_is_left_alone(prefix: Path, text: str) -> None:
    """dockerd decodes daemon.json with Go, which folds keys and merges repeats: an edit
    based on Python's reading could leave Docker on another runtime than it says."""
    target = put(prefix, "/etc/docker/daemon.json", text)
    before = snapshot(prefix)
    code, out = install(prefix, "--engine", "docker")
    assert (code, out.count("\n")) == (4, 1), out
    assert out.startswith(f"nvhook: {target}: ") and "left unchanged" in out
    assert snapshot(prefix) == before
