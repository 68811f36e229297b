"""nvhook.config: the TOML file -> Config; every error names the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakenvml import GPU0_UUID, MIG_A_UUID

from nvhook import config
from nvhook.config import (
    DEFAULT_AUDIT_PATH,
    SAFE_PATH,
    Config,
    DelegateSettings,
    InventorySettings,
    InventorySource,
)
from nvhook.decision.policy import (
    AllRule,
    DeviceNodes,
    Imex,
    Indices,
    MigConfig,
    Mode,
    Policy,
    Trust,
    effective,
)
from nvhook.decision.request import ALL_DRIVER_CAPABILITIES
from nvhook.errors import ConfigError, ExitStatus

P = pytest.param
PATH = Path("/etc/nvhook/test.toml")


def parse(text: str | bytes) -> Config:
    return config.parse(text.encode() if isinstance(text, str) else text, PATH)


# -- finding the file ---------------------------------------------------------------------------

@pytest.fixture
def no_default(tmp_path, monkeypatch):
    missing = tmp_path / "absent" / "config.toml"
    monkeypatch.setattr(config, "DEFAULT_PATH", missing)
    return missing


def test_defaults_when_the_default_file_is_missing(no_default):
    cfg = config.load(None, environ={})
    assert cfg == Config()
    assert cfg.path is None
    assert cfg.policy == Policy()
    assert cfg.policy.mode is Mode.ENFORCE
    assert cfg.policy.all is AllRule.PRIVILEGED
    assert cfg.inventory == InventorySettings(InventorySource.NVML, None, 5.0)
    assert cfg.delegate == DelegateSettings(None, ("prestart",), (f"PATH={SAFE_PATH}",))
    assert cfg.audit_path == DEFAULT_AUDIT_PATH
    assert cfg.swarm_resource == ()


def test_default_file_is_read_when_present(no_default):
    no_default.parent.mkdir()
    no_default.write_text('[policy]\nmode = "audit"\n')
    cfg = config.load(None, environ={})
    assert cfg.path == no_default
    assert cfg.policy.mode is Mode.AUDIT


def test_explicit_missing_file_is_an_error(no_default, tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as exc:
        config.load(str(missing), environ={})
    assert str(exc.value) == f"{missing}: config file does not exist"
    assert exc.value.status is ExitStatus.CONFIG


def test_nvhook_config_env_names_the_file(no_default, tmp_path):
    path = tmp_path / "env.toml"
    path.write_text('[policy]\nall = "never"\n')
    cfg = config.load(None, environ={"NVHOOK_CONFIG": str(path)})
    assert cfg.path == path
    assert cfg.policy.all is AllRule.NEVER


def test_nvhook_config_env_missing_file_is_an_error(no_default, tmp_path):
    missing = tmp_path / "env-missing.toml"
    with pytest.raises(ConfigError, match="config file does not exist"):
        config.load(None, environ={"NVHOOK_CONFIG": str(missing)})


def test_explicit_path_beats_nvhook_config(no_default, tmp_path):
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text('[policy]\nmode = "rewrite"\n')
    b.write_text('[policy]\nmode = "audit"\n')
    assert config.load(str(a), environ={"NVHOOK_CONFIG": str(b)}).policy.mode is Mode.REWRITE


def test_empty_nvhook_config_means_the_default(no_default):
    assert config.load(None, environ={"NVHOOK_CONFIG": ""}) == Config()


def test_unreadable_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        config.load(str(tmp_path), environ={})


# -- a full file ----------------------------------------------------------------------------

FULL = f"""
version = 1

[policy]
mode = "rewrite"
all = "never"
indices = "deny"
unprivileged-env = "ignore"
volume-mounts = "deny"
cdi-annotations = "ignore"
allow = ["{GPU0_UUID}", "{MIG_A_UUID}"]
deny = ["GPU-00000000-0000-4000-8000-000000000000"]
driver-capabilities = ["compute", "utility", "compute"]
mig-config = "never"
imex = "never"
imex-channels = [3, 0, 3]
device-nodes = "deny"

[[policy.rules]]
name = "team-a"
match.annotations = {{ "io.kubernetes.pod.namespace" = "team-a" }}
all = "always"
imex = "always"
imex-channels = [7]

[inventory]
source = "file"
file = "/etc/nvhook/inventory.json"
timeout = 2

