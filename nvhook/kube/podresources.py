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
from pathlib import Path

import grpc

from nvhook.errors import AllocationError
from nvhook.kube.pb import podresources_pb2 as pb

SERVICE = "v1.PodResourcesLister"
# The kubelet's answers are small; bound what a stranger on the socket can make us read.
MAX_MESSAGE = 16 * 1024 * 1024


@dataclass(frozen=True)
class Devices:
    resource: str
    device_ids: tuple[str, ...]


@dataclass(frozen=True)
class Container:
    name: str
    devices: tuple[Devices, ...]
    cdi_devices: tuple[str, ...]  # DRA: CDI names of the container's claims


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    containers: tuple[Container, ...]


class NotFound(AllocationError):
    """The kubelet does not know the pod."""


def _pod(msg: pb.PodResources) -> Pod:
    return Pod(msg.namespace, msg.name, tuple(
        Container(c.name,
                  tuple(Devices(d.resource_name, tuple(d.device_ids)) for d in c.devices),
                  tuple(cdi.name for r in c.dynamic_resources for cr in r.claim_resources
                        for cdi in cr.cdi_devices))
        for c in msg.containers))


def lookup(socket: Path, namespace: str, pod: str, timeout: float) -> Pod:
    """The pod's resources as the kubelet reports them. Raises ``AllocationError``."""
    deadline = time.monotonic() + timeout
    target = f"unix://{socket}"
    options = [("grpc.max_receive_message_length", MAX_MESSAGE),
               ("grpc.enable_retries", 0)]
    with grpc.insecure_channel(target, options=options) as channel:
        get = channel.unary_unary(f"/{SERVICE}/Get",
                                  request_serializer=pb.GetPodResourcesRequest.SerializeToString,
                                  response_deserializer=pb.GetPodResourcesResponse.FromString)
        try:
            answer = _call(get, pb.GetPodResourcesRequest(pod_name=pod, pod_namespace=namespace),
                           deadline, socket)
        except _Unimplemented:
            pass
        else:
            if not answer.HasField("pod_resources"):
                raise NotFound(f"kubelet {socket}: Get answered without the pod")
            return _pod(answer.pod_resources)
        listed = _list(channel, deadline, socket, "neither Get nor List is served")
        for p in listed.pod_resources:
            if p.namespace == namespace and p.name == pod:
                return _pod(p)
        raise NotFound(f"kubelet {socket}: pod {namespace}/{pod} is not in List's answer")


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
        except Exception as e:  # a malformed answer fails to deserialize
            raise AllocationError(f"kubelet {socket}: malformed answer: {e}") from None


def list_pods(socket: Path, timeout: float) -> tuple[Pod, ...]:
    """Every pod the kubelet reports (``List``): for doctor and ``explain --pod``."""
    deadline = time.monotonic() + timeout
    options = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.enable_retries", 0)]
    with grpc.insecure_channel(f"unix://{socket}", options=options) as channel:
        listed = _list(channel, deadline, socket, "List is not served")
    return tuple(_pod(p) for p in listed.pod_resources)


def _list(channel, deadline: float, socket: Path, unserved: str):  # type: ignore[no-untyped-def]
    """The kubelet's ``List`` answer; ``unserved`` words the error when it is UNIMPLEMENTED."""
    method = channel.unary_unary(
        f"/{SERVICE}/List",
        request_serializer=pb.ListPodResourcesRequest.SerializeToString,
        response_deserializer=pb.ListPodResourcesResponse.FromString)
    try:
        return _call(method, pb.ListPodResourcesRequest(), deadline, socket)
    except _Unimplemented:
        raise AllocationError(f"kubelet {socket}: {unserved}") from None
