"""nvhook benchmark: one command, one table, one JSON file.

    .venv/bin/python bench/run.py [--rounds N] [--out bench/results/latest.json]
                                  [--editable | --python DIR]

What is measured is what an operator installs: by default a regular (non-editable) install
of this checkout, built as a wheel and installed with its dependencies (through pip's
configured index, as scripts/setup-venv.sh gets them) into a throwaway venv; its
``bin/python`` is the yardstick's interpreter too. ``--editable`` measures the repo's .venv
instead (an editable install: its import hook runs at every interpreter start, yardstick
included) and ``--python DIR`` any environment DIR with nvhook installed. The install's kind,
path and Python version head the table and are in the JSON.

Every number is taken in this one run and reported as a ratio against a yardstick timed in
the same run: the variants of a row are interleaved round-robin (A, B, C, A, B, C, ...) so
that machine noise hits them alike, and medians (with p90) are compared. Each process is
started with ``os.posix_spawn`` and reaped with ``os.wait4``, which also gives its peak RSS.
Exit status 0 even when a target fails: this is a report; the last line summarises.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import fakenvml  # noqa: E402  (tests/fakenvml: builds the fake libnvidia-ml.so.1)
import regular_install  # noqa: E402  (tests/regular_install.py: a throwaway regular install)

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
WARMUP = 2

# Peak RSS needs a small parent: posix_spawn uses vfork, and the kernel carries the old mm's
# high-water mark over exec, so a child of this (big) Python process never reports less than
# the parent's RSS. This probe forks the command from a ~1 MiB process instead and writes
# wait4's ru_maxrss (KiB) to argv[1]; it exits with the command's exit status.
RSS_PROBE_C = r"""
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc < 3) return 125;
    pid_t pid = fork();
    if (pid < 0) return 125;
    if (pid == 0) { execv(argv[2], argv + 2); _exit(127); }
    int status; struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) return 125;
    FILE *f = fopen(argv[1], "w");
    if (f) { fprintf(f, "%ld\n", ru.ru_maxrss); fclose(f); }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
"""


# ------------------------------------------------------------------------------------------
# Running and timing processes
# ------------------------------------------------------------------------------------------


@dataclass
class Variant:
    """One command to time. ``argv`` is called before every start (fresh container ids)."""

    name: str
    argv: Callable[[], list[str]]
    env: dict[str, str]
    stdin: Path | None = None
    expect_rc: int = 0
    rss_file: Path | None = None  # set: argv runs under the RSS probe, which writes here
    ns: list[int] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    # CPU time (user + system, from wait4), in the JSON: wall time far above it means the
    # process waited (a busy machine); the two close together, that the CPU itself ran slow.
    cpu_ns: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n": len(self.ns),
            "median_ms": median_ms(self.ns),
            "p90_ms": p90_ms(self.ns),
            "min_ms": min(self.ns) / 1e6 if self.ns else None,
            "cpu_median_ms": median_ms(self.cpu_ns) if self.cpu_ns else None,
            "rss_kib_median": statistics.median(self.rss_kib) if self.rss_kib else None,
            "rss_kib_max": max(self.rss_kib) if self.rss_kib else None,
            "expect_rc": self.expect_rc,
            "errors": self.errors[:3],
        }


def median_ms(ns: Sequence[int]) -> float:
    return statistics.median(ns) / 1e6 if ns else math.nan


def p90_ms(ns: Sequence[int]) -> float:
    if not ns:
        return math.nan
    ordered = sorted(ns)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)] / 1e6


def spawn(argv: list[str], env: dict[str, str], stdin: Path | None, errfile: Path) -> int:
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, str(stdin or os.devnull), os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, str(errfile), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
    ]
    return os.posix_spawn(argv[0], argv, env, file_actions=actions)


def run_once(v: Variant, errfile: Path, keep: bool) -> None:
    argv = v.argv()
    start = time.perf_counter_ns()
    pid = spawn(argv, v.env, v.stdin, errfile)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter_ns() - start
    rc = os.waitstatus_to_exitcode(status)
    if rc != v.expect_rc:
        err = errfile.read_text(errors="replace").strip().splitlines()
        v.errors.append(f"exit {rc} (expected {v.expect_rc}): {err[-1] if err else ''}")
        return
    if keep:
        v.ns.append(elapsed)
        v.rss_kib.append(int(v.rss_file.read_text()) if v.rss_file else usage.ru_maxrss)
        if not v.rss_file:
            v.cpu_ns.append(round((usage.ru_utime + usage.ru_stime) * 1e9))


def measure(variants: Sequence[Variant], rounds: int, tmp: Path) -> None:
    """Round-robin: every round runs each variant once, in an order shuffled per round (the
    same shuffles every run). A command run right after a ~100 ms GPU hook comes out ~2 ms
    slower here; in a fixed order the first variant, the yardstick, always ran after the
    last, heaviest one, which flattered every ratio against it. Shuffled, each variant
    follows each other one about equally often; a ratio whose target is tight is measured
    in a group of light commands only (see bench_hook_paths)."""
    errfile = tmp / "stderr.txt"
    order = random.Random(len(variants))
    for r in range(WARMUP + rounds):
        for v in order.sample(list(variants), len(variants)):
            run_once(v, errfile, keep=r >= WARMUP)


# ------------------------------------------------------------------------------------------
# Fixtures: config, bundles, states
# ------------------------------------------------------------------------------------------


@dataclass
class Node:
    tmp: Path
    install: regular_install.Install
    libdir: Path
    config: Path
    audit: Path
    topology: Path
    counter: int = 0

    @property
    def nvhook(self) -> Path:
        return self.install.nvhook

    @property
    def python(self) -> str:
        """The install's interpreter: the yardstick ``python -I -c pass`` runs it."""
        return str(self.install.python)

    def env(self, *, topology: bool = False) -> dict[str, str]:
        env = {"PATH": SAFE_PATH, "LD_LIBRARY_PATH": str(self.libdir)}
        if topology:
            env["FAKE_NVML_TOPOLOGY"] = str(self.topology)
        return env

    def bundle(self, env: list[str], *, pad: int = 0, mounts: int = 0) -> Path:
        self.counter += 1
        bundle = self.tmp / f"bundle{self.counter}"
        bundle.mkdir()
        doc: dict[str, Any] = {
            "ociVersion": "1.0.2-dev",
            "process": {"args": ["/bin/true"], "env": env, "cwd": "/",
                        "capabilities": {"bounding": ["CAP_CHOWN"]}},
            "root": {"path": "rootfs", "readonly": True},
            "mounts": [{"destination": f"/mnt/m{i}", "type": "bind", "source": "/tmp",
                        "options": ["rbind", "ro"]} for i in range(mounts)],
            "annotations": {"bench.pad": "x" * pad} if pad else {},
        }
        (bundle / "config.json").write_text(json.dumps(doc, indent=1))
        return bundle

    def state(self, bundle: Path, cid: str = "bench-1") -> Path:
        path = bundle / f"state-{cid}.json"
        path.write_text(json.dumps({"ociVersion": "1.0.2-dev", "id": cid, "status": "creating",
                                    "pid": 4242, "bundle": str(bundle)}))
        return path

    def hook(self, name: str, bundle: Path, *, expect_rc: int = 0, topology: bool = False,
             cid: str = "bench-1") -> Variant:
        argv = [str(self.nvhook), "--config", str(self.config), "prestart"]
        return Variant(name, lambda: list(argv), self.env(topology=topology),
                       self.state(bundle, cid), expect_rc)