[delegate]
path = "/usr/bin/nvidia-container-runtime-hook"
args = ["-config=/etc/nvidia-container-runtime/config.toml", "prestart"]
env = ["PATH=/usr/bin", "LANG=C"]

[audit]
path = "/tmp/audit.jsonl"

[runtime]
path = "/usr/bin/runc"

[request]
swarm-resource = ["DOCKER_RESOURCE_GPU"]
"""


def test_full_file():
    cfg = parse(FULL)
    assert cfg.path == PATH
    assert cfg.policy == Policy(
        mode=Mode.REWRITE,
        all=AllRule.NEVER,
        indices=Indices.DENY,
        unprivileged_env=Trust.IGNORE,
        volume_mounts=Trust.DENY,
        cdi_annotations=Trust.IGNORE,
        allow=(GPU0_UUID, MIG_A_UUID),
        deny=("GPU-00000000-0000-4000-8000-000000000000",),
        driver_capabilities=("compute", "utility"),
        mig_config=MigConfig.NEVER,
        imex=Imex.NEVER,
        imex_channels=(3, 0),
        device_nodes=DeviceNodes.DENY,
    )
    assert [r.name for r in cfg.rules] == ["team-a"]
    assert cfg.rules[0].overrides == {"all": AllRule.ALWAYS, "imex": Imex.ALWAYS,
                                      "imex_channels": (7,)}
    assert cfg.inventory == InventorySettings(
        InventorySource.FILE, Path("/etc/nvhook/inventory.json"), 2.0
    )
    assert cfg.delegate == DelegateSettings(
        "/usr/bin/nvidia-container-runtime-hook",
        ("-config=/etc/nvidia-container-runtime/config.toml", "prestart"),
        ("PATH=/usr/bin", "LANG=C"),
    )
    assert cfg.audit_path == "/tmp/audit.jsonl"
    assert cfg.runtime_path == "/usr/bin/runc"
    assert cfg.swarm_resource == ("DOCKER_RESOURCE_GPU",)


def test_empty_file_is_the_defaults_with_a_path():
    cfg = parse("")
    assert cfg.path == PATH
    assert cfg.policy == Policy() and cfg.rules == () and cfg.swarm_resource == ()


def test_capabilities_default_to_all_seven():
    assert parse("").policy.driver_capabilities == ALL_DRIVER_CAPABILITIES


# -- errors ---------------------------------------------------------------------------------

# (toml, key named in the message, problem substring)
ERRORS = [
    P('[policy]\nmode = "strict"', "policy.mode",
      "expected one of 'enforce', 'rewrite', 'audit', got 'strict'", id="bad mode"),
    P('[policy]\nmode = ["enforce"]', "policy.mode", "expected one of", id="mode not a string"),
    P('[policy]\nall = "sometimes"', "policy.all",
      "expected one of 'never', 'privileged', 'always', got 'sometimes'", id="bad all"),
    P('[policy]\nall = true', "policy.all", "got True", id="all as a boolean"),
    P('[policy]\nindices = "yes"', "policy.indices", "'allow', 'deny'", id="bad indices"),
    P('[policy]\nunprivileged-env = "trust"', "policy.unprivileged-env",
      "'accept', 'ignore', 'deny'", id="bad unprivileged-env"),
    P('[policy]\nvolume-mounts = "off"', "policy.volume-mounts", "got 'off'",
      id="bad volume-mounts"),
    P('[policy]\ncdi-annotations = 1', "policy.cdi-annotations", "got 1",
      id="bad cdi-annotations"),
    P('[policy]\nmig-config = "always"', "policy.mig-config", "'never', 'privileged'",
      id="bad mig-config"),
    P('[policy]\ndevice-nodes = "ignore"', "policy.device-nodes", "'judge', 'deny'",
      id="bad device-nodes"),
    P('[policy]\nimex = "any"', "policy.imex", "'never', 'privileged', 'always', got 'any'",
      id="bad imex"),
    P('[policy]\nimex-channels = ["0"]', "policy.imex-channels",
      "expected an array of IMEX channel numbers", id="imex-channels as strings"),
    P("[policy]\nimex-channels = [-1]", "policy.imex-channels", "integers 0..1048575",
      id="negative IMEX channel"),
    P("[policy]\nimex-channels = [1048576]", "policy.imex-channels", "got [1048576]",
      id="IMEX channel past libnvidia-container's bound"),
    P("[policy]\nimex-channels = [true]", "policy.imex-channels", "got [True]",
      id="IMEX channel as a boolean"),
    P('[[policy.rules]]\nmatch.annotations = {a = "x"}\nimex = "sometimes"',
      "policy.rules[0].imex", "got 'sometimes'", id="bad imex in a rule"),
    P("polcy = {}", "polcy", "unknown key (expected one of audit, delegate, inventory,",
      id="unknown top-level key"),
    P('[policy]\nunprivileged_env = "deny"', "policy.unprivileged_env", "unknown key",
      id="typo'd key in [policy] (underscore)"),
    P('[policy]\nallow_list = []', "policy.allow_list", "unknown key", id="typo'd allow key"),
    P('[policy]\nallow = ["0"]', "policy.allow", "expected GPU-/MIG- UUIDs, got '0'",
      id="index in the allow list"),
    P('[policy]\ndeny = ["all"]', "policy.deny", "expected GPU-/MIG- UUIDs, got 'all'",
      id="all in the deny list"),
    P(f'[policy]\nallow = "{GPU0_UUID}"', "policy.allow", "expected an array of strings",
      id="allow as a bare string"),
    P("[policy]\nallow = [1]", "policy.allow", "expected an array of strings",
      id="allow with a number"),
    P('[policy]\ndriver-capabilities = ["compute", "cuda"]', "policy.driver-capabilities",
      "unknown capability 'cuda'", id="unknown capability"),
    P('[policy]\ndriver-capabilities = ["all"]', "policy.driver-capabilities",
      "unknown capability 'all'", id="'all' is not a capability in the policy"),
    P('[policy]\ndriver-capabilities = "compute"', "policy.driver-capabilities",
      "expected an array of strings", id="capabilities as a string"),
    P("policy = 1", "policy", "expected a table", id="policy not a table"),
    P("[policy]\nrules = 1", "policy.rules", "expected an array of tables",
      id="rules not an array"),
    P("[policy]\nrules = [1]", "policy.rules[0]", "expected a table", id="rule not a table"),
    P('[[policy.rules]]\nname = "x"\nmode = "audit"', "policy.rules[0].match",
      "expected a table of 'annotations', 'namespace'", id="rule without match"),
    P('[[policy.rules]]\nmatch.annotations = {a = "x"}\nmatch.labels = {}',
      "policy.rules[0].match", "expected a table of 'annotations'",
      id="rule match with another key"),
    P("[[policy.rules]]\nmatch.annotations = {}", "policy.rules[0].match.annotations",
      "expected a non-empty table of regexes", id="rule with no annotation patterns"),
    P('[[policy.rules]]\nmatch.annotations = {a = "("}', "policy.rules[0].match.annotations.a",
      "bad regex", id="bad rule regex"),
    P("[[policy.rules]]\nmatch.annotations = {a = 1}", "policy.rules[0].match.annotations.a",
      "expected a regex string", id="rule regex not a string"),
    P('[[policy.rules]]\nname = 1\nmatch.annotations = {a = "x"}', "policy.rules[0].name",
      "expected a string", id="rule name not a string"),
    P('[[policy.rules]]\nmatch.annotations = {a = "x"}\n\n[[policy.rules]]\n'
      'match.annotations = {a = "y"}\nmod = "audit"', "policy.rules[1].mod", "unknown key",
      id="typo'd override in the second rule"),
    P('[[policy.rules]]\nmatch.annotations = {a = "x"}\nall = "maybe"', "policy.rules[0].all",
      "got 'maybe'", id="bad override value"),
    P('[[policy.rules]]\nmatch.annotations = {a = "x"}\nrules = []', "policy.rules[0].rules",
      "unknown key", id="rules cannot nest"),
    P('[inventory]\nsource = "file"', "inventory.file", 'required when inventory.source = "file"',
      id="inventory.source=file without file"),
    P('[inventory]\nsource = "dcgm"', "inventory.source", "'nvml', 'file'",
      id="unknown inventory source"),
    P('[inventory]\nfile = ""', "inventory.file", "expected a non-empty path string",
      id="empty inventory file"),
    P("[inventory]\nfile = 1", "inventory.file", "expected a non-empty path string",
      id="inventory file not a string"),
    P("[inventory]\ntimeout = 0", "inventory.timeout", "expected seconds in (0, 600], got 0",
      id="timeout zero"),
    P("[inventory]\ntimeout = -1.5", "inventory.timeout", "got -1.5", id="negative timeout"),
    P("[inventory]\ntimeout = 601", "inventory.timeout", "got 601", id="timeout over 600"),
    P('[inventory]\ntimeout = "5"', "inventory.timeout", "got '5'", id="timeout as a string"),
    P("[inventory]\ntimeout = true", "inventory.timeout", "got True", id="timeout as a bool"),
    P("[inventory]\nretries = 3", "inventory.retries", "unknown key",
      id="unknown inventory key"),
    P('[delegate]\nenv = ["PATH=/bin", "LD_PRELOAD"]', "delegate.env[1]",
      "expected NAME=VALUE, got 'LD_PRELOAD'", id="delegate.env entry without '='"),
    P('[delegate]\nenv = "PATH=/bin"', "delegate.env", "expected an array of strings",
      id="delegate.env as a string"),
    P('[delegate]\nargs = "prestart"', "delegate.args", "expected an array of strings",
      id="delegate.args as a string"),
    P('[delegate]\npath = "bin/hook"', "delegate.path",
      "expected an absolute path or a bare command name", id="relative delegate path"),
    P("[delegate]\npath = 1", "delegate.path", "expected a string", id="delegate path number"),
    P("[audit]\npath = 1", "audit.path", "expected a string, got 1", id="audit path number"),
    P('[audit]\nfile = "x"', "audit.file", "unknown key", id="unknown audit key"),
    P('[runtime]\npath = ""', "runtime.path", "must not be empty", id="empty runtime path"),
    P('[request]\nswarm-resource = ["1BAD"]', "request.swarm-resource",
      "'1BAD' is not an env variable name", id="bad swarm-resource name"),
    P('[request]\nswarm-resource = "A,B C"', "request.swarm-resource",
      "'B C' is not an env variable name", id="bad name in a swarm-resource string"),
    P("[request]\nswarm-resource = 1", "request.swarm-resource", "expected an array of strings",
      id="swarm-resource a number"),
    P("version = 2", "version", "unsupported version 2 (expected 1)", id="version 2"),
    P('version = "1"', "version", "unsupported version '1'", id="version as a string"),
    P("version = true", "version", "unsupported version True", id="version true is not 1"),
]


@pytest.mark.parametrize(("text", "key", "problem"), ERRORS)
def test_errors_name_file_key_and_problem(text, key, problem):
    with pytest.raises(ConfigError) as exc:
        parse(text)
    message = str(exc.value)
    assert message.startswith(f"{PATH}: {key}: ")
    assert problem in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        P(b'[policy]\nmode = "audit"\nmode = "enforce"\n', "invalid TOML: ",
          id="duplicate key is invalid TOML"),
        P(b"[policy]\n\nmode = audit\n", "(at line 3, column 8)",
          id="invalid TOML names the line and column"),
        P(b"[policy\n", "(at line 1,", id="unclosed table header"),
        P(b'[policy]\nmode = "\xff"\n', "not UTF-8 at byte 17", id="non-UTF-8 names the byte"),
    ],
)
def test_unparseable_files(data, problem):
    with pytest.raises(ConfigError) as exc:
        parse(data)
    assert str(exc.value).startswith(f"{PATH}: ")
    assert problem in str(exc.value)


def test_load_reports_parse_errors_with_the_real_path(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[policy]\nmode = "x"\n')
    with pytest.raises(ConfigError, match=rf"^{path}: policy\.mode: "):
        config.load(str(path), environ={})


# -- rules ------------------------------------------------------------------------------------

RULES = """
[policy]
mode = "enforce"
all = "privileged"
indices = "allow"

