"""`nvhook log`: the audit log read for an operator, run as the real command on real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import NVHOOK, Node, runc_state, write_bundle

from nvhook.errors import ExitStatus
from nvhook.ops import log as log_mod

NOW = datetime.now(UTC)  # absolute --since values are fixed against it, as is LOG


def e(ago: timedelta, decision: str, container: str, ns: str | None = None,
      pod: str | None = None, now: datetime = NOW, **extra: Any) -> dict[str, Any]:
    return {"time": (now - ago).isoformat(timespec="milliseconds"), "container": container,
            "namespace": ns, "pod": pod, "pod_container": "main" if pod else None,
            "stage": "prestart", "decision": decision, "granted": [], "reasons": [], **extra}


VOID = {"outcome": "void: no GPU allocated by the kubelet, the request was replaced by void"}


def log_at(now: datetime) -> list[dict[str, Any]]:
    return [
        e(timedelta(days=3), "deny", "old", "team-a", "train", now,
          reasons=['NVIDIA_VISIBLE_DEVICES=all: no (policy.all = "never")']),
        e(timedelta(hours=3), "allow", "a1", "team-a", "train", now, granted=["GPU-1"]),
        e(timedelta(hours=1), "rewrite", "v1", "team-b", "cpu", now, allocation=VOID),
        e(timedelta(minutes=5), "deny", "d1", "team-b", "infer", now, reasons=["mount: no"]),
        e(timedelta(minutes=1), "release", "d0", now=now, leases={"released": ["GPU-2"]}),
    ]


LOG = log_at(NOW)


def write_log(path: Path, docs: list[dict[str, Any]], extra: bytes = b"") -> Path:
    path.write_bytes(b"".join(json.dumps(d).encode() + b"\n" for d in docs) + extra)
    return path


def nvhook_log(args: list[str], stdin: bytes = b"",
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NVHOOK), "log", *args], input=stdin.decode(), text=True,
                          capture_output=True, timeout=60, check=False,
                          env=env or {**os.environ, "NVHOOK_CONFIG": "/nonexistent"})


def containers(out: str) -> list[str]:
    rows = out.splitlines()
    assert not rows or rows[0].split() == list(log_mod.HEADER), rows
    return [r.split()[2] for r in rows[1:]]


@pytest.mark.parametrize(("args", "expected"), [
    pytest.param([], ["old", "a1", "v1", "d1", "d0"], id="everything, in log order"),
    pytest.param(["--pod", "team-a/train"], ["old", "a1"], id="--pod NS/POD"),
    pytest.param(["--decision", "deny"], ["old", "d1"], id="--decision deny"),
    pytest.param(["--decision", "void"], ["v1"], id="--decision void: an empty allocation"),
    pytest.param(["--decision", "rewrite"], ["v1"], id="a void is a rewrite too"),
    pytest.param(["--decision", "allow", "--decision", "release"], ["a1", "d0"],
                 id="--decision repeated"),
    pytest.param(["--since", "10m"], ["d1", "d0"], id="--since 10m"),
    pytest.param(["--since", "2h"], ["v1", "d1", "d0"], id="--since 2h"),
    pytest.param(["--since", "240s"], ["d0"], id="--since 240s"),
    pytest.param(["--since", "1d"], ["a1", "v1", "d1", "d0"], id="--since 1d"),
    pytest.param(["--since", (NOW - timedelta(hours=2)).isoformat()], ["v1", "d1", "d0"],
                 id="--since ISO with zone"),
    pytest.param(["--since", (NOW - timedelta(hours=2)).astimezone(
        timezone(timedelta(hours=5))).isoformat()], ["v1", "d1", "d0"],
                 id="--since ISO in another zone"),
    pytest.param(["--since", (NOW - timedelta(hours=2)).astimezone().replace(tzinfo=None)
                  .isoformat(timespec="seconds")], ["v1", "d1", "d0"],
                 id="--since ISO without zone: local time"),
    pytest.param(["--since", (NOW - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")],
                 ["v1", "d1", "d0"], id="--since ISO with Z"),
    pytest.param(["--pod", "team-b/infer", "--decision", "deny", "--since", "1h"], ["d1"],
                 id="filters combine"),
    pytest.param(["--pod", "team-c/none"], [], id="nothing matches: no output, exit 0"),
])
def test_filters(tmp_path: Path, args: list[str], expected: list[str]) -> None:
    # A span back from now is measured from when the command runs: the log is dated from
    # just before, and every entry a span keeps is minutes inside it (one it drops stays
    # dropped however long the run takes).
    relative = any(log_mod.RELATIVE.fullmatch(a) for a in args)
    log = write_log(tmp_path / "audit.jsonl", log_at(datetime.now(UTC)) if relative else LOG)
    proc = nvhook_log(["--file", str(log), *args])
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    assert containers(proc.stdout) == expected


def test_text_rows_are_aligned_and_say_why(tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.jsonl", [
        e(timedelta(0), "deny", "f" * 64, "ns", "p", reasons=["A=1: bad (x)", "B: worse"]),
        *LOG[1:3], LOG[4]])
    rows = nvhook_log(["--file", str(log)]).stdout.splitlines()
    starts = {r.index(word) for r, word in zip(rows, ["DECISION", "deny", "allow", "void"],
                                              strict=False)}
    assert len(starts) == 1  # the decision column starts at one offset
    assert rows[1].split(None, 4)[1:] == ["deny", "f" * 12, "ns/p/main", "A=1: bad (x); B: worse"]
    assert rows[2].endswith("granted GPU-1")
    assert rows[3].split()[1] == "void" and rows[3].endswith("replaced by void")
    assert rows[4].split()[1] == "release" and rows[4].endswith("released GPU-2")


def test_json_round_trip(tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.jsonl", LOG)
    proc = nvhook_log(["--file", str(log), "--json"])
    assert [json.loads(line) for line in proc.stdout.splitlines()] == LOG
    proc = nvhook_log(["--file", str(log), "--json", "--decision", "deny"])
    assert [json.loads(line) for line in proc.stdout.splitlines()] == [LOG[0], LOG[3]]


def test_json_escapes_what_could_break_a_line(tmp_path: Path) -> None:
    doc = e(timedelta(0), "deny", "c1\u2028x\x1b[2K", reasons=["r\nfake"])
    log = write_log(tmp_path / "audit.jsonl", [doc])
    out = nvhook_log(["--file", str(log), "--json"]).stdout
    assert out.count("\n") == 1 and "\u2028" not in out and "\x1b" not in out
    assert json.loads(out) == doc
    text = nvhook_log(["--file", str(log)]).stdout
    assert text.count("\n") == 2 and "\u2028" not in text and "\x1b" not in text


MALFORMED = [
    pytest.param(b"garbage\n", "not JSON", id="not JSON"),
    pytest.param(b'{"time": "2024-05-01T00:00:00+00:00", "decis', "not JSON", id="torn line"),
    pytest.param(b"[1, 2]\n", "not a JSON object", id="an array"),
    pytest.param(b'{"time": "2024-05-01T00:00:00+00:00", "decision": "de\xffny"}\n',
                 "not UTF-8", id="invalid UTF-8"),
    pytest.param(b'{"decision": "deny"}\n', "no valid time", id="no time"),
    pytest.param(b'{"decision": "deny", "time": "yesterday"}\n', "no valid time",
                 id="a bad time"),
    pytest.param(b'{"time": "2024-05-01T00:00:00+00:00"}\n', "no decision", id="no decision"),
]


@pytest.mark.parametrize(("bad", "problem"), MALFORMED)
def test_a_malformed_line_is_one_warning_then_skipped(tmp_path: Path, bad: bytes,
                                                      problem: str) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_bytes(json.dumps(LOG[0]).encode() + b"\n" + bad
                    + (b"" if bad.endswith(b"\n") else b"\n") + json.dumps(LOG[1]).encode())
    proc = nvhook_log(["--file", str(log)])
    assert proc.returncode == 0
    [warning] = proc.stderr.splitlines()
    assert warning.startswith(f"nvhook: warning: {log}:2: {problem}") and \
        warning.endswith(", skipped"), warning
    assert containers(proc.stdout) == ["old", "a1"]


@pytest.mark.parametrize(("target", "needle"), [
    pytest.param("missing", "no audit log there", id="missing file"),
    pytest.param("dir", "not a regular file or a pipe", id="a directory"),
    pytest.param("/dev/zero", "not a regular file or a pipe", id="/dev/zero"),
])
def test_an_unreadable_log_is_one_line_exit_11(tmp_path: Path, target: str,
                                               needle: str) -> None:
    path = {"missing": str(tmp_path / "none.jsonl"), "dir": str(tmp_path)}.get(target, target)
    proc = nvhook_log(["--file", path])
    assert proc.returncode == ExitStatus.LOG == 11
    assert proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"nvhook: {path}: ") and needle in line, line


def test_the_config_names_the_log(node: Node, tmp_path: Path) -> None:
    """No --file: the config's audit.path, as written by a real denied hook."""
    bundle = write_bundle(tmp_path / "b", ["NVIDIA_VISIBLE_DEVICES=all"])
    assert node.run(["--config", str(node.config), "prestart"],
                    stdin=runc_state(bundle, "ctr-9")).returncode == 3
    proc = node.run(["--config", str(node.config), "log", "--decision", "deny"])
    assert proc.returncode == 0, proc.stderr
    [row] = proc.stdout.decode().splitlines()[1:]
    assert row.split()[1:3] == ["deny", "ctr-9"] and "policy.all" in row
    node.write_config('[audit]\npath = ""\n')
    proc = node.run(["--config", str(node.config), "log"])
    assert proc.returncode == 11 and proc.stderr.startswith(b"nvhook: the audit log is off")