def make_node(tmp: Path, install: regular_install.Install) -> Node:
    if not os.access(install.nvhook, os.X_OK):
        sys.exit(f"bench: {install.nvhook} is missing or not executable")
    libdir = fakenvml.build(tmp / "fakenvml")
    delegate = tmp / "nvidia-hook"
    delegate.write_text("#!/bin/sh\nexit 0\n")
    delegate.chmod(0o755)
    audit = tmp / "audit" / "audit.jsonl"
    config = tmp / "config.toml"
    config.write_text(f'[audit]\npath = "{audit}"\n\n[delegate]\npath = "{delegate}"\n')
    topology = fakenvml.write_topology(tmp / "topology.txt", fakenvml.big_topology(8, 7))
    return Node(tmp, install, libdir, config, audit, topology)


def filler(n: int) -> list[str]:
    return [f"BENCH_VAR_{i}=value-{i}" for i in range(n)]


# ------------------------------------------------------------------------------------------
# Report rows
# ------------------------------------------------------------------------------------------


@dataclass
class Row:
    group: str
    label: str
    measured: str
    yardstick: str
    ratio: float | None
    target: str
    ok: bool | None  # None: no target, information only
    data: dict[str, Any] = field(default_factory=dict)

    def result(self) -> str:
        return "-" if self.ok is None else ("PASS" if self.ok else "FAIL")


def fmt(v: Variant) -> str:
    if not v.ns:
        return "no data"
    return f"{median_ms(v.ns):7.1f} ms (p90 {p90_ms(v.ns):6.1f})"


def ratio(a: Variant, b: Variant) -> float | None:
    if not a.ns or not b.ns:
        return None
    return median_ms(a.ns) / median_ms(b.ns)


def valid(*variants: Variant) -> bool:
    return all(v.ns and not v.errors for v in variants)


def ratio_row(group: str, label: str, a: Variant, b: Variant, limit: float | None) -> Row:
    r = ratio(a, b)
    ok = None if limit is None else (valid(a, b) and r is not None and r <= limit)
    target = "-" if limit is None else f"<= {limit:g}x"
    return Row(group, label, fmt(a), fmt(b), r, target, ok,
               {"measured": a.summary(), "yardstick": b.summary(), "limit": limit})


