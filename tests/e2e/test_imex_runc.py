"""IMEX channels through real runc: nvhook is the prestart hook, a recording stand-in plays
NVIDIA's hook, the fake NVML plays the GPUs. Under the default policy (imex = "privileged")
an unprivileged container asking NVIDIA_IMEX_CHANNELS=0 never starts, and a privileged one
starts with the channel handed on to NVIDIA's hook."""

from __future__ import annotations

from pathlib import Path

import fakenvml
import pytest

from .harness import BundleFactory, Recorder, new_container_id, run_runc
from .test_prestart import MARKER, hook_entry, node_config

pytestmark = pytest.mark.e2e

GPU = f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"
RUNC_BOUNDING = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


@pytest.mark.parametrize(
    ("bounding", "runs"),
    [
        pytest.param(RUNC_BOUNDING, False, id="unprivileged: refused"),
        pytest.param([*RUNC_BOUNDING, "CAP_SYS_ADMIN"], True, id="privileged: admitted"),
    ],
)
def test_imex_channel_under_the_default_policy(bounding: list[str], runs: bool,
                                               bundle_factory: BundleFactory, recorder: Recorder,
                                               fake_nvml: Path, tmp_path: Path) -> None:
    config = node_config(tmp_path, recorder, "")
    bundle = bundle_factory(
        args=["/bin/echo", MARKER], env=[GPU, "NVIDIA_IMEX_CHANNELS=0"], caps_bounding=bounding,
        hooks={"prestart": [hook_entry(config, fake_nvml, True)]},
    )
    result = run_runc(bundle, new_container_id())
    output = result.stdout + result.stderr
    record = recorder.read()
    if not runs:
        assert result.returncode != 0 and MARKER not in output
        assert ("nvhook: denied: NVIDIA_IMEX_CHANNELS=0: IMEX channel 0: an unprivileged "
                'container may not have IMEX channels (policy.imex = \\"privileged\\")') in output
        assert record is None, "NVIDIA's hook ran for a refused container"
        return
    assert result.returncode == 0, output
    assert MARKER in output
    assert record is not None, "NVIDIA's hook was not called"
    assert record.config_env_map["NVIDIA_IMEX_CHANNELS"] == "0"
    assert record.config_env_map["NVIDIA_VISIBLE_DEVICES"] == fakenvml.GPU0_UUID
