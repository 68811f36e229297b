"""The runtime shim's pure parts: argv parsing, CUDA re-indexing, hook insertion."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import fakenvml
import pytest
from builders import fake_runtime
from conftest import Node, write_bundle

from nvhook.config import SAFE_PATH, Config
from nvhook.errors import DelegateError, UsageError
from nvhook.gpus.inventory import Gpu, Inventory, MigDevice
from nvhook.modes import apply, shim


def _gpu(i: int) -> Gpu:
    return Gpu(i, f"GPU-{i:08x}-0000-4000-8000-{i:012x}", f"00000000:{i + 16:02x}:00.0", i,
               "H100", i == 6)


GPUS = tuple(_gpu(i) for i in range(7))
MIG = MigDevice(GPUS[6].uuid, 6, 0, "MIG-00000006-0000-5000-8000-000000000060", 1, 0)
INVENTORY = Inventory(GPUS, (MIG,), "550", source="test")
G = [g.uuid for g in GPUS]
DOCKER = ["--root", "/run/docker/runtime-runc/moby", "--log", "/run/x/log.json",
          "--log-format", "json"]


@pytest.mark.parametrize(
    ("args", "subcommand", "bundle", "cid"),
    [
        pytest.param([*DOCKER, "create", "--bundle", "/b", "--pid-file", "/p", "ctr"],
                     "create", "/b", "ctr", id="docker create"),
        pytest.param([*DOCKER, "start", "ctr"], "start", None, None, id="docker start"),
        pytest.param(["--root", "create", "state", "x"], "state", None, None,
                     id="create as --root value"),
        pytest.param(["--log", "create", "--log-format", "create", "delete", "x"], "delete",
                     None, None, id="create as --log and --log-format values"),
        pytest.param(["--criu", "create", "--rootless", "create", "kill", "x"], "kill", None,
                     None, id="create as --criu and --rootless values"),
        pytest.param(["--root=/r", "--log=/l", "create", "-b", "/b", "c"], "create", "/b", "c",
                     id="--x=v globals"),
        pytest.param(["-root", "/r", "create", "-bundle", "/b", "c"], "create", "/b", "c",
                     id="single-dash long options"),
        pytest.param(["--debug", "--systemd-cgroup", "create", "c"], "create", "CWD", "c",
                     id="boolean globals, no bundle: cwd"),
        pytest.param(["run", "--bundle", "create", "x"], "run", "create", "x",
                     id="run --bundle create"),
        pytest.param(["run", "-b", "create", "x"], "run", "create", "x", id="run -b create"),
        pytest.param(["run", "--bundle=create", "x"], "run", "create", "x",
                     id="run --bundle=create"),
        pytest.param(["run", "-d", "--keep", "--no-subreaper", "--pidfd-socket", "/s", "-b",
                      "/b", "x"], "run", "/b", "x", id="run: every bool, pidfd-socket"),
        pytest.param(["create", "--pidfd-socket", "x", "y"], "create", "CWD", "y",
                     id="--pidfd-socket takes a value (runc >= 1.2)"),
        pytest.param(["create", "--config", "x", "-b", "/b", "y"], "create", "/b", "y",
                     id="--config takes a value (runc >= 1.3)"),
        pytest.param(["restore", "--image-path", "/i", "--work-path", "/w", "--bundle", "/b",
                      "--manage-cgroups-mode", "soft", "--empty-ns", "network",
                      "--lsm-profile", "p", "--lsm-mount-context", "c", "--tcp-established",
                      "--ext-unix-sk", "--shell-job", "--file-locks", "--auto-dedup",
                      "--lazy-pages", "-d", "--no-subreaper", "--no-pivot", "--pid-file",
                      "/p", "--console-socket", "/s", "x"], "restore", "/b", "x",
                     id="restore: every option"),
        pytest.param(["restore", "--image-path", "create", "x"], "restore", "CWD", "x",
                     id="restore --image-path create"),
        pytest.param(["--debug", "--root", "/r", "run", "x", "-b", "/b"], "run", "/b", "x",
                     id="run options after the id"),
        pytest.param(["--unknown", "state", "x"], "state", None, None,
                     id="unknown global before a pass-through subcommand"),
        pytest.param(["checkpoint", "--image-path", "/i", "x"], "checkpoint", None, None,
                     id="checkpoint is not judged"),
        pytest.param(["create", "--bundle", "create", "x"], "create", "create", "x",
                     id="create --bundle create"),
        pytest.param(["create", "-b=/b", "x"], "create", "/b", "x", id="-b=v"),
        pytest.param(["create", "--bundle=/b", "x"], "create", "/b", "x", id="--bundle=v"),
        pytest.param(["create", "x", "--bundle", "/b"], "create", "/b", "x",
                     id="options after the id"),
        pytest.param(["create", "--console-socket", "/s", "--pid-file", "/p", "--preserve-fds",
                      "2", "--no-pivot", "--bundle", "/b", "x"], "create", "/b", "x",
                     id="every create option"),
        pytest.param(["create", "--bundle", "/a", "--bundle", "/b", "x"], "create", "/b", "x",
                     id="last --bundle wins"),
        pytest.param(["create", "--", "x"], "create", "CWD", "x", id="-- before the id"),
        pytest.param(["--version"], None, None, None, id="--version"),
        pytest.param([], None, None, None, id="no args"),
        pytest.param(["--", "create"], None, None, None, id="-- before everything"),
        pytest.param(["features"], "features", None, None, id="features"),
    ],
)
def test_parse_argv(args: list[str], subcommand: str | None, bundle: str | None,
                    cid: str | None) -> None:
    call = shim.parse_argv(args)
    assert call.args == tuple(args)
    assert call.subcommand == subcommand
    want = Path.cwd() if bundle == "CWD" else (Path(bundle) if bundle else None)
    assert (call.bundle, call.container_id) == (want, cid)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        pytest.param(["create", "--newflag", "/b", "x"], "unknown option '--newflag'",
                     id="create: unknown option"),
        pytest.param(["run", "--keep=true", "--sneaky", "x"], "unknown option '--sneaky'",
                     id="run: unknown option"),
        pytest.param(["restore", "--parent-path", "/p", "x"], "unknown option '--parent-path'",
                     id="restore: checkpoint's option"),
        pytest.param(["--newglobal", "x", "create", "c"], "unknown global option",
                     id="unknown global before create"),
        pytest.param(["create", "x", "--bundle"], "needs a value", id="value missing"),
    ],
)
def test_parse_argv_refuses_what_it_cannot_place(args: list[str], problem: str) -> None:
    with pytest.raises(UsageError, match=problem):
        shim.parse_argv(args)


@pytest.mark.parametrize(
    ("args", "log", "fmt", "config"),
    [
        pytest.param([*DOCKER, "create", "--bundle", "/b", "c"], "/run/x/log.json", "json",
                     None, id="docker's globals"),
        pytest.param(["--log=/l", "run", "c"], "/l", "text", None, id="text is the default"),
        pytest.param(["create", "--config", "spec.json", "c"], None, "text", "spec.json",
                     id="--config"),
    ],
)
def test_parse_argv_globals(args: list[str], log: str | None, fmt: str,
                            config: str | None) -> None:
    call = shim.parse_argv(args)
    assert (call.log, call.log_format, call.config) == (Path(log) if log else None, fmt, config)


def test_spec_path_follows_config_relative_to_bundle() -> None:
    assert shim.parse_argv(["create", "-b", "/b", "c"]).spec_path == Path("/b/config.json")
    assert shim.parse_argv(["create", "-b", "/b", "--config", "s.json", "c"]).spec_path == Path(
        "/b/s.json")
    assert shim.parse_argv(["create", "-b", "/b", "--config", "/s.json", "c"]).spec_path == Path(
        "/s.json")


@pytest.mark.parametrize(
    ("fmt", "want"),
    [
        pytest.param("json", '{"level":"error","msg":"nvhook: denied: X=\\u00e9",'
                     '"time":"2026-01-02T03:04:05.000006Z"}', id="json"),
        pytest.param("text", 'time="2026-01-02T03:04:05.000006Z" level=error '
                     'msg="nvhook: denied: X=\\u00e9"', id="text"),
    ],
)
def test_log_failure_writes_runcs_format(tmp_path: Path, fmt: str, want: str) -> None:
    log = tmp_path / "log.json"
    log.write_text('{"level":"info","msg":"before"}\n')
    now = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    args = ["--log", str(log), "--log-format", fmt, "create", "c"]
    assert shim.log_failure(args, "nvhook: denied: X=\u00e9", now=now)
    assert log.read_text().splitlines() == ['{"level":"info","msg":"before"}', want]


def test_log_failure_without_log_or_on_a_symlink(tmp_path: Path) -> None:
    assert not shim.log_failure(["create", "c"], "x")
    target = tmp_path / "target"
    target.write_text("")
    (tmp_path / "link").symlink_to(target)
    assert not shim.log_failure(["--log", str(tmp_path / "link"), "create", "c"], "x")
    assert target.read_text() == ""
    # An argv nvhook refused still names its log.
    log = tmp_path / "l"
    assert shim.log_failure(["--log", str(log), "--log-format", "json", "create", "--bogus", "c"],
                            "x")
    assert json.loads(log.read_text())["msg"] == "x"


@pytest.mark.parametrize(
    ("env", "granted", "want"),
    [
        pytest.param(["CUDA_VISIBLE_DEVICES=3,1,5"], [G[3], G[1], G[5]],
                     ["CUDA_VISIBLE_DEVICES=1,0,2"], id="sarus 3,1,5 -> 1,0,2"),
        pytest.param(["CUDA_VISIBLE_DEVICES=2"], [G[2]], ["CUDA_VISIBLE_DEVICES=0"],
                     id="one GPU is index 0"),
        pytest.param(["CUDA_VISIBLE_DEVICES=0,1"], [G[0], G[1]], ["CUDA_VISIBLE_DEVICES=0,1"],
                     id="already in order"),
        pytest.param(["A=1", "CUDA_VISIBLE_DEVICES=6:0", "B=2"], [MIG.uuid],
                     ["A=1", f"CUDA_VISIBLE_DEVICES={MIG.uuid}", "B=2"],
                     id="MIG device: its UUID, position kept"),
        pytest.param(["CUDA_VISIBLE_DEVICES=x"], [G[4], MIG.uuid, G[2]],
                     [f"CUDA_VISIBLE_DEVICES=1,{MIG.uuid},0"], id="GPUs and MIG mixed"),
        pytest.param(["A=1"], [G[0]], ["A=1"], id="absent: not added"),
        pytest.param(["CUDA_VISIBLE_DEVICES=3"], [], ["CUDA_VISIBLE_DEVICES=3"],
                     id="nothing granted: left alone"),
        pytest.param(["CUDA_VISIBLE_DEVICES=1", "X=y", "CUDA_VISIBLE_DEVICES=2"], [G[5]],
                     ["CUDA_VISIBLE_DEVICES=0", "X=y"], id="duplicates collapse to one"),
        pytest.param(["CUDA_VISIBLE_DEVICES"], [G[0]], ["CUDA_VISIBLE_DEVICES"],
                     id="entry without '=' is not the variable"),
        pytest.param(["CUDA_VISIBLE_DEVICES="], ["GPU-unknown"],
                     ["CUDA_VISIBLE_DEVICES=GPU-unknown"], id="unknown UUID passed as is"),
    ],
)
def test_reindex_cuda(env: list[str], granted: list[str], want: list[str]) -> None:
    assert apply.reindex_cuda(env, granted, INVENTORY) == tuple(want)


def test_reindex_without_inventory_keeps_uuids() -> None:
    assert apply.reindex_cuda(["CUDA_VISIBLE_DEVICES=0"], [G[0]], None) == (
        f"CUDA_VISIBLE_DEVICES={G[0]}",)


def test_with_prestart_hook_appends_and_names_the_config(tmp_path: Path) -> None:
    doc = {"hooks": {"prestart": [{"path": "/other"}]}, "x": 1}
    config = Config(path=tmp_path / "c.toml")
    out = shim.with_prestart_hook(doc, Path("/usr/local/bin/nvhook"), config)
    assert doc == {"hooks": {"prestart": [{"path": "/other"}]}, "x": 1}  # not mutated
    assert out["hooks"]["prestart"] == [
        {"path": "/other"},
        {"path": "/usr/local/bin/nvhook",
         "args": ["nvhook", "--config", str(tmp_path / "c.toml"), "prestart"],
         "env": [f"PATH={SAFE_PATH}"]},
    ]
    assert shim.with_prestart_hook({}, Path("/n"), Config())["hooks"]["prestart"][0]["args"] == [
        "nvhook", "prestart"]


@pytest.mark.parametrize(
    ("hooks", "has"),
    [
        ({"prestart": [{"path": "/usr/bin/nvidia-container-runtime-hook"}]}, True),
        ({"createRuntime": [{"path": "/usr/bin/nvidia-container-toolkit"}]}, True),
        ({"prestart": [{"path": "/usr/local/bin/nvhook"}]}, True),
        ({"prestart": [{"path": "/usr/bin/other"}]}, False),
        ({"createContainer": [{"path": "/usr/bin/nvidia-container-runtime-hook"}]}, False),
        (None, False),
    ],
)
def test_has_nvidia_hook(hooks: dict | None, has: bool) -> None:
    assert shim._has_nvidia_hook({"hooks": hooks} if hooks is not None else {}) is has


def test_resolve_runtime(tmp_path: Path) -> None:
    exe = tmp_path / "myrunc"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert shim.resolve_runtime("myrunc", {"PATH": str(tmp_path)}) == exe
    assert shim.resolve_runtime(str(exe), {}) == exe
    with pytest.raises(DelegateError, match="not found"):
        shim.resolve_runtime("no-such-runtime-xyz", {"PATH": str(tmp_path)})
    with pytest.raises(DelegateError, match="not found or not executable"):
        shim.resolve_runtime(str(tmp_path / "missing"), {})


@pytest.mark.parametrize(
    ("text", "want", "warns"),
    [
        (None, "runc", False),
        ('[runtime]\npath = "/usr/bin/crun"\n', "/usr/bin/crun", False),
        ("version = [broken", "runc", True),
        ('[runtime]\npath = ""\n', "runc", True),
        ('[policy]\nmode = "nonsense"\n[runtime]\npath = "crun"\n', "crun", False),
    ],
)
def test_runtime_name_is_lenient(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 text: str | None, want: str, warns: bool) -> None:
    path = tmp_path / "c.toml"
    if text is not None:
        path.write_text(text)
        assert shim.runtime_name(str(path), {}) == want
    else:
        assert shim.runtime_name(None, {}) in ("runc", want)  # /etc/nvhook may exist
    err = capsys.readouterr().err
    assert ("warning" in err) is warns
    assert len(err.splitlines()) == (1 if warns else 0)


# --- the shim as a process, with a fake runtime that records its argv and env ---------------



def test_shim_rewrites_then_execs_runtime_with_original_argv(node: Node, tmp_path: Path) -> None:
    rt = fake_runtime(tmp_path)
    node.write_config(f'[runtime]\npath = "{rt}"\n[policy]\nmode = "rewrite"\nindices = "allow"\n')
    bundle = write_bundle(tmp_path / "b", ["NVIDIA_VISIBLE_DEVICES=1,0",
                                           "CUDA_VISIBLE_DEVICES=1,0"])
    args = ["--root", "/r", "--log-format", "json", "create", "--bundle", str(bundle), "--",
            "c1"]
    proc = node.run(["--config", str(node.config), "runtime", *args],
                    extra={"BUNDLE": str(bundle)})
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert (rt.parent / "argv").read_text().splitlines() == args
    doc = json.loads((rt.parent / "seen.json").read_text())
    env = doc["process"]["env"]
    assert f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU1_UUID},{fakenvml.GPU0_UUID}" in env
    assert "CUDA_VISIBLE_DEVICES=1,0" in env
    [hook] = doc["hooks"]["prestart"]
    assert hook["args"] == ["nvhook", "--config", str(node.config), "prestart"]
    assert Path(hook["path"]).name == "nvhook" and Path(hook["path"]).is_absolute()
    assert [e["stage"] for e in node.audit_lines()] == ["runtime-create"]


def test_shim_denial_never_runs_runtime(node: Node, tmp_path: Path) -> None:
    rt = fake_runtime(tmp_path)
    node.write_config(f'[runtime]\npath = "{rt}"\n[policy]\nall = "never"\n')
    bundle = write_bundle(tmp_path / "b", ["NVIDIA_VISIBLE_DEVICES=all"])
    before = (bundle / "config.json").read_bytes()
    proc = node.run(["--config", str(node.config), "runtime", "create", "--bundle", str(bundle),
                     "c1"])
    assert proc.returncode == 3
    assert proc.stderr.decode().startswith("nvhook: denied: NVIDIA_VISIBLE_DEVICES=all")
    assert len(proc.stderr.splitlines()) == 1
    assert not (rt.parent / "argv").exists()
    assert (bundle / "config.json").read_bytes() == before


def test_shim_leaves_non_gpu_bundle_byte_identical(node: Node, tmp_path: Path) -> None:
    rt = fake_runtime(tmp_path)
    node.write_config(f'[runtime]\npath = "{rt}"\n')
    bundle = write_bundle(tmp_path / "b", ["PATH=/bin"])
    before = (bundle / "config.json").read_bytes()
    proc = node.run(["--config", str(node.config), "runtime", "create", "-b", str(bundle), "c"])
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert (bundle / "config.json").read_bytes() == before
    assert node.audit_lines() == []


def test_shim_passes_other_subcommands_despite_broken_config(node: Node, tmp_path: Path) -> None:
    rt = fake_runtime(tmp_path)
    node.config.write_text(f'[runtime]\npath = "{rt}"\n[policy]\nmode = "bogus"\n')
    proc = node.run(["--config", str(node.config), "runtime", "--root", "/r", "delete",
                     "--force", "c1"])
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert (rt.parent / "argv").read_text().splitlines() == ["--root", "/r", "delete",
                                                              "--force", "c1"]
    # The same config fails closed on a GPU create.
    bundle = write_bundle(tmp_path / "b", ["NVIDIA_VISIBLE_DEVICES=0"])
    proc = node.run(["--config", str(node.config), "runtime", "create", "-b", str(bundle), "c"])
    assert proc.returncode == 4
    assert len(proc.stderr.splitlines()) == 1


def test_shim_missing_runtime_is_one_line(node: Node, tmp_path: Path) -> None:
    node.write_config('[runtime]\npath = "/nonexistent/runc"\n')
    proc = node.run(["--config", str(node.config), "runtime", "state", "c1"])
    assert proc.returncode == 8
    assert proc.stderr.decode() == (
        "nvhook: runtime.path: /nonexistent/runc: not found or not executable\n")


@pytest.mark.parametrize(
    ("sub", "env", "status", "start"),
    [
        pytest.param("create", ["NVIDIA_VISIBLE_DEVICES=all"], 3, "nvhook: denied: ", id="create"),
        pytest.param("run", ["NVIDIA_VISIBLE_DEVICES=all"], 3, "nvhook: denied: ", id="run"),
        pytest.param("restore", ["NVIDIA_VISIBLE_DEVICES=all"], 3, "nvhook: denied: ",
                     id="restore"),
        pytest.param("run", ["NVIDIA_VISIBLE_DEVICES=GPU-nope"], 3, "nvhook: denied: ",
                     id="run: unknown UUID"),
    ],
)
def test_shim_judges_every_creating_subcommand_and_logs_for_containerd(
    node: Node, tmp_path: Path, sub: str, env: list[str], status: int, start: str
) -> None:
    rt = fake_runtime(tmp_path)
    node.write_config(f'[runtime]\npath = "{rt}"\n[policy]\nall = "never"\n')
    bundle = write_bundle(tmp_path / "b", env)
    log = tmp_path / "log.json"
    proc = node.run(["--config", str(node.config), "runtime", "--log", str(log), "--log-format",
                     "json", sub, "--bundle", str(bundle), "c1"])
    assert proc.returncode == status
    [line] = proc.stderr.decode().splitlines()
    assert line.startswith(start)
    assert not (rt.parent / "argv").exists()
    [entry] = [json.loads(x) for x in log.read_text().splitlines()]
    assert (entry["level"], entry["msg"]) == ("error", line)
    datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))


def test_shim_bad_config_is_logged_too(node: Node, tmp_path: Path) -> None:
    node.config.write_text('[policy]\nmode = "bogus"\n')
    bundle = write_bundle(tmp_path / "b", ["NVIDIA_VISIBLE_DEVICES=0"])
    log = tmp_path / "log.json"
    proc = node.run(["--config", str(node.config), "runtime", "--log", str(log), "--log-format",
                     "json", "create", "-b", str(bundle), "c"])
    assert proc.returncode == 4
    assert json.loads(log.read_text())["msg"] == proc.stderr.decode().strip()


CHAINED_RUNTIME = """#!/bin/sh
printf '%s\\n' "$@" > "$(dirname "$0")/argv"
cp "$BUNDLE/config.json" "$(dirname "$0")/seen.json"
echo "to stdout"
echo "to stderr" >&2
exit 42
"""


@pytest.mark.parametrize("sub", ["create", "run"])
def test_chained_nvidia_runtime_gets_the_argv_and_no_second_hook(
    node: Node, tmp_path: Path, sub: str
) -> None:
    """runtime.path = nvidia-container-runtime: it adds NVIDIA's hook itself, so nvhook
    inserts none; argv, stdio and exit status pass through unchanged (exec)."""
    rt = tmp_path / "rt" / "nvidia-container-runtime"
    rt.parent.mkdir()
    rt.write_text(CHAINED_RUNTIME)
    rt.chmod(0o755)
    node.write_config(f'[runtime]\npath = "{rt}"\n[policy]\nmode = "rewrite"\n')
    bundle = write_bundle(tmp_path / "b", ["NVIDIA_VISIBLE_DEVICES=1"])
    args = ["--root", "/r", "--log", str(tmp_path / "log.json"), "--log-format", "json", sub,
            "--bundle", str(bundle), "c1"]
    proc = node.run(["--config", str(node.config), "runtime", *args],
                    extra={"BUNDLE": str(bundle)})
    assert (proc.returncode, proc.stdout, proc.stderr) == (42, b"to stdout\n", b"to stderr\n")
    assert (rt.parent / "argv").read_text().splitlines() == args
    doc = json.loads((rt.parent / "seen.json").read_text())
    assert f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU1_UUID}" in doc["process"]["env"]
    assert "hooks" not in doc or not doc["hooks"].get("prestart")
    assert not (tmp_path / "log.json").exists()


@pytest.mark.parametrize(("nvidia_text", "env", "hooked"), [
    pytest.param("", ["NVIDIA_VISIBLE_DEVICES=none"], True,
                 id="none kept: NVIDIA's hook is added for the driver libraries"),
    pytest.param('swarm-resource = "DOCKER_RESOURCE_GPU"\n', ["DOCKER_RESOURCE_GPU=none"], True,
                 id="none through a swarm name set only in NVIDIA's config"),
    pytest.param("accept-nvidia-visible-devices-envvar-when-unprivileged = false\n",
                 ["NVIDIA_VISIBLE_DEVICES=none"], False,
                 id="NVIDIA ignores an unprivileged env: nothing to attach, no hook"),
])
def test_shim_adds_nvidias_hook_for_none_as_nvidia_reads_it(
        node: Node, tmp_path: Path, nvidia_text: str, env: list[str], hooked: bool) -> None:
    rt = fake_runtime(tmp_path)
    nvct = tmp_path / "nvidia-config.toml"
    nvct.write_text(nvidia_text)
    node.write_config(f'[runtime]\npath = "{rt}"\n[delegate]\npath = ""\n'
                      f'args = ["-config={nvct}", "prestart"]\n')
    bundle = write_bundle(tmp_path / "b", env)
    proc = node.run(["--config", str(node.config), "runtime", "create", "--bundle",
                     str(bundle), "c1"], extra={"BUNDLE": str(bundle)})
    assert (proc.returncode, proc.stderr) == (0, b"")
    doc = json.loads((rt.parent / "seen.json").read_text())
    assert bool(doc.get("hooks", {}).get("prestart")) is hooked, doc.get("hooks")
