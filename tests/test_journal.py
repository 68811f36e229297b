"""Every decision on a GPU request also goes to syslog: read from a real unix datagram socket
bound where the node's config points, with the real hook run as a process."""

from __future__ import annotations

import contextlib
import errno
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import fakenvml
import pytest
from conftest import Node, runc_state, write_bundle
from kubelet import crio_annotations
from syslogd import LINE, Syslog

from nvhook import journal

GPU0 = f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"


@pytest.fixture
def syslog(node: Node) -> Iterator[Syslog]:
    s = Syslog(node.syslog_socket)
    yield s
    s.close()


def prestart(node: Node, tmp_path: Path, env: list[str], container_id: str = "ctr-1",
             **kw: object) -> tuple[int, list[str]]:
    bundle = write_bundle(tmp_path / "b", env, **kw)  # type: ignore[arg-type]
    proc = node.run(["--config", str(node.config), "prestart"],
                    stdin=runc_state(bundle, container_id))
    return proc.returncode, proc.stderr.decode().splitlines()


@pytest.mark.parametrize(("env", "status", "severity", "head", "reason"), [
    pytest.param(["NVIDIA_VISIBLE_DEVICES=all"], 3, 4, "deny container=ctr-1 stage=prestart",
                 "reason=NVIDIA_VISIBLE_DEVICES=all: an unprivileged container may not have "
                 'every GPU (policy.all = "privileged")', id="deny: warning"),
    pytest.param([GPU0], 0, 6, "allow container=ctr-1 stage=prestart", "reason=-",
                 id="allow: info"),
    pytest.param(["NVIDIA_VISIBLE_DEVICES=0"], 0, 5, "rewrite container=ctr-1 stage=prestart",
                 f"granted={fakenvml.GPU0_UUID} reason=", id="rewrite: notice"),
])
def test_each_decision_is_one_daemon_line(node: Node, tmp_path: Path, syslog: Syslog,
                                          env: list[str], status: int, severity: int,
                                          head: str, reason: str) -> None:
    code, err = prestart(node, tmp_path, env)
    assert code == status, err
    [line] = syslog.lines()
    assert (line.facility, line.severity) == (journal.FACILITY_DAEMON, severity)
    assert line.text.startswith(head) and reason in line.text, line.text
    assert "\n" not in line.text
    [entry] = node.audit_lines()  # the audit log still gets its line
    assert entry["decision"] == line.text.split()[0]


def test_the_pod_is_named_when_a_cri_identity_exists(node: Node, tmp_path: Path,
                                                     syslog: Syslog) -> None:
    node.write_config('[kubernetes]\nallocation = "off"\n')
    annotations = crio_annotations("team-a", "train", "u-1", "main")
    code, err = prestart(node, tmp_path, ["NVIDIA_VISIBLE_DEVICES=all"], annotations=annotations)
    assert code == 3, err
    [line] = syslog.lines()
    assert line.text.startswith("deny container=ctr-1 pod=team-a/train/main stage=prestart")


def test_no_gpu_request_sends_nothing(node: Node, tmp_path: Path, syslog: Syslog) -> None:
    assert prestart(node, tmp_path, ["PATH=/bin"]) == (0, [])
    assert syslog.raw() == []


@pytest.mark.parametrize("audit", [
    pytest.param('path = ""', id="audit log off"),
    pytest.param("", id="audit log on"),
])
def test_syslog_false_sends_nothing_and_syslog_does_not_need_the_log(
        node: Node, tmp_path: Path, syslog: Syslog, audit: str) -> None:
    node.write_config(f'[audit]\n{audit}\nsyslog = false\n'
                      f'syslog-socket = "{node.syslog_socket}"\n')
    assert prestart(node, tmp_path, [GPU0]) == (0, [])
    assert syslog.raw() == []
    node.write_config(f'[audit]\n{audit}\nsyslog-socket = "{node.syslog_socket}"\n')
    assert prestart(node, tmp_path, [GPU0]) == (0, [])
    assert [d.text.split()[0] for d in syslog.lines()] == ["allow"]


def regular_file(path: Path) -> None:
    path.write_text("not a socket\n")


def unbound_socket(path: Path) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.close()  # the file stays, nobody reads it: a daemon that died


@pytest.mark.parametrize(("make", "warned"), [
    pytest.param(None, False, id="no socket (no syslog daemon on the node): silent"),
    pytest.param(unbound_socket, False, id="stale socket, nobody bound: silent"),
    pytest.param(regular_file, False, id="a regular file at the path: refused, silent"),
])
def test_no_daemon_never_fails_the_container(node: Node, tmp_path: Path, make, warned) -> None:
    if make:
        make(node.syslog_socket)
    code, err = prestart(node, tmp_path, [GPU0])
    assert code == 0
    assert len(err) == (1 if warned else 0), err
    assert [e["decision"] for e in node.audit_lines()] == ["allow"]


@pytest.mark.parametrize(("env", "status"), [
    pytest.param([GPU0], 0, id="allowed"),
    pytest.param(["NVIDIA_VISIBLE_DEVICES=all"], 3, id="denied"),
])
def test_full_buffer_is_one_warning_and_never_blocks(node: Node, tmp_path: Path,
                                                     syslog: Syslog, env: list[str],
                                                     status: int) -> None:
    assert syslog.fill() > 0
    # node.run's timeout is the only clock here: a blocking send would hang until it.
    code, err = prestart(node, tmp_path, env)
    assert code == status  # the status the decision gives, the journal changes nothing
    warnings = [e for e in err if "syslog" in e]
    assert warnings == [f"nvhook: warning: syslog {node.syslog_socket}: its buffer is full, "
                        "this decision was not sent"], err
    assert len(err) == (1 if status == 0 else 2)
    assert all(d == b"x" * 512 for d in syslog.raw())  # nothing of ours got in


