"""A client of the kubelet's PodResources v1 gRPC API on its unix socket.

``Get(pod, namespace)`` where the kubelet serves it (beta and on from 1.34), else
``List``: an UNIMPLEMENTED answer to ``Get`` falls back to ``List``. The kubelet
rate-limits the socket (burst 10, 100 QPS) and answers RESOURCE_EXHAUSTED past it;
such calls are retried until ``timeout`` is spent, and then fail (closed). grpc and
protobuf are imported here only, and this module only on the GPU path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

import grpc

from nvhook.errors import AllocationError
from nvhook.kube.pb import podresources_pb2 as pb

SERVICE = "v1.PodResourcesLister"
# The kubelet's answers are small; bound what a stranger on the socket can make us read.
MAX_MESSAGE = 16 * 1024 * 1024
_M = TypeVar("_M", pb.GetPodResourcesResponse, pb.ListPodResourcesResponse)


@dataclass(frozen=True)
class Devices:
    """The device ids of one resource the kubelet allocated to a container."""

    resource: str
    device_ids: tuple[str, ...]


@dataclass(frozen=True)
class Claim:
    """A DRA claim of the container: its CDI device names (``dynamic_resources``)."""

    namespace: str
    name: str
    cdi_devices: tuple[str, ...]


@dataclass(frozen=True)
class Container:
    """A container of the pod as PodResources lists it: its devices and DRA claims."""

    name: str
    devices: tuple[Devices, ...]
    claims: tuple[Claim, ...] = ()

    @property
    def cdi_devices(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n for c in self.claims for n in c.cdi_devices))


class Method(StrEnum):
    """The call that answered: ``Get`` where the kubelet serves it, else ``List``."""

    GET = "Get"
    LIST = "List"


@dataclass(frozen=True)
class Pod:
    """A pod as PodResources answered for it, and which call answered."""

    namespace: str
    name: str
    containers: tuple[Container, ...]
    via: Method = Method.LIST


class NotFound(AllocationError):
    """The kubelet does not know the pod."""


def _pod(msg: pb.PodResources, socket: Path, via: Method = Method.LIST) -> Pod:
    """The answer for one pod as values, checked: the kubelet never lists a container twice
    or hands out an empty device id, so an answer that does is not to be trusted."""
    at = f"kubelet {socket}: pod {msg.namespace}/{msg.name}"
    names = [c.name for c in msg.containers]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise AllocationError(f"{at}: container {twice[0]!r} listed twice (malformed answer)")
    containers = []
    for c in msg.containers:
        devices = []
        for d in c.devices:
            where = f"{at}: container {c.name!r}"
            if not d.resource_name:
                raise AllocationError(f"{where}: devices without a resource name "
                                      "(malformed answer)")
            if not d.device_ids or not all(d.device_ids):
                raise AllocationError(f"{where}: {d.resource_name}: "
                                      + ("an empty device id" if d.device_ids
                                         else "no device id") + " (malformed answer)")
            devices.append(Devices(d.resource_name, tuple(d.device_ids)))
        claims = []
        for r in c.dynamic_resources:
            names = tuple(cdi.name for cr in r.claim_resources for cdi in cr.cdi_devices)
            if not r.claim_name or not all(names):
                raise AllocationError(f"{at}: container {c.name!r}: a DRA claim without "
                                      "a name or with an empty CDI name (malformed answer)")
            claims.append(Claim(r.claim_namespace or msg.namespace, r.claim_name, names))
        containers.append(Container(c.name, tuple(devices), tuple(claims)))
    return Pod(msg.namespace, msg.name, tuple(containers), via)


def lookup(socket: Path, namespace: str, pod: str, timeout: float) -> Pod:
    """The pod's resources as the kubelet reports them: ``Get`` where served, else ``List``.
    The hook and ``explain --pod`` both come through here. Raises ``AllocationError``
    (``NotFound`` when the kubelet does not know the pod)."""
    deadline = time.monotonic() + timeout
    with _channel(socket) as channel:
        get = channel.unary_unary(f"/{SERVICE}/Get",
                                  request_serializer=pb.GetPodResourcesRequest.SerializeToString)
        try:
            raw = _call(get, pb.GetPodResourcesRequest(pod_name=pod, pod_namespace=namespace),
                        deadline, socket)
        except _Unimplemented:
            pass
        else:
            answer = _decode(pb.GetPodResourcesResponse, raw, socket, "Get")
            if not answer.HasField("pod_resources"):
                raise NotFound(f"kubelet {socket}: Get answered without the pod")
            got = answer.pod_resources
            if (got.namespace, got.name) != (namespace, pod):
                # Never take another pod's devices for this one's.
                raise AllocationError(f"kubelet {socket}: Get for pod {namespace}/{pod} "
                                      f"answered for pod {got.namespace}/{got.name}")
            return _pod(got, socket, Method.GET)
        listed = _list(channel, deadline, socket, "neither Get nor List is served")
        mine = [p for p in listed.pod_resources if p.namespace == namespace and p.name == pod]
        if len(mine) > 1:
            raise AllocationError(f"kubelet {socket}: pod {namespace}/{pod} listed "
                                  f"{len(mine)} times by List (malformed answer)")
        if not mine:
            raise NotFound(f"kubelet {socket}: pod {namespace}/{pod} is not in List's answer")
        return _pod(mine[0], socket)


def _channel(socket: Path) -> grpc.Channel:
    options = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.enable_retries", 0)]
    return grpc.insecure_channel(f"unix://{socket}", options=options)


def _decode(message: type[_M], raw: bytes, socket: Path, method: str) -> _M:
    """Answers come as bytes and are decoded here, so bytes that are not the message are
    named as such (grpc would only say INTERNAL)."""
    try:
        return message.FromString(raw)
    except Exception as e:  # protobuf's DecodeError, and whatever a parser may raise
        raise AllocationError(f"kubelet {socket}: {method} answer is not a PodResources "
                              f"message (malformed answer): {e}") from None


class _Unimplemented(Exception):
    pass


def _call(method, request, deadline: float, socket: Path):  # type: ignore[no-untyped-def]
    delay = 0.005
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AllocationError(f"kubelet {socket}: no answer within the timeout "
                                  "(rate limited)")
        try:
            return method(request, timeout=left, wait_for_ready=False)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            if code is grpc.StatusCode.UNIMPLEMENTED:
                raise _Unimplemented() from None
            if code is grpc.StatusCode.NOT_FOUND:
                raise NotFound(f"kubelet {socket}: {e.details()}") from None
            if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
                # The kubelet's token bucket refills at 100 per second: back off and retry,
                # but never past the deadline, and never into an allow.
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, 0.05)
                continue
            if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                raise AllocationError(f"kubelet {socket}: no answer within the timeout") from None
            details = e.details() if hasattr(e, "details") else str(e)
            raise AllocationError(f"kubelet {socket}: {code.name if code else 'error'}: "
                                  f"{details}") from None


def list_pods(socket: Path, timeout: float) -> tuple[Pod, ...]:
    """Every pod the kubelet reports (``List``): for doctor."""
    deadline = time.monotonic() + timeout
    with _channel(socket) as channel:
        listed = _list(channel, deadline, socket, "List is not served")
    return tuple(_pod(p, socket) for p in listed.pod_resources)


def _list(channel: grpc.Channel, deadline: float, socket: Path,
          unserved: str) -> pb.ListPodResourcesResponse:
    """The kubelet's ``List`` answer; ``unserved`` words the error when it is UNIMPLEMENTED."""
    method = channel.unary_unary(
        f"/{SERVICE}/List", request_serializer=pb.ListPodResourcesRequest.SerializeToString)
    try:
        raw = _call(method, pb.ListPodResourcesRequest(), deadline, socket)
    except _Unimplemented:
        raise AllocationError(f"kubelet {socket}: {unserved}") from None
    return _decode(pb.ListPodResourcesResponse, raw, socket, "List")