[[policy.rules]]
name = "team-a"
match.annotations = { "io.kubernetes.pod.namespace" = "team-a" }
all = "always"

[[policy.rules]]
name = "batch"
match.annotations = { "io.kubernetes.pod.namespace" = "team-.*", "tier" = "batch|bulk" }
mode = "rewrite"

[[policy.rules]]
name = "catch-team"
match.annotations = { "io.kubernetes.pod.namespace" = "team-.*" }
indices = "deny"

[[policy.rules]]
match.annotations = { "present" = ".*" }
mode = "audit"
"""

NS = "io.kubernetes.pod.namespace"

# (annotations, rule name or None, expected (mode, all, indices))
RULE_CASES = [
    P({}, None, (Mode.ENFORCE, AllRule.PRIVILEGED, Indices.ALLOW),
      id="no annotations: the base policy"),
    P({NS: "team-a"}, "team-a", (Mode.ENFORCE, AllRule.ALWAYS, Indices.ALLOW),
      id="exact match: rule overrides only 'all'"),
    P({NS: "team-a-dev"}, "catch-team", (Mode.ENFORCE, AllRule.PRIVILEGED, Indices.DENY),
      id="'team-a' does NOT match 'team-a-dev' (anchored full match)"),
    P({NS: "xteam-a"}, None, (Mode.ENFORCE, AllRule.PRIVILEGED, Indices.ALLOW),
      id="patterns are anchored at the start too"),
    P({NS: "team-a", "tier": "batch"}, "team-a", (Mode.ENFORCE, AllRule.ALWAYS, Indices.ALLOW),
      id="first matching rule wins, later matches are ignored"),
    P({NS: "team-b", "tier": "batch"}, "batch", (Mode.REWRITE, AllRule.PRIVILEGED, Indices.ALLOW),
      id="all patterns of a rule match (AND)"),
    P({NS: "team-b", "tier": "bulk"}, "batch", (Mode.REWRITE, AllRule.PRIVILEGED, Indices.ALLOW),
      id="alternation matches as a whole"),
    P({NS: "team-b", "tier": "batchy"}, "catch-team",
      (Mode.ENFORCE, AllRule.PRIVILEGED, Indices.DENY),
      id="one pattern failing fails the rule (AND), next rule is tried"),
    P({NS: "team-b"}, "catch-team", (Mode.ENFORCE, AllRule.PRIVILEGED, Indices.DENY),
      id="a missing annotation means no match"),
    P({"tier": "batch"}, None, (Mode.ENFORCE, AllRule.PRIVILEGED, Indices.ALLOW),
      id="the other pattern alone is not enough"),
    P({"present": ""}, "rules[3]", (Mode.AUDIT, AllRule.PRIVILEGED, Indices.ALLOW),
      id="unnamed rule is named by its index; empty value matches '.*'"),
    P({"Present": "x"}, None, (Mode.ENFORCE, AllRule.PRIVILEGED, Indices.ALLOW),
      id="annotation keys are case-sensitive"),
    P({NS: "TEAM-A"}, None, (Mode.ENFORCE, AllRule.PRIVILEGED, Indices.ALLOW),
      id="patterns are case-sensitive"),
]


@pytest.mark.parametrize(("annotations", "rule", "expected"), RULE_CASES)
def test_rules(annotations, rule, expected):
    cfg = parse(RULES)
    p = cfg.policy_for(annotations)
    assert p.rule == rule
    assert (p.mode, p.all, p.indices) == expected
    # Keys the rule does not name keep the base policy's values.
    assert (p.unprivileged_env, p.allow, p.driver_capabilities) == (
        Trust.ACCEPT, (), ALL_DRIVER_CAPABILITIES,
    )


def test_rule_overrides_keep_the_base_policy_for_other_keys():
    cfg = parse(f"""