HOSTILE = {
    "newline and a fake line": "c1\n<28>Jan  1 00:00:00 nvhook[1]: allow container=c2",
    "ESC sequence": "c1\x1b[2K\x1b[1Aallow",
    "line separator U+2028": "c1\u2028allow",
    "carriage return": "c1\rallow",
}


@pytest.mark.parametrize("cid", HOSTILE.values(), ids=list(HOSTILE))
def test_container_text_arrives_as_one_escaped_line(node: Node, tmp_path: Path,
                                                    syslog: Syslog, cid: str) -> None:
    code, _ = prestart(node, tmp_path, ["NVIDIA_VISIBLE_DEVICES=all", f"X={cid}"],
                       container_id=cid)
    assert code == 3
    [data] = syslog.raw()
    text = data.decode("utf-8")
    assert not any(ch in text for ch in "\r\n\x1b\u2028\u2029"), text
    # One datagram is one line: what the container chose sits escaped inside it.
    assert LINE.fullmatch(text) and "container=c1\\" in text, text


def test_a_long_line_is_cut_to_the_documented_size(node: Node, tmp_path: Path,
                                                   syslog: Syslog) -> None:
    # Many bad ids make a long reason; the datagram stays within MAX_DATAGRAM, valid UTF-8.
    ids = ",".join(f"GPU-{'é' * 40}-{n}" for n in range(200))
    code, err = prestart(node, tmp_path, [f"NVIDIA_VISIBLE_DEVICES={ids}"])
    assert code == 3, err
    [data] = syslog.raw()
    assert len(data) <= journal.MAX_DATAGRAM and data.endswith(journal.CUT_MARK)
    assert data.decode("utf-8").startswith("<28>")


def test_precreate_sends_too(node: Node, syslog: Syslog) -> None:
    # Podman hides a precreate hook's stderr: the journal is where a denial shows.
    doc = {"ociVersion": "1.0.2-dev", "hostname": "abc123", "root": {"path": "rootfs"},
           "process": {"args": ["/bin/sh"], "env": ["NVIDIA_VISIBLE_DEVICES=all"]}}
    proc = node.run(["--config", str(node.config), "precreate"], stdin=json.dumps(doc).encode())
    assert (proc.returncode, proc.stdout) == (3, b"")
    [line] = syslog.lines()
    assert line.severity == 4
    assert line.text.startswith("deny container=abc123 stage=precreate")


def test_precreate_full_buffer_still_prints_the_document(node: Node, syslog: Syslog) -> None:
    raw = json.dumps({"ociVersion": "1.0.2-dev", "hostname": "abc", "root": {"path": "r"},
                      "process": {"args": ["/bin/sh"], "env": [GPU0]}}).encode()
    syslog.fill()
    proc = node.run(["--config", str(node.config), "precreate"], stdin=raw)
    assert (proc.returncode, proc.stdout) == (0, raw)  # stdout stays the one document
    assert "buffer is full" in proc.stderr.decode()


@pytest.mark.parametrize(("entry", "text"), [
    pytest.param({"decision": "rewrite", "container": "c", "stage": "prestart",
                  "mode": "enforce", "granted": [], "reasons": [],
                  "allocation": {"outcome": "void: no GPU allocated by the kubelet, the "
                                            "request was replaced by void"}},
                 "rewrite container=c stage=prestart mode=enforce granted=- reason=void: no "
                 "GPU allocated by the kubelet, the request was replaced by void",
                 id="void by allocation names why"),
    pytest.param({"decision": "deny", "container": "c", "namespace": "ns", "pod": "p",
                  "pod_container": None, "stage": "runtime-create", "mode": "enforce",
                  "rule": "batch", "granted": [], "reasons": ["a", "b"]},
                 "deny container=c pod=ns/p/- stage=runtime-create mode=enforce rule=batch "
                 "granted=- reason=a; b", id="partial identity, a rule, two reasons"),
])
def test_message_fields(entry: dict, text: str) -> None:
    assert journal.message(entry) == text


def test_send_never_raises(tmp_path: Path) -> None:
    with contextlib.closing(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)) as s:
        s.bind(str(tmp_path / "s"))
        assert journal.send(str(tmp_path / "s"), {"decision": object()}) is None
        assert s.recv(4096).startswith(b"<29>")
    assert journal.send(str(tmp_path / "missing"), {"decision": "deny"}) is None
    assert errno.ENOENT in journal.ABSENT


@pytest.mark.parametrize(("setup", "row"), [
    pytest.param("bound", "ok syslog", id="a bound socket"),
    pytest.param("missing", "warn syslog", id="no daemon: a warning, never a failure"),
    pytest.param("off", "ok syslog off (audit.syslog = false)", id="off"),
])
def test_doctor_shows_where_the_journal_goes(node: Node, setup: str, row: str) -> None:
    if setup == "off":
        node.write_config(f'[audit]\npath = "{node.audit}"\nsyslog = false\n')
    daemon = Syslog(node.syslog_socket) if setup == "bound" else None
    try:
        out = node.run(["--config", str(node.config), "doctor"]).stdout.decode()
    finally:
        if daemon:
            daemon.close()
    [line] = [line for line in out.splitlines() if " syslog " in line]
    assert " ".join(line.split()).startswith(row), out
    if setup == "missing":
        assert "No such file or directory" in line and "fix:" in out