def linear_row(group: str, label: str, sizes: Sequence[int], vs: Sequence[Variant]) -> Row:
    """At most linear: the per-unit cost of the last step is at most twice that of the first
    step, give or take a noise floor of max(3 ms, 10% of the smallest size's time)."""
    t = [median_ms(v.ns) for v in vs]
    slope_lo = max(0.0, (t[1] - t[0]) / (sizes[1] - sizes[0]))
    slope_hi = (t[-1] - t[-2]) / (sizes[-1] - sizes[-2])
    noise_ms = max(3.0, 0.1 * t[0])  # interleaved medians still wander ~10% on a busy host
    allowed = 2 * slope_lo + noise_ms / (sizes[-1] - sizes[-2])
    ok = valid(*vs) and slope_hi <= allowed
    measured = " / ".join(f"{x:.1f}" for x in t) + " ms"
    return Row(group, label, measured, f"sizes {'/'.join(map(str, sizes))}",
               t[-1] / t[0] if t[0] else None, "<= linear", ok,
               {"sizes": list(sizes), "variants": [v.summary() for v in vs],
                "slope_first_ms_per_unit": slope_lo, "slope_last_ms_per_unit": slope_hi,
                "slope_allowed_ms_per_unit": allowed})


def errors_of(variants: Sequence[Variant]) -> list[str]:
    return [f"{v.name}: {e}" for v in variants for e in v.errors[:1]]


# ------------------------------------------------------------------------------------------
# The rows
# ------------------------------------------------------------------------------------------