def test_stdin_and_a_fifo(tmp_path: Path) -> None:
    data = write_log(tmp_path / "a.jsonl", LOG).read_bytes()
    assert containers(nvhook_log(["--file", "-"], stdin=data).stdout)[-1] == "d0"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    # No writer: the open does not wait for one, and there is nothing to read.
    proc = nvhook_log(["--file", str(fifo)])
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


@pytest.mark.parametrize(("args", "needle"), [
    pytest.param(["--pod", "team-a"], "--pod 'team-a': expected NAMESPACE/POD", id="pod"),
    pytest.param(["--decision", "denied"], "--decision 'denied': expected one of allow",
                 id="decision"),
    pytest.param(["--since", "10x"], "--since '10x': expected an ISO time", id="since"),
])
def test_bad_options_are_one_usage_line(tmp_path: Path, args: list[str], needle: str) -> None:
    proc = nvhook_log(["--file", str(write_log(tmp_path / "a", LOG)), *args])
    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    assert line.startswith("nvhook: log: ") and needle in line, line


# Reports the peak memory of the one command it runs: its own child, nothing else's.
PEAK = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True);"
        "sys.stdout.write(p.stdout.decode()); sys.stderr.write(p.stderr.decode());"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)")


def test_a_huge_log_streams(tmp_path: Path) -> None:
    """A 768 MiB line with no newline (a sparse file: no disk, no time to write), then a
    real entry: read in chunks, the line is one warning and the entry after it is shown."""
    log = tmp_path / "huge.jsonl"
    with open(log, "wb") as f:
        f.truncate(768 << 20)
        f.seek(0, os.SEEK_END)
        f.write(b"\n" + json.dumps(LOG[3]).encode() + b"\n")
    proc = subprocess.run([sys.executable, "-c", PEAK, str(NVHOOK), "log", "--file", str(log)],
                          capture_output=True, text=True, timeout=300, check=False)
    *warnings, peak_kib = proc.stderr.splitlines()
    assert warnings == [f"nvhook: warning: {log}:1: longer than {log_mod.MAX_LINE} bytes, "
                        "skipped"]
    assert containers(proc.stdout) == ["d1"]
    assert int(peak_kib) < 256 << 10, f"peak RSS {int(peak_kib) >> 10} MiB"
