"""`install --default` (Docker, containerd) and `nvhook uninstall` for every engine, in a
throw-away --prefix: the default runtime and its chain, the implied runc table containerd
needs, and an uninstall that is exact (byte-identical), keeps later edits and is idempotent."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import test_install
from test_install import STAGED_NVHOOK, install, put, snapshot
from typer.testing import CliRunner

from nvhook.cli import app

CRI = "io.containerd.grpc.v1.cri"
DAEMON = "/etc/docker/daemon.json"
CONTAINERD = "/etc/containerd/config.toml"
OWN = "/etc/nvhook/config.toml"
NVIDIA_DOCKER = ('{\n  "default-runtime": "nvidia",\n  "runtimes": {\n    "nvidia": {\n'
                 '      "path": "/usr/bin/nvidia-container-runtime",\n      "runtimeArgs": []\n'
                 '    }\n  },\n  "log-level": "warn"\n}\n')
NVIDIA_CONTAINERD = (
    "# a node with NVIDIA's runtime as the CRI default\nversion = 2\n\n"
    f'[plugins."{CRI}".containerd]\n  default_runtime_name = "nvidia"\n\n'
    f'  [plugins."{CRI}".containerd.runtimes.nvidia]\n'
    '    runtime_type = "io.containerd.runc.v2"\n'
    f'    [plugins."{CRI}".containerd.runtimes.nvidia.options]\n'
    '      BinaryName = "/usr/bin/nvidia-container-runtime"\n'
)


prefix = pytest.fixture(test_install.prefix.__wrapped__, name="prefix")  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _no_env_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NVHOOK_CONFIG", raising=False)


def uninstall(prefix: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["uninstall", "--prefix", str(prefix), *args])
    return result.exit_code, result.output


def without_backups(snap: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in snap.items() if ".nvhook-bak." not in k}


def toml(prefix: Path, path: str) -> dict:
    return tomllib.loads((prefix / path.lstrip("/")).read_text())


def runtimes(doc: dict) -> dict:
    return doc["plugins"][CRI]["containerd"]["runtimes"]


@pytest.mark.parametrize(
    ("original", "chained"),
    [
        pytest.param(NVIDIA_DOCKER, "/usr/bin/nvidia-container-runtime", id="nvidia default"),
        pytest.param('{"debug": true}\n', "runc", id="implied runc default"),
        pytest.param(None, "runc", id="no daemon.json"),
    ],
)
def test_docker_default_chains_to_the_runtime_it_replaces(prefix: Path, original: str | None,
                                                          chained: str) -> None:
    if original is not None:
        put(prefix, DAEMON, original)
    code, out = install(prefix, "--engine", "docker", "--default")
    assert code == 0, out
    doc = json.loads((prefix / DAEMON.lstrip("/")).read_text())
    assert doc["default-runtime"] == "nvhook"
    assert doc["runtimes"]["nvhook"]["runtimeArgs"] == ["runtime"]
    if original is not None:  # everything else kept
        for key, value in json.loads(original).items():
            if key != "default-runtime":
                assert doc[key] == (value if key != "runtimes" else doc[key]) and (
                    key != "runtimes" or doc[key]["nvidia"] == value["nvidia"])
    assert toml(prefix, OWN)["runtime"]["path"] == chained
    assert "warning" not in out


@pytest.mark.parametrize(
    ("original", "default"),
    [
        pytest.param(NVIDIA_DOCKER, "'nvidia'", id="nvidia"),
        pytest.param(None, "'runc'", id="implied runc"),
    ],
)
def test_docker_without_default_warns_in_one_line(prefix: Path, original: str | None,
                                                  default: str) -> None:
    if original is not None:
        put(prefix, DAEMON, original)
    result = CliRunner().invoke(app, ["install", "--prefix", str(prefix), "--engine", "docker"])
    assert result.exit_code == 0
    warnings = [line for line in result.output.splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert warnings[0].startswith("nvhook: warning: ")
    assert f"the default runtime is {default}" in warnings[0]
    assert "bypass nvhook" in warnings[0]
    assert json.loads((prefix / DAEMON.lstrip("/")).read_text()).get("default-runtime") == (
        "nvidia" if original else None)


@pytest.mark.parametrize(
    ("original", "want_runtimes"),
    [
        pytest.param(None, {"runc", "nvhook"}, id="no config: implied runc written"),
        pytest.param("version = 2\n", {"runc", "nvhook"}, id="bare v2: implied runc written"),
        pytest.param(f'version = 2\n[plugins."{CRI}".containerd]\n  snapshotter = "native"\n',
                     {"runc", "nvhook"}, id="no runtimes table"),
        pytest.param(f'version = 2\n[plugins."{CRI}".containerd.runtimes.runc]\n'
                     '  runtime_type = "io.containerd.runc.v2"\n  [plugins."'
                     f'{CRI}".containerd.runtimes.runc.options]\n    SystemdCgroup = true\n',
                     {"runc", "nvhook"}, id="explicit runc kept as is"),
        pytest.param(NVIDIA_CONTAINERD, {"nvidia", "nvhook"}, id="nvidia default"),
    ],
)
def test_containerd_never_removes_or_shadows_a_runtime(prefix: Path, original: str | None,
                                                       want_runtimes: set[str]) -> None:
    if original is not None:
        put(prefix, CONTAINERD, original)
    before = tomllib.loads(original) if original else {}
    code, out = install(prefix, "--engine", "containerd")
    assert code == 0, out
    doc = toml(prefix, CONTAINERD)
    assert set(runtimes(doc)) == want_runtimes
    for name, table in (runtimes(before) if "plugins" in before and "runtimes" in before[
            "plugins"][CRI]["containerd"] else {}).items():
        assert runtimes(doc)[name] == table
    default = doc["plugins"][CRI]["containerd"].get("default_runtime_name", "runc")
    assert default in runtimes(doc)
    assert "kind: RuntimeClass" in out and "handler: nvhook" in out
    assert out.count("nvhook: warning:") == 1


@pytest.mark.parametrize(
    ("original", "chained"),
    [
        pytest.param(None, "runc", id="implied runc"),
        pytest.param(NVIDIA_CONTAINERD, "/usr/bin/nvidia-container-runtime", id="nvidia"),
    ],
)
def test_containerd_default_sets_default_runtime_name(prefix: Path, original: str | None,
                                                      chained: str) -> None:
    if original is not None:
        put(prefix, CONTAINERD, original)
    code, out = install(prefix, "--engine", "containerd", "--default")
    assert code == 0, out
    doc = toml(prefix, CONTAINERD)
    assert doc["plugins"][CRI]["containerd"]["default_runtime_name"] == "nvhook"
    assert toml(prefix, OWN)["runtime"]["path"] == chained
    assert "warning" not in out and "RuntimeClass" not in out
    if original is not None:
        assert (prefix / CONTAINERD.lstrip("/")).read_text().startswith("# a node with")


def test_default_is_refused_for_hooks_engines(prefix: Path) -> None:
    code, out = install(prefix, "--engine", "podman", "--default")
    assert code == 2
    assert "--default" in out


SETUPS = {
    "podman": {"/usr/share/containers/oci/hooks.d/oci-nvidia-hook.json": '{"version":"1.0.0"}\n',
               "/etc/containers/oci/hooks.d/oci-nvidia-hook.json": '{"version": "1.0.0"}\n'},
    "crio": {"/usr/share/containers/oci/hooks.d/oci-nvidia-hook.json": '{"x": 1}\n'},
    "sarus": {},
    "docker": {DAEMON: NVIDIA_DOCKER},
    "containerd": {CONTAINERD: NVIDIA_CONTAINERD},
}


@pytest.mark.parametrize(
    ("engine", "flags"),
    [
        pytest.param("podman", (), id="podman"),
        pytest.param("crio", (), id="crio"),
        pytest.param("sarus", (), id="sarus"),
        pytest.param("docker", (), id="docker"),
        pytest.param("docker", ("--default",), id="docker --default"),
        pytest.param("docker", ("--default", "--empty"), id="docker --default, no daemon.json"),
        pytest.param("containerd", (), id="containerd"),
        pytest.param("containerd", ("--default",), id="containerd --default"),
        pytest.param("containerd", ("--default", "--empty"), id="containerd --default, no file"),
    ],
)
def test_install_then_uninstall_is_byte_identical_and_idempotent(
    prefix: Path, engine: str, flags: tuple[str, ...]
) -> None:
    if "--empty" not in flags:
        for path, text in SETUPS[engine].items():
            put(prefix, path, text)
    flags = tuple(f for f in flags if f != "--empty")
    nvidia = put(prefix, "/etc/nvidia-container-runtime/config.toml", "# NVIDIA's\n")
    assert nvidia.exists()
    original = snapshot(prefix)
    extra = ("--nvhook-path", STAGED_NVHOOK) if engine == "sarus" else ()
    code, out = install(prefix, "--engine", engine, *flags, *extra,
                        "--nvidia-config", "/etc/nvidia-container-runtime/config.toml")
    assert code == 0, out
    installed = snapshot(prefix)
    assert without_backups(installed) != original
    code, out = uninstall(prefix, "--engine", engine, "--dry-run")
    assert code == 0, out
    assert "---" in out and "nothing written" in out
    assert snapshot(prefix) == installed
    code, out = uninstall(prefix, "--engine", engine)
    assert code == 0, out
    assert without_backups(snapshot(prefix)) == original
    code, out = uninstall(prefix, "--engine", engine)
    assert (code, "nothing to do" in out) == (0, True)
    assert without_backups(snapshot(prefix)) == original


def test_install_twice_then_uninstall_goes_back_to_before_the_first(prefix: Path) -> None:
    put(prefix, DAEMON, NVIDIA_DOCKER)
    original = snapshot(prefix)
    assert install(prefix, "--engine", "docker")[0] == 0
    assert install(prefix, "--engine", "docker", "--default")[0] == 0
    assert uninstall(prefix, "--engine", "docker")[0] == 0
    assert without_backups(snapshot(prefix)) == original


def test_docker_uninstall_keeps_later_edits(prefix: Path) -> None:
    put(prefix, DAEMON, NVIDIA_DOCKER)
    assert install(prefix, "--engine", "docker", "--default")[0] == 0
    path = prefix / DAEMON.lstrip("/")
    doc = json.loads(path.read_text())
    doc["debug"] = True
    doc["runtimes"]["crun"] = {"path": "/usr/bin/crun"}
    path.write_text(json.dumps(doc))
    code, out = uninstall(prefix, "--engine", "docker")
    assert code == 0, out
    after = json.loads(path.read_text())
    assert after["debug"] is True
    assert after["default-runtime"] == "nvidia"
    assert set(after["runtimes"]) == {"nvidia", "crun"}
    assert after["log-level"] == "warn"
    # nvhook's own config was created by install and is unchanged: it goes too.
    assert not (prefix / OWN.lstrip("/")).exists()


def test_containerd_uninstall_keeps_later_edits_and_a_changed_default(prefix: Path) -> None:
    assert install(prefix, "--engine", "containerd", "--default")[0] == 0
    path = prefix / CONTAINERD.lstrip("/")
    text = path.read_text().replace('default_runtime_name = "nvhook"',
                                    'default_runtime_name = "runc"')
    path.write_text("# mine\n" + text + '\n[plugins."io.containerd.grpc.v1.cri".x]\ny = 1\n')
    code, out = uninstall(prefix, "--engine", "containerd")
    assert code == 0, out
    doc = tomllib.loads(path.read_text())
    assert path.read_text().startswith("# mine\n")
    assert doc["plugins"][CRI]["x"] == {"y": 1}
    assert "nvhook" not in doc["plugins"][CRI]["containerd"].get("runtimes", {})
    # The user set the default themselves since: it is theirs now, kept.
    assert doc["plugins"][CRI]["containerd"]["default_runtime_name"] == "runc"
    assert not (prefix / "usr/local/bin/nvhook-runc").exists()


def test_containerd_uninstall_keeps_the_written_out_runc_when_others_were_added(
    prefix: Path
) -> None:
    assert install(prefix, "--engine", "containerd")[0] == 0
    path = prefix / CONTAINERD.lstrip("/")
    path.write_text(path.read_text() + f'\n[plugins."{CRI}".containerd.runtimes.crun]\n'
                    'runtime_type = "io.containerd.runc.v2"\n')
    assert uninstall(prefix, "--engine", "containerd")[0] == 0
    # Without runc beside crun, containerd's implied default would have no handler.
    assert set(runtimes(toml(prefix, CONTAINERD))) == {"runc", "crun"}


def test_uninstall_leaves_an_edited_owned_file_and_says_so(prefix: Path) -> None:
    assert install(prefix, "--engine", "podman")[0] == 0
    hook = prefix / "usr/share/containers/oci/hooks.d/nvrw-hook.json"
    hook.write_text(hook.read_text().replace('"timeout": 10', '"timeout": 20'))
    code, out = uninstall(prefix, "--engine", "podman")
    assert code == 0
    assert hook.exists()
    assert f"{hook}: changed since nvhook install; left in place" in out


def test_uninstall_without_a_record_is_a_noop(prefix: Path) -> None:
    before = snapshot(prefix)
    code, out = uninstall(prefix, "--engine", "docker")
    assert (code, "nothing to do" in out) == (0, True)
    assert snapshot(prefix) == before