def bench_hook_paths(node: Node, rounds: int) -> tuple[list[Row], list[Variant]]:
    py = node.python
    nogpu = node.bundle(["PATH=/bin:/usr/bin", "HOME=/root", "TERM=xterm"])
    allow = node.bundle(["PATH=/bin", f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"])
    deny = node.bundle(["PATH=/bin", "NVIDIA_VISIBLE_DEVICES=all"])
    v_pass = Variant("python -I -c pass", lambda: [py, "-I", "-c", "pass"], node.env())
    v_nogpu = node.hook("hook, no GPU", nogpu)
    # The headline ratio from the two light commands alone (see measure), then the GPU
    # paths against a second no-GPU variant of their own rounds.
    measure([v_pass, v_nogpu], rounds, node.tmp)
    v_nogpu2 = node.hook("hook, no GPU (GPU rounds)", nogpu)
    v_allow = node.hook("hook, GPU allow", allow)
    v_deny = node.hook("hook, GPU deny", deny, expect_rc=3)
    measure([v_nogpu2, v_allow, v_deny], rounds, node.tmp)
    vs = [v_pass, v_nogpu, v_nogpu2, v_allow, v_deny]
    rows = [
        ratio_row("1 no-GPU path", f"nvhook prestart ({node.install.kind} install), no GPU "
                  "vs python -I -c pass", v_nogpu, v_pass, 1.5),
        ratio_row("3 GPU path", "GPU allow (fake NVML, no-op delegate) vs no-GPU",
                  v_allow, v_nogpu2, None),
    ]
    ok = valid(v_allow) and median_ms(v_allow.ns) <= 100
    rows.append(Row("3 GPU path", "GPU allow, absolute", fmt(v_allow), "-", None,
                    "<= 100 ms", ok, {"measured": v_allow.summary(), "limit_ms": 100}))
    rows.append(ratio_row("3 GPU path", "GPU deny vs no-GPU", v_deny, v_nogpu2, None))
    return rows, vs


def bench_leases(node: Node, rounds: int) -> tuple[list[Row], list[Variant]]:
    """The GPU path with an exclusive lease (lock, read, reconcile, decide again, atomic
    write), and the no-GPU path under a lease policy, which must never touch the table."""
    # The table lives on a tmpfs (/run) in production: measure it on one, not on the disk.
    shm = Path(tempfile.mkdtemp(prefix="nvhook-bench-", dir="/dev/shm")) \
        if os.path.isdir("/dev/shm") else node.tmp
    try:
        return _bench_leases(node, rounds, shm)
    finally:
        if shm != node.tmp:
            shutil.rmtree(shm, ignore_errors=True)


def _bench_leases(node: Node, rounds: int, shm: Path) -> tuple[list[Row], list[Variant]]:
    leases = shm / "leases"
    untouched = shm / "leases-nogpu"
    base = node.config.read_text()
    config = node.tmp / "config-leases.toml"
    config.write_text(base + f'\n[leases]\nmode = "exclusive"\ndir = "{leases}"\n')
    config_nogpu = node.tmp / "config-leases-nogpu.toml"
    config_nogpu.write_text(base + f'\n[leases]\nmode = "exclusive"\ndir = "{untouched}"\n')
    allow = node.bundle(["PATH=/bin", f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"])
    nogpu = node.bundle(["PATH=/bin:/usr/bin", "HOME=/root", "TERM=xterm"])

    def hook(name: str, cfg: Path, bundle: Path) -> Variant:
        # One container id and a live pid (this process): each round re-leases the same
        # GPU to the same holder, so every round does the whole locked update.
        state = bundle / "state-lease.json"
        state.write_text(json.dumps({"ociVersion": "1.0.2-dev", "id": "bench-lease",
                                     "status": "creating", "pid": os.getpid(),
                                     "bundle": str(bundle)}))
        argv = [str(node.nvhook), "--config", str(cfg), "prestart"]
        return Variant(name, lambda: list(argv), node.env(), state)

    v_plain = node.hook("hook, GPU allow (no leases)", allow)
    v_lease = hook("hook, GPU allow + exclusive lease", config, allow)
    v_nogpu = hook("hook, no GPU, leases on", config_nogpu, nogpu)
    vs = [v_plain, v_lease, v_nogpu]
    measure(vs, rounds, node.tmp)
    ok = valid(v_lease) and median_ms(v_lease.ns) <= 100
    held = (leases / "leases.json").exists()
    rows = [
        Row("3 GPU path", "GPU allow + exclusive lease, absolute", fmt(v_lease), "-", None,
            "<= 100 ms", ok and held, {"measured": v_lease.summary(), "limit_ms": 100,
                                       "table_written": held}),
        ratio_row("3 GPU path", "GPU allow + lease vs GPU allow without", v_lease, v_plain,
                  None),
        Row("1 no-GPU path", "no-GPU hook under a lease policy never touches the table",
            fmt(v_nogpu), "-", None, "table dir absent", valid(v_nogpu) and
            not untouched.exists(), {"measured": v_nogpu.summary(),
                                     "table_dir_exists": untouched.exists()}),
    ]
    return rows, vs


def bench_kubernetes(node: Node, rounds: int) -> tuple[list[Row], list[Variant]]:
    """The GPU path bound to the kubelet's allocation: through a PodResources v1 lookup (a
    real gRPC test kubelet in this process) and through the checkpoint file; and 50
    containers starting at once against the kubelet's rate limit (burst 10, 100 QPS)."""
    from kubelet import Ctr, TestKubelet, containerd_annotations, write_checkpoint

    uid = "0f3e4a52-7b1c-4d2e-9a8b-1c2d3e4f5a6b"
    socket = node.tmp / "kubelet.sock"
    checkpoint = node.tmp / "kubelet_internal_checkpoint"
    base = node.config.read_text()
    cfg_pr = node.tmp / "config-kube-pr.toml"
    cfg_pr.write_text(base + f'\n[kubernetes]\nsocket = "{socket}"\ncheckpoint = "{checkpoint}"\n'
                      'sources = ["podresources"]\ntimeout = 10.0\n')
    cfg_cp = node.tmp / "config-kube-cp.toml"
    cfg_cp.write_text(base + f'\n[kubernetes]\nsocket = "{socket}"\ncheckpoint = "{checkpoint}"\n'
                      'sources = ["checkpoint"]\n')
    kubelet = TestKubelet(socket)
    kubelet.add("bench", "train", uid, Ctr("main", {"nvidia.com/gpu": [fakenvml.GPU0_UUID]}))
    for n in range(50):
        gpu = fakenvml.GPU0_UUID if n % 2 else fakenvml.GPU1_UUID
        kubelet.add("burst", f"p{n}", uid, Ctr("main", {"nvidia.com/gpu": [gpu]}))
    write_checkpoint(checkpoint, kubelet.pods)

    def bundle(pod: str, ns: str) -> Path:
        b = node.bundle(["PATH=/bin", f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"])
        doc = json.loads((b / "config.json").read_text())
        doc["annotations"] = containerd_annotations(ns, pod, uid, "main")
        (b / "config.json").write_text(json.dumps(doc))
        return b

    def hook(name: str, cfg: Path, b: Path, rc: int = 0) -> Variant:
        argv = [str(node.nvhook), "--config", str(cfg), "prestart"]
        return Variant(name, lambda: list(argv), node.env(), node.state(b), rc)

    train = bundle("train", "bench")
    v_plain = node.hook("hook, GPU allow (no kubelet)", node.bundle(
        ["PATH=/bin", f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"]))
    v_pr = hook("hook, GPU allow + PodResources Get", cfg_pr, train)
    v_cp = hook("hook, GPU allow + checkpoint", cfg_cp, train)
    vs = [v_plain, v_pr, v_cp]
    burst_ok = False
    data: dict[str, Any] = {}
    with kubelet:
        measure(vs, rounds, node.tmp)
        kubelet.rate_limit = (10, 100.0)
        bundles = [bundle(f"p{n}", "burst") for n in range(50)]
        argv = [str(node.nvhook), "--config", str(cfg_pr), "prestart"]
        start = time.perf_counter_ns()
        pids = [spawn(argv, node.env(), node.state(b, f"burst-{n}"), node.tmp / f"burst{n}.err")
                for n, b in enumerate(bundles)]
        codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
        wall_ms = (time.perf_counter_ns() - start) / 1e6
        want = [0 if n % 2 else 3 for n in range(50)]
        burst_ok = codes == want
        data = {"exit_codes": codes, "expected": want, "wall_ms": wall_ms,
                "rejected_by_rate_limit": kubelet.calls["rejected"],
                "calls": dict(kubelet.calls)}
    rows = [
        Row("3 GPU path", "GPU allow + PodResources lookup, absolute", fmt(v_pr), "-", None,
            "<= 100 ms", valid(v_pr) and median_ms(v_pr.ns) <= 100,
            {"measured": v_pr.summary(), "limit_ms": 100}),
        Row("3 GPU path", "GPU allow + checkpoint lookup, absolute", fmt(v_cp), "-", None,
            "<= 80 ms", valid(v_cp) and median_ms(v_cp.ns) <= 80,
            {"measured": v_cp.summary(), "limit_ms": 80}),
        ratio_row("3 GPU path", "GPU allow + PodResources vs GPU allow without", v_pr, v_plain,
                  None),
        Row("5 concurrency", "50 pods at once vs kubelet rate limit (10 burst, 100 QPS)",
            f"{wall_ms:.0f} ms wall" if data else "-", "-", None, "all 50 decided correctly",
            burst_ok, data),
    ]
    return rows, vs


def build_artifact() -> Path | None:
    """scripts/build-artifact's output (cached by the script itself), or None if it fails."""
    res = subprocess.run(["bash", str(REPO / "scripts" / "build-artifact")], capture_output=True,
                         text=True, check=False, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        print(f"bench: scripts/build-artifact failed: {res.stderr.strip()}", file=sys.stderr)
        return None
    return Path(res.stdout.strip().splitlines()[-1])


def bench_artifact(node: Node, rounds: int) -> tuple[list[Row], list[Variant]]:
    """The node artifact (scripts/build-artifact) against the interpreter it bundles started
    bare: Debian's /usr/bin/python3 -I -c pass, the strictest yardstick here (the venv's
    interpreter starts slower)."""
    group = "7 node artifact"
    art = build_artifact()
    bare_py = Path("/usr/bin/python3")
    if art is None or not bare_py.exists():
        return [Row(group, "skipped: no artifact or no /usr/bin/python3", "-", "-", None,
                    "<= 1.5x", False)], []
    exe = str(art / "nvhook")
    nogpu = node.bundle(["PATH=/bin:/usr/bin", "HOME=/root", "TERM=xterm"])
    allow = node.bundle(["PATH=/bin", f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"])
    deny = node.bundle(["PATH=/bin", "NVIDIA_VISIBLE_DEVICES=all"])

    def hook(name: str, bundle: Path, expect_rc: int = 0) -> Variant:
        argv = [exe, "--config", str(node.config), "prestart"]
        return Variant(name, lambda: list(argv), node.env(), node.state(bundle), expect_rc)

    v_bare = Variant("/usr/bin/python3 -I -c pass", lambda: [str(bare_py), "-I", "-c", "pass"],
                     node.env())
    v_nogpu = hook("artifact hook, no GPU", nogpu)
    measure([v_bare, v_nogpu], rounds, node.tmp)  # light commands alone, as bench_hook_paths
    v_nogpu2 = hook("artifact hook, no GPU (GPU rounds)", nogpu)
    v_allow = hook("artifact hook, GPU allow", allow)
    v_deny = hook("artifact hook, GPU deny", deny, expect_rc=3)
    measure([v_nogpu2, v_allow, v_deny], rounds, node.tmp)
    vs = [v_bare, v_nogpu, v_nogpu2, v_allow, v_deny]
    rows = [ratio_row(group, "artifact prestart, no GPU vs /usr/bin/python3 -I -c pass",
                      v_nogpu, v_bare, 1.5)]
    ok = valid(v_allow) and median_ms(v_allow.ns) <= 100
    rows.append(Row(group, "artifact GPU allow, absolute", fmt(v_allow), "-", None,
                    "<= 100 ms", ok, {"measured": v_allow.summary(), "limit_ms": 100,
                                      "artifact": str(art)}))
    rows.append(ratio_row(group, "artifact GPU deny vs no-GPU", v_deny, v_nogpu2, None))
    return rows, vs


def bench_memory(node: Node, rounds: int) -> tuple[list[Row], list[Variant]]:
    """Peak RSS of each path, each run under the small RSS probe (see RSS_PROBE_C)."""
    probe = node.tmp / "rss-probe"
    subprocess.run(["gcc", "-O2", "-o", str(probe), "-x", "c", "-"], input=RSS_PROBE_C,
                   text=True, check=True, capture_output=True)
    rss_file = node.tmp / "rss.txt"
    py = node.python
    nogpu = node.bundle(["PATH=/bin:/usr/bin", "HOME=/root", "TERM=xterm"])
    allow = node.bundle(["PATH=/bin", f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"])
    deny = node.bundle(["PATH=/bin", "NVIDIA_VISIBLE_DEVICES=all"])
    v_pass = Variant("python -I -c pass", lambda: [py, "-I", "-c", "pass"], node.env())
    vs = [v_pass, node.hook("hook, no GPU", nogpu), node.hook("hook, GPU allow", allow),
          node.hook("hook, GPU deny", deny, expect_rc=3)]
    for v in vs:
        inner = v.argv
        v.argv = lambda inner=inner: [str(probe), str(rss_file), *inner()]  # type: ignore[misc]
        v.rss_file = rss_file
    measure(vs, rounds, node.tmp)
    rows = []
    base = vs[0].summary()["rss_kib_median"]
    for v in vs[1:]:
        rss = v.summary()["rss_kib_median"]
        rows.append(Row("6 memory", f"peak RSS, {v.name}",
                        f"{rss / 1024:7.1f} MiB" if rss else "no data",
                        f"{base / 1024:7.1f} MiB" if base else "no data",
                        rss / base if rss and base else None, "-", None,
                        {"rss_kib": v.summary(), "yardstick_rss_kib": vs[0].summary()}))
    return rows, vs


def bench_runc(node: Node, rounds: int) -> tuple[list[Row], list[Variant]]:
    group = "2 container start"
    runc = shutil.which("runc", path=f"{os.environ.get('PATH', '')}:{SAFE_PATH}")
    if os.geteuid() != 0 or runc is None or not Path("/bin/busybox").is_file():
        why = "needs root, runc and busybox-static"
        return [Row(group, f"skipped: {why}", "-", "-", None, "<= 1.8x", None)], []
    from e2e import harness

    rootfs = harness.make_rootfs(node.tmp / "rootfs")
    state_root = node.tmp / "runc-state"
    state_root.mkdir()
    hook = {"path": str(node.nvhook), "args": ["nvhook", "--config", str(node.config),
                                               "prestart"], "env": [f"PATH={SAFE_PATH}"],
            "timeout": 30}
    gpu_hook = {**hook, "env": [f"PATH={SAFE_PATH}", f"LD_LIBRARY_PATH={node.libdir}"]}
    env = ["PATH=/bin", "HOME=/root"]
    gpu_env = [*env, f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"]
    plain = harness.make_bundle(node.tmp / "runc-plain", rootfs, args=["/bin/true"], env=env)
    hooked = harness.make_bundle(node.tmp / "runc-hook", rootfs, args=["/bin/true"], env=env,
                                 hooks={"prestart": [hook]})
    gpu = harness.make_bundle(node.tmp / "runc-gpu", rootfs, args=["/bin/true"], env=gpu_env,
                              hooks={"prestart": [gpu_hook]})

    def runc_run(bundle: Path) -> Callable[[], list[str]]:
        return lambda: [runc, "--root", str(state_root), "run", "--bundle", str(bundle),
                        harness.new_container_id("nvhook-bench")]

    renv = {"PATH": SAFE_PATH}
    v_plain = Variant("runc run, no hook", runc_run(plain), renv)
    v_hook = Variant("runc run + nvhook, no GPU", runc_run(hooked), renv)
    v_gpu = Variant("runc run + nvhook, GPU allow", runc_run(gpu), renv)
    vs = [v_plain, v_hook, v_gpu]
    measure(vs, rounds, node.tmp)
    return [
        ratio_row(group, "runc run /bin/true with nvhook (no GPU) vs no hook", v_hook, v_plain,
                  1.8),
        ratio_row(group, "runc run /bin/true with nvhook (GPU allow) vs no hook", v_gpu,
                  v_plain, None),
    ], vs


def bench_growth(node: Node, rounds: int) -> tuple[list[Row], list[Variant]]:
    group = "4 growth"
    rows: list[Row] = []
    every: list[Variant] = []
    gpu_entry = f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"

    # Env size: n entries in process.env, the request (if any) among them.
    # The middle size costs enough to measure (the linear test compares the two steps'
    # slopes); a 1,000-entry step is ~0.4 ms on the no-GPU path, below the noise.
    sizes = [10, 5000, 10000]
    nog = [node.hook(f"no GPU, env {n}", node.bundle(filler(n))) for n in sizes]
    gpu = [node.hook(f"GPU, env {n}", node.bundle([*filler(n - 1), gpu_entry])) for n in sizes]
    # Each path on its own: interleaved with the GPU runs, the first no-GPU variant always
    # ran right after a ~100 ms GPU hook and came out ~2 ms slower than the next one.
    measure(nog, rounds, node.tmp)
    measure(gpu, rounds, node.tmp)
    every += [*nog, *gpu]
    for label, vs in (("no-GPU", nog), ("GPU", gpu)):
        rows.append(ratio_row(group, f"{label} path: env 10,000 vs 10 entries", vs[-1], vs[0],
                              2.0))
        rows.append(linear_row(group, f"{label} path vs env entries", sizes, vs))

    # config.json size: padded with one large annotation.
    # The middle size is large enough that its step stands above the noise (the test
    # compares the last step's slope with the first's): 256 KiB cost less than noise.
    kib = [4, 1024, 4096]
    nog = [node.hook(f"no GPU, config {k} KiB", node.bundle(filler(10), pad=k * 1024))
           for k in kib]
    gpu = [node.hook(f"GPU, config {k} KiB", node.bundle([*filler(9), gpu_entry], pad=k * 1024))
           for k in kib]
    measure(nog, rounds, node.tmp)
    measure(gpu, rounds, node.tmp)
    every += [*nog, *gpu]
    for label, vs in (("no-GPU", nog), ("GPU", gpu)):
        rows.append(linear_row(group, f"{label} path vs config.json KiB", kib, vs))
        rows[-1].data["config_bytes"] = [
            (Path(json.loads(v.stdin.read_text())["bundle"]) / "config.json").stat().st_size
            for v in vs if v.stdin is not None
        ]

    # Request size on 8 GPUs x 7 MIG devices: MIG UUIDs first, then whole GPUs.
    topo = fakenvml.big_topology(8, 7)
    ids = [m["uuid"] for g in topo for m in g["migs"]] + [g["uuid"] for g in topo]
    counts = [1, 8, 64]
    req = [node.hook(f"GPU, request {n} devices",
                     node.bundle([*filler(9), f"NVIDIA_VISIBLE_DEVICES={','.join(ids[:n])}"]),
                     topology=True, expect_rc=-1) for n in counts]
    for v in req:  # learn each request's decision once: allow (0) or deny (3)
        pid = spawn(v.argv(), v.env, v.stdin, node.tmp / "stderr.txt")
        v.expect_rc = os.waitstatus_to_exitcode(os.wait4(pid, 0)[1])
    measure(req, rounds, node.tmp)
    every += req
    rows.append(linear_row(group, "GPU path vs devices requested (8x7 MIG)", counts, req))
    rows[-1].data["exit_codes"] = [v.expect_rc for v in req]
    return rows, every


def bench_concurrency(node: Node, rounds: int) -> tuple[list[Row], dict[str, Any]]:
    """64 hooks at once against one audit log, mixed allow / deny, GPU path."""
    group = "5 concurrency"
    n = 64
    allow = node.bundle(["PATH=/bin", f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"])
    deny = node.bundle(["PATH=/bin", "NVIDIA_VISIBLE_DEVICES=all"])
    argv = [str(node.nvhook), "--config", str(node.config), "prestart"]
    errfile = node.tmp / "conc-stderr.txt"
    hook_walls: list[int] = []
    pass_walls: list[int] = []
    problems: list[str] = []
    for r in range(rounds):
        # Yardstick first, then the hooks: 64 `python -I -c pass` at once.
        start = time.perf_counter_ns()
        pids = [spawn([node.python, "-I", "-c", "pass"], node.env(), None, errfile)
                for _ in range(n)]
        for pid in pids:
            os.wait4(pid, 0)
        pass_walls.append(time.perf_counter_ns() - start)

        node.audit.unlink(missing_ok=True)
        expected: dict[str, tuple[int, str]] = {}
        jobs: list[tuple[int, str]] = []
        states = []
        for i in range(n):
            cid = f"conc-{r}-{i}"
            allowed = i % 2 == 0
            expected[cid] = (0, "allow") if allowed else (3, "deny")
            states.append((cid, node.state(allow if allowed else deny, cid)))
        start = time.perf_counter_ns()
        for cid, state in states:
            err = node.tmp / f"conc-{cid}.err"
            jobs.append((spawn(argv, node.env(), state, err), cid))
        codes = {cid: os.waitstatus_to_exitcode(os.wait4(pid, 0)[1]) for pid, cid in jobs}
        hook_walls.append(time.perf_counter_ns() - start)
        for cid, (rc, _) in expected.items():
            if codes[cid] != rc:
                problems.append(f"{cid}: exit {codes[cid]}, expected {rc}")
        seen: dict[str, int] = {}
        lines = node.audit.read_text().splitlines() if node.audit.exists() else []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                problems.append(f"round {r}: audit line is not JSON: {line[:80]!r}")
                continue
            cid = entry.get("container")
            seen[cid] = seen.get(cid, 0) + 1
            if cid in expected and entry.get("decision") != expected[cid][1]:
                problems.append(f"{cid}: audit says {entry.get('decision')}")
        if seen != dict.fromkeys(expected, 1):
            problems.append(f"round {r}: {len(lines)} audit lines for {n} hooks, "
                            f"{len(set(seen) & set(expected))} distinct containers")
    h = Variant("64 hooks at once", list, {})
    h.ns = hook_walls
    p = Variant("64 x python -I -c pass at once", list, {})
    p.ns = pass_walls
    row = ratio_row(group, f"{n} GPU hooks at once (mixed allow/deny), wall", h, p, None)
    row.ok = not problems
    row.target = "all correct"
    row.data["problems"] = problems[:20]
    row.data["rounds"] = rounds
    return [row], {"problems": problems}


# ------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def out(*cmd: str) -> str | None:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10,
                                  check=False, cwd=REPO).stdout.strip() or None
        except (OSError, subprocess.TimeoutExpired):
            return None

    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "loadavg_start": os.getloadavg(),
        "runc": (out("runc", "--version") or "").splitlines()[0:1],
        "git_commit": out("git", "rev-parse", "--short", "HEAD"),
        "git_dirty": bool(out("git", "status", "--porcelain", "--", "nvhook")),
    }


def print_table(rows: Sequence[Row]) -> None:
    head = ("row", "what", "measured (median)", "yardstick", "ratio", "target", "result")
    cells = [head] + [
        (r.group, r.label, r.measured, r.yardstick,
         "-" if r.ratio is None else f"{r.ratio:.2f}x", r.target, r.result())
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    for i, c in enumerate(cells):
        print("  ".join(s.ljust(w) for s, w in zip(c, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def pick_install(args: argparse.Namespace, tmp: Path) -> regular_install.Install:
    """The install to measure: a fresh regular one of this checkout unless told otherwise."""
    if args.editable or args.python:
        prefix = REPO / ".venv" if args.editable else args.python.absolute()
        try:
            return regular_install.describe(prefix)
        except RuntimeError as e:
            sys.exit(f"bench: {e}")
    print("bench: building and installing this checkout (regular, not editable) in a "
          "throwaway venv ...", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    try:
        install = regular_install.install(tmp / "venv")
    except (RuntimeError, subprocess.CalledProcessError) as e:
        sys.exit(f"bench: the regular install failed (or pass --editable / --python DIR): {e}")
    print(f"  install: {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    return install


def describe_install(install: regular_install.Install) -> str:
    return f"{install.kind} install at {install.prefix}, Python {install.python_version}"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30, help="timed rounds per variant (30)")
    ap.add_argument("--concurrency-rounds", type=int, default=3,
                    help="rounds of the 64-hooks-at-once test (3)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "latest.json")
    ap.add_argument("--skip-runc", action="store_true", help="leave out the runc row")
    ap.add_argument("--only", metavar="STEP,...", type=lambda v: set(v.split(",")),
                    help="run only these steps (names as printed: 'hook paths', kubernetes, "
                         "...)")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--editable", action="store_true",
                       help="measure the repo's .venv (an editable install) instead")
    which.add_argument("--python", type=Path, metavar="DIR",
                       help="measure the nvhook installed in the environment DIR instead")
    args = ap.parse_args(argv)
    info = machine()
    print(f"nvhook bench: {info['cpu_model']}, {info['nproc']} CPUs, {args.rounds} rounds, "
          f"load {info['loadavg_start'][0]:.2f}", flush=True)
    rows: list[Row] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="nvhook-bench-") as tmpdir:
        install = pick_install(args, Path(tmpdir))
        print(f"install: {describe_install(install)}", flush=True)
        node = make_node(Path(tmpdir), install)
        variants: list[Variant] = []
        steps: list[tuple[str, Callable[[], tuple[list[Row], Any]]]] = [
            ("hook paths", lambda: bench_hook_paths(node, args.rounds)),
            ("growth", lambda: bench_growth(node, args.rounds)),
            ("leases", lambda: bench_leases(node, args.rounds)),
            ("kubernetes", lambda: bench_kubernetes(node, args.rounds)),
            ("concurrency", lambda: bench_concurrency(node, args.concurrency_rounds)),
            ("memory", lambda: bench_memory(node, max(3, args.rounds // 6))),
            ("artifact", lambda: bench_artifact(node, args.rounds)),
        ]
        if args.skip_runc:
            rows.append(Row("2 container start", "skipped: --skip-runc", "-", "-", None,
                            "<= 1.8x", None))
        else:
            steps.insert(1, ("runc", lambda: bench_runc(node, args.rounds)))
        if args.only:
            steps = [step for step in steps if step[0] in args.only]
        for name, step in steps:
            t0 = time.monotonic()
            new_rows, vs = step()
            rows += new_rows
            if isinstance(vs, list):
                variants += vs
            print(f"  {name}: {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    rows.sort(key=lambda r: r.group)
    info["loadavg_end"] = os.getloadavg()
    print()
    print(f"measured: {describe_install(install)}")
    print_table(rows)
    errors = errors_of(variants)
    for e in errors:
        print(f"error: {e}")
    failed = [r for r in rows if r.ok is False]
    passed = [r for r in rows if r.ok is True]
    summary = (f"SUMMARY: {len(passed)} passed, {len(failed)} failed"
               + (f" ({'; '.join(r.label for r in failed)})" if failed else "")
               + f"; {time.monotonic() - started:.0f} s")
    doc = {
        "machine": info,
        "install": install.describe(),
        "rounds": args.rounds,
        "warmup_rounds": WARMUP,
        "rows": [{"group": r.group, "label": r.label, "measured": r.measured,
                  "yardstick": r.yardstick, "ratio": r.ratio, "target": r.target,
                  "result": r.result(), "data": r.data} for r in rows],
        "errors": errors,
        "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out}")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
