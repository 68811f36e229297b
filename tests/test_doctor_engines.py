"""`nvhook doctor`'s Docker and containerd checks, on files in a --prefix (the live-daemon
part is in tests/e2e/test_docker.py and test_containerd.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nvhook.ops import doctor

CRI = "io.containerd.grpc.v1.cri"


def exe(tmp_path: Path) -> str:
    path = tmp_path / "nvhook"
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return str(path)


def checks(prefix: Path, name: str) -> list[str]:
    opts = doctor.Options(prefix=prefix)
    found = doctor._docker(opts) if name == "docker" else doctor._containerd(opts)
    return [c.line() for c in found]


@pytest.mark.parametrize(
    ("daemon_json", "want"),
    [
        pytest.param(None, ["ok  docker: {p} absent (Docker not configured)"], id="absent"),
        pytest.param("{oops", ["fail  docker: {p}: invalid JSON"], id="broken JSON"),
        pytest.param({"runtimes": {"nvhook": {"path": "{exe}", "runtimeArgs": ["runtime"]}},
                      "default-runtime": "nvhook"},
                     ["ok  docker: {p}: runtimes.nvhook runs {exe} runtime",
                      "ok  docker: default runtime is nvhook"], id="nvhook default"),
        pytest.param({"runtimes": {"nvhook": {"path": "{exe}", "runtimeArgs": ["runtime"]}}},
                     ["ok  docker: {p}: runtimes.nvhook runs",
                      "warn  docker: default runtime is 'runc': containers without "
                      "--runtime=nvhook bypass nvhook"], id="runc default warns"),
        pytest.param({"runtimes": {"nvhook": {"path": "/nope/nvhook",
                                              "runtimeArgs": ["runtime"]}}},
                     ["fail  docker: {p}: runtimes.nvhook.path '/nope/nvhook' is not an "
                      "executable file", "warn  docker: default runtime is 'runc'"],
                     id="missing executable"),
        pytest.param({"runtimes": {"nvhook": {"path": "{exe}"}}},
                     ["fail  docker: {p}: runtimes.nvhook.runtimeArgs None must end with",
                      "warn  docker: default runtime is 'runc'"], id="no runtimeArgs"),
        pytest.param({"default-runtime": "nvidia"},
                     ["warn  docker: {p}: no runtimes.nvhook",
                      "warn  docker: default runtime is 'nvidia'"], id="not installed"),
        pytest.param('{"runtimes": {"nvhook": {"path": "{exe}", "runtimeArgs": ["runtime"], '
                     '"Path": "/usr/bin/runc"}}, "default-runtime": "nvhook"}',
                     ['fail  docker: {p}: runtimes.nvhook.Path: one key to Go\'s JSON with '
                      '"path"'], id="a folded twin: dockerd runs the last one"),
        pytest.param('{"default-runtime": "nvhook", "default-runtime": "runc"}',
                     ["fail  docker: {p}: default-runtime: appears twice"],
                     id="a repeated key"),
        pytest.param('{"runtimes": {"nvhook": {"PATH": "{exe}", "runtimeArgs": ["runtime"]}}}',
                     ['fail  docker: {p}: runtimes.nvhook.PATH: Go\'s JSON reads it as "path"'],
                     id="a field in another case"),
    ],
)
def test_docker(tmp_path: Path, daemon_json: object, want: list[str]) -> None:
    prefix = tmp_path / "root"
    path = prefix / "etc/docker/daemon.json"
    path.parent.mkdir(parents=True)
    binary = exe(tmp_path)
    if daemon_json is not None:
        text = daemon_json if isinstance(daemon_json, str) else json.dumps(daemon_json)
        path.write_text(text.replace("{exe}", binary))
    got = checks(prefix, "docker")
    assert len(got) == len(want), got
    for line, start in zip(got, want, strict=True):
        assert line.startswith(start.format(p=path, exe=binary)), line


def _containerd(runtimes: str, default: str | None = None, version: int = 2) -> str:
    head = f'version = {version}\n[plugins."{CRI}".containerd]\n'
    if default:
        head += f'default_runtime_name = "{default}"\n'
    return head + runtimes


NVHOOK_TABLE = (f'[plugins."{CRI}".containerd.runtimes.nvhook]\nruntime_type = '
                f'"io.containerd.runc.v2"\n[plugins."{CRI}".containerd.runtimes.nvhook.options]\n'
                'BinaryName = "{exe}"\n')
RUNC_TABLE = (f'[plugins."{CRI}".containerd.runtimes.runc]\n'
              'runtime_type = "io.containerd.runc.v2"\n')


@pytest.mark.parametrize(
    ("text", "want"),
    [
        pytest.param(None, ["ok  containerd: {p} absent"], id="absent"),
        pytest.param("version = [", ["fail  containerd: {p}: cannot read"], id="broken TOML"),
        pytest.param("x = 1\n", ["warn  containerd: {p}: config version 1"], id="version 1"),
        pytest.param(_containerd(NVHOOK_TABLE + RUNC_TABLE),
                     ["ok  containerd: {p} (version 2): handler nvhook, BinaryName {exe}",
                      "warn  containerd: default runtime name is 'runc': pods without "
                      "runtimeClassName: nvhook bypass nvhook"], id="handler, runc default"),
        pytest.param(_containerd(NVHOOK_TABLE),
                     ["ok  containerd: {p} (version 2): handler nvhook",
                      "fail  containerd: default_runtime_name 'runc' has no runtime table: the "
                      "CRI plugin will not load"], id="implied runc shadowed"),
        pytest.param(_containerd(NVHOOK_TABLE, default="nvhook"),
                     ["ok  containerd: {p} (version 2): handler nvhook",
                      "ok  containerd: default runtime name is nvhook"], id="nvhook default"),
        pytest.param(_containerd(NVHOOK_TABLE.replace("{exe}", "/nope")),
                     ["fail  containerd: {p}: handler nvhook: BinaryName '/nope' is not an "
                      "executable file", "fail  containerd: default_runtime_name 'runc'"],
                     id="missing BinaryName"),
        pytest.param(_containerd(RUNC_TABLE),
                     ["warn  containerd: {p} (version 2): no nvhook runtime handler",
                      "warn  containerd: default runtime name is 'runc'"], id="not installed"),
    ],
)
def test_containerd(tmp_path: Path, text: str | None, want: list[str]) -> None:
    prefix = tmp_path / "root"
    path = prefix / "etc/containerd/config.toml"
    path.parent.mkdir(parents=True)
    binary = exe(tmp_path)
    if text is not None:
        path.write_text(text.replace("{exe}", binary))
    got = checks(prefix, "containerd")
    assert len(got) == len(want), got
    for line, start in zip(got, want, strict=True):
        assert line.startswith(start.format(p=path, exe=binary)), line
