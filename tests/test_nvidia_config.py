"""NVIDIA's own config.toml decides which channel counts (issue 9 §2).

Every case here fails on the code before NVIDIA's config was read: nvhook took the
union of the channels and ignored accept-*, swarm-resource and the supported
capabilities, so its decision named devices NVIDIA never attaches, or skipped a
container NVIDIA then gave GPUs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from builders import ADMIN, device_mount, fake_inventory, make_spec, policy
from conftest import Node, runc_state, write_bundle
from fakenvml import GPU0_UUID, GPU1_UUID

from nvhook.decision.decide import Outcome, decide
from nvhook.decision.request import Channel, parse
from nvhook.errors import ConfigError
from nvhook.nvidia import config as nvidia_config
from nvhook.nvidia.config import NvidiaConfig
from nvhook.nvidia.paths import candidate_paths, config_flag

P = pytest.param
ALL_GPUS = ("GPU-", "MIG-")  # prefixes only: "all" grants every live device
MOUNTS_ON = NvidiaConfig(path="t", accept_volume_mounts=True)
ENV_OFF = NvidiaConfig(path="t", accept_env_unprivileged=False)
BOTH = NvidiaConfig(path="t", accept_volume_mounts=True, accept_env_unprivileged=False)
DEFAULT = NvidiaConfig()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        P("", DEFAULT, id="empty file: NVIDIA's defaults"),
        P("accept-nvidia-visible-devices-as-volume-mounts = true\n",
          NvidiaConfig(accept_volume_mounts=True), id="volume mounts accepted"),
        P("accept-nvidia-visible-devices-envvar-when-unprivileged = false\n",
          NvidiaConfig(accept_env_unprivileged=False), id="unprivileged env refused"),
        P('swarm-resource = " DOCKER_RESOURCE_GPU , ,OTHER"\n',
          NvidiaConfig(swarm_resource=("DOCKER_RESOURCE_GPU", "OTHER")),
          id="swarm-resource split and trimmed"),
        P('supported-driver-capabilities = "utility,compute"\n',
          NvidiaConfig(supported_driver_capabilities=("compute", "utility")),
          id="supported capabilities"),
        P('[features]\nignore-imex-channel-requests = true\n',
          NvidiaConfig(ignore_imex_requests=True), id="IMEX requests ignored"),
        P('[nvidia-container-runtime]\nmode = "legacy"\n'
          '[nvidia-container-runtime-hook]\nskip-mode-detection = true\n',
          NvidiaConfig(mode="legacy", skip_mode_detection=True), id="mode keys"),
    ],
)
def test_parse_keys_as_nvidia_applies_them(text: str, expected: NvidiaConfig) -> None:
    got = nvidia_config.parse(text.encode(), "t.toml")
    assert got == NvidiaConfig(**{**expected.__dict__, "path": "t.toml"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        P("accept-nvidia-visible-devices-as-volume-mounts = 1\n",
          "accept-nvidia-visible-devices-as-volume-mounts: expected true or false",
          id="non-boolean switch"),
        P('supported-driver-capabilities = "compute,teleport"\n',
          "unknown capabilities teleport", id="unknown capability"),
        P("swarm-resource = [1]\n", "swarm-resource: expected a string", id="swarm not a string"),
        P("a = = b\n", "invalid TOML", id="invalid TOML"),
    ],
)
def test_invalid_config_is_one_line_config_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        nvidia_config.parse(text.encode(), "t.toml")
    assert message in e.value.message and "\n" not in e.value.message
    assert e.value.message.startswith("t.toml: ")


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        P(["prestart"], None, id="no flag"),
        P(["-config=/x.toml", "prestart"], "/x.toml", id="-config=X"),
        P(["--config", "/x.toml", "prestart"], "/x.toml", id="--config X"),
        P(["-debug", "-config=/a", "-config=/b", "prestart"], "/b", id="last wins"),
        P(["prestart", "-config=/x.toml"], None, id="after the stage word: not a flag"),
    ],
)
def test_config_flag_read_as_go_flag_does(args: list[str], flag: str | None) -> None:
    assert config_flag(args) == flag


def test_missing_default_files_mean_defaults_but_a_named_one_must_exist(tmp_path: Path) -> None:
    missing = (str(tmp_path / "a.toml"), str(tmp_path / "b.toml"))
    assert nvidia_config.load(["prestart"], missing) == DEFAULT
    (tmp_path / "b.toml").write_text("accept-nvidia-visible-devices-as-volume-mounts = true\n")
    assert nvidia_config.load(["prestart"], missing).accept_volume_mounts is True
    assert candidate_paths([f"-config={tmp_path}/c.toml"]) == ((f"{tmp_path}/c.toml",), True)
    with pytest.raises(ConfigError, match="does not exist"):
        nvidia_config.load([f"-config={tmp_path}/c.toml"], missing)


MOUNT1 = device_mount(GPU1_UUID)


@pytest.mark.parametrize(
    ("nvidia", "env", "caps", "mounts", "channel", "outcome", "granted"),
    [
        P(MOUNTS_ON, [f"NVIDIA_VISIBLE_DEVICES={GPU0_UUID}"], (), [MOUNT1], Channel.MOUNTS,
          Outcome.ALLOW, (GPU1_UUID,), id="mounts accepted and present: env not read"),
        P(MOUNTS_ON, ["NVIDIA_VISIBLE_DEVICES=all"], (), [MOUNT1], Channel.MOUNTS,
          Outcome.ALLOW, (GPU1_UUID,), id="image all is not read when mounts win"),
        P(MOUNTS_ON, [f"NVIDIA_VISIBLE_DEVICES={GPU0_UUID}"], (), [], Channel.ENV,
          Outcome.ALLOW, (GPU0_UUID,), id="mounts accepted but none: env"),
        P(DEFAULT, [f"NVIDIA_VISIBLE_DEVICES={GPU0_UUID}"], (), [MOUNT1], Channel.ENV,
          Outcome.ALLOW, (GPU0_UUID,), id="default: mounts not read, not granted"),
        P(DEFAULT, [], (), [MOUNT1], Channel.ENV, Outcome.SKIP, (),
          id="default: mounts alone ask for nothing"),
        P(ENV_OFF, ["NVIDIA_VISIBLE_DEVICES=all"], (), [], Channel.NONE, Outcome.SKIP, (),
          id="unprivileged env ignored by NVIDIA: nothing attached"),
        P(ENV_OFF, [f"NVIDIA_VISIBLE_DEVICES={GPU0_UUID}"], ADMIN, [], Channel.ENV,
          Outcome.ALLOW, (GPU0_UUID,), id="privileged env still read"),
        P(BOTH, ["NVIDIA_VISIBLE_DEVICES=all"], (), [MOUNT1], Channel.MOUNTS, Outcome.ALLOW,
          (GPU1_UUID,), id="mounts win, env off"),
    ],
)
def test_channel_order_follows_nvidia(nvidia, env, caps, mounts, channel, outcome,
                                      granted) -> None:
    spec = make_spec(env=env, caps=caps, mounts=mounts)
    request = parse(spec, (), nvidia)
    assert request.nvidia.channel is channel
    d = decide(request, fake_inventory(), policy(), spec)
    assert (d.outcome, d.granted) == (outcome, granted), d.reasons


def test_swarm_resource_from_nvidia_config_replaces_the_variable() -> None:
    nvidia = NvidiaConfig(path="t", swarm_resource=("DOCKER_RESOURCE_GPU",))
    spec = make_spec(env=[f"NVIDIA_VISIBLE_DEVICES={GPU0_UUID}", "DOCKER_RESOURCE_GPU=all"])
    d = decide(parse(spec, (), nvidia), fake_inventory(), policy(), spec)
    assert d.outcome is Outcome.DENY
    assert d.reasons[0].startswith("DOCKER_RESOURCE_GPU=all: an unprivileged container")


def test_rewrite_that_drops_every_mount_voids_the_env_fallback() -> None:
    """NVIDIA reads the mounts; when the rewrite refuses them all it would fall back to
    the env (here ``all``), which must then find ``void``."""
    spec = make_spec(env=["NVIDIA_VISIBLE_DEVICES=all"], mounts=[MOUNT1])
    d = decide(parse(spec, (), MOUNTS_ON), fake_inventory(),
               policy(mode="rewrite", deny=[GPU1_UUID]), spec)
    assert d.outcome is Outcome.REWRITE and d.granted == ()
    assert "NVIDIA_VISIBLE_DEVICES=void" in d.env
    assert d.doc is not None and not [m for m in d.doc["mounts"]
                                      if "nvidia-container-devices" in m["destination"]]


@pytest.mark.parametrize(
    ("supported", "value", "outcome"),
    [
        P("utility,compute", "all", Outcome.ALLOW, id="all is cut to the supported set"),
        P("utility,compute", None, Outcome.ALLOW, id="default within supported"),
        P("utility", "graphics", Outcome.DENY, id="unsupported asked: refused"),
    ],
)
def test_driver_capabilities_within_nvidia_supported(supported, value, outcome) -> None:
    nvidia = nvidia_config.parse(f'supported-driver-capabilities = "{supported}"\n'.encode(),
                                 "t")
    env = [f"NVIDIA_VISIBLE_DEVICES={GPU0_UUID}"]
    if value is not None:
        env.append(f"NVIDIA_DRIVER_CAPABILITIES={value}")
    spec = make_spec(env=env)
    allowed = [c for c in supported.split(",") if c != "graphics"]
    d = decide(parse(spec, (), nvidia), fake_inventory(),
               policy(driver_capabilities=allowed), spec)
    assert d.outcome is outcome, d.reasons


# -- through the hook's own entry point (fast path included) ---------------------------


def nvidia_node(node: Node, tmp_path: Path, nvidia_text: str | None) -> Path:
    nvct = tmp_path / "nvidia-config.toml"
    if nvidia_text is not None:
        nvct.write_text(nvidia_text)
    node.write_config(f'[delegate]\npath = ""\nargs = ["-config={nvct}", "prestart"]\n')
    return nvct


def test_fast_path_does_not_skip_a_swarm_name_set_only_in_nvidia_config(
        node: Node, tmp_path: Path) -> None:
    nvidia_node(node, tmp_path, 'swarm-resource = "DOCKER_RESOURCE_GPU"\n')
    bundle = write_bundle(tmp_path / "b", ["PATH=/bin", "DOCKER_RESOURCE_GPU=all"])
    proc = node.run(["--config", str(node.config), "prestart"], stdin=runc_state(bundle))
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.decode().startswith("nvhook: denied: DOCKER_RESOURCE_GPU=all")


@pytest.mark.parametrize(
    ("nvidia_text", "env", "code", "stderr"),
    [
        P("a = = b\n", ["NVIDIA_VISIBLE_DEVICES=0"], 4, "invalid TOML",
          id="broken NVIDIA config: GPU request fails closed"),
        P(None, ["NVIDIA_VISIBLE_DEVICES=0"], 4, "does not exist",
          id="named NVIDIA config missing: fails closed"),
        P("a = = b\n", ["PATH=/bin"], 0, "", id="broken NVIDIA config: no GPU asked, no error"),
    ],
)
def test_unreadable_nvidia_config_fails_closed_on_the_gpu_path_only(
        node: Node, tmp_path: Path, nvidia_text, env, code, stderr) -> None:
    nvidia_node(node, tmp_path, nvidia_text)
    bundle = write_bundle(tmp_path / "b", env)
    proc = node.run(["--config", str(node.config), "prestart"], stdin=runc_state(bundle))
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.decode().splitlines()
    if stderr:
        assert len(lines) == 1 and lines[0].startswith("nvhook: ") and stderr in lines[0]
    else:
        assert lines == []


def test_explain_names_the_channel_nvidia_reads(node: Node, tmp_path: Path) -> None:
    nvidia_node(node, tmp_path, "accept-nvidia-visible-devices-as-volume-mounts = true\n")
    bundle = write_bundle(tmp_path / "b", ["NVIDIA_VISIBLE_DEVICES=all"],
                          mounts=[device_mount(GPU0_UUID)])
    proc = node.run(["--config", str(node.config), "explain", "--json", "--bundle", str(bundle)])
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["nvidia"]["channel"] == "mounts"
    assert "the env is not read" in out["nvidia"]["why"]
    assert out["granted"] == [GPU0_UUID]
    text = node.run(["--config", str(node.config), "explain", "--bundle", str(bundle)])
    assert re.search(r"^nvidia +reads mounts: ", text.stdout.decode(), re.M)