[policy]
mode = "rewrite"
allow = ["{GPU0_UUID}"]
unprivileged-env = "deny"

[[policy.rules]]
name = "r"
match.annotations = {{ a = "1" }}
unprivileged-env = "accept"
""")
    p = cfg.policy_for({"a": "1"})
    assert p.rule == "r"
    assert p.unprivileged_env is Trust.ACCEPT
    assert p.mode is Mode.REWRITE
    assert p.allow == (GPU0_UUID,)
    assert cfg.policy_for({"a": "2"}).unprivileged_env is Trust.DENY


def test_effective_with_no_rules_is_the_base():
    base = Policy(mode=Mode.AUDIT)
    assert effective(base, (), {"a": "b"}) is base


# -- swarm-resource ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("value", "names"),
    [
        P('"DOCKER_RESOURCE_GPU"', ("DOCKER_RESOURCE_GPU",), id="one name as a string"),
        P('"A, B,,C "', ("A", "B", "C"), id="comma string as NVIDIA's config.toml has it"),
        P('["A", "B"]', ("A", "B"), id="array"),
        P("[]", (), id="empty array"),
        P('""', (), id="empty string"),
    ],
)
def test_swarm_resource(value, names):
    assert parse(f"[request]\nswarm-resource = {value}\n").swarm_resource == names
