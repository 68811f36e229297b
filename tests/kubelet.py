"""A test kubelet: a real grpcio server speaking the PodResources v1 service on a unix
socket, serving the allocations a test sets. It is the kubelet's wire protocol (service
``v1.PodResourcesLister``, methods ``Get`` and ``List``), not a mock of nvhook's code.

- ``get_served = False`` answers ``Get`` with UNIMPLEMENTED, as kubelets before 1.34 do
  (the feature gate off), so the client must fall back to ``List``.
- ``rate_limit = (burst, qps)`` is the kubelet's token bucket: past it, RESOURCE_EXHAUSTED.
- ``hold = N`` makes the first N calls wait until all N have arrived and then meets them
  with the bucket at one instant: exactly ``burst`` pass, the rest are RESOURCE_EXHAUSTED,
  however slowly the callers started (no timing window in the test).
- ``raw[method] = bytes`` answers that method with those bytes instead of a message (an
  answer that does not decode); ``get_answers = pod`` answers every ``Get`` with that pod.
- ``calls`` counts what was asked, so a test can see which path the client took.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from nvhook.kube.pb import podresources_pb2 as pb


@dataclass
class Ctr:
    name: str
    devices: dict[str, list[str]] = field(default_factory=dict)  # resource -> ids
    cdi_devices: list[str] = field(default_factory=list)  # one DRA claim named "claim"
    claims: dict[str, list[str]] = field(default_factory=dict)  # DRA claim -> its CDI names


@dataclass
class PodAlloc:
    namespace: str
    name: str
    uid: str
    containers: list[Ctr]


class TestKubelet:
    __test__ = False  # not a pytest class

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.pods: list[PodAlloc] = []
        self.get_served = True
        self.rate_limit: tuple[int, float] | None = None
        self.calls: Counter[str] = Counter()
        self.raw: dict[str, bytes] = {}
        self.get_answers: PodAlloc | None = None
        self.hold = 0
        self.held_timed_out = False
        self._lock = threading.Lock()
        self._arrived = threading.Condition()
        self._released_at: float | None = None
        self._tokens: float | None = None  # None: full, as the kubelet's limiter starts
        self._stamp = time.monotonic()
        # Enough workers that ``hold`` calls can all wait at once.
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
        handler = grpc.method_handlers_generic_handler("v1.PodResourcesLister", {
            "Get": grpc.unary_unary_rpc_method_handler(
                self._get, request_deserializer=pb.GetPodResourcesRequest.FromString,
                response_serializer=_serialize),
            "List": grpc.unary_unary_rpc_method_handler(
                self._list, request_deserializer=pb.ListPodResourcesRequest.FromString,
                response_serializer=_serialize),
        })
        self._server.add_generic_rpc_handlers((handler,))
        self._server.add_insecure_port(f"unix://{socket}")

    def __enter__(self) -> TestKubelet:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(grace=None).wait()

    def add(self, namespace: str, name: str, uid: str, *containers: Ctr) -> PodAlloc:
        pod = PodAlloc(namespace, name, uid, list(containers))
        self.pods.append(pod)
        return pod

    # -- the service ----------------------------------------------------------

    def _admit(self, context: grpc.ServicerContext) -> None:
        if self.rate_limit is None:
            return
        burst, qps = self.rate_limit
        now = self._held() or time.monotonic()
        with self._lock:
            tokens = burst if self._tokens is None else self._tokens
            self._tokens = min(burst, tokens + max(0.0, now - self._stamp) * qps)
            self._stamp = max(self._stamp, now)
            if self._tokens < 1:
                self.calls["rejected"] += 1
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "rejected by rate limit")
            self._tokens -= 1

    def _held(self) -> float | None:
        """With ``hold``: wait until the first ``hold`` calls are all in, -> their one instant."""
        with self._arrived:
            if self.calls["held"] >= self.hold:
                return None
            self.calls["held"] += 1
            if self.calls["held"] == self.hold:
                self._released_at = time.monotonic()
                self._arrived.notify_all()
            # Bounded, so a caller that never comes cannot hang the test: it fails instead.
            elif not self._arrived.wait_for(lambda: self._released_at is not None,
                                            timeout=HOLD_TIMEOUT):
                self.held_timed_out = True
                self._released_at = time.monotonic()
                self._arrived.notify_all()
            return self._released_at

    def _message(self, pod: PodAlloc) -> pb.PodResources:
        return pb.PodResources(name=pod.name, namespace=pod.namespace, containers=[
            pb.ContainerResources(
                name=c.name,
                devices=[pb.ContainerDevices(resource_name=r, device_ids=ids)
                         for r, ids in c.devices.items()],
                dynamic_resources=[
                    pb.DynamicResource(claim_name=claim, claim_namespace=pod.namespace,
                                       claim_resources=[pb.ClaimResource(
                                           cdi_devices=[pb.CDIDevice(name=n) for n in names],
                                           driver_name="gpu.nvidia.com", pool_name="node",
                                           device_name=f"gpu-{i}")])
                    for i, (claim, names) in enumerate(
                        (({"claim": c.cdi_devices} if c.cdi_devices else {}) | c.claims).items())])
            for c in pod.containers])

    def _get(self, request: pb.GetPodResourcesRequest,
             context: grpc.ServicerContext) -> pb.GetPodResourcesResponse | bytes:
        self.calls["Get"] += 1
        if not self.get_served:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "unknown method Get")
        self._admit(context)
        if "Get" in self.raw:
            return self.raw["Get"]
        if self.get_answers is not None:
            return pb.GetPodResourcesResponse(pod_resources=self._message(self.get_answers))
        for pod in self.pods:
            if pod.namespace == request.pod_namespace and pod.name == request.pod_name:
                return pb.GetPodResourcesResponse(pod_resources=self._message(pod))
        context.abort(grpc.StatusCode.NOT_FOUND,
                      f"pod {request.pod_name} in namespace {request.pod_namespace} not found")
        raise AssertionError("unreachable")

    def _list(self, request: pb.ListPodResourcesRequest,
              context: grpc.ServicerContext) -> pb.ListPodResourcesResponse | bytes:
        self.calls["List"] += 1
        self._admit(context)
        if "List" in self.raw:
            return self.raw["List"]
        return pb.ListPodResourcesResponse(pod_resources=[self._message(p) for p in self.pods])


# Far past how long 50 hook processes take to start on a loaded machine.
HOLD_TIMEOUT = 50.0


def _serialize(answer: Any) -> bytes:
    """A message as its wire bytes; bytes (``raw``) as they are."""
    return answer if isinstance(answer, bytes) else answer.SerializeToString()


def write_checkpoint(path: Path, pods: list[PodAlloc], numa_map: bool = True) -> Path:
    """The device manager's checkpoint as the kubelet writes it (both DeviceIDs shapes)."""
    entries = []
    for pod in pods:
        for c in pod.containers:
            for resource, ids in c.devices.items():
                entries.append({"PodUID": pod.uid, "ContainerName": c.name,
                                "ResourceName": resource,
                                "DeviceIDs": {"0": ids} if numa_map else ids,
                                "AllocResp": "CgA="})
    doc = {"Data": {"PodDeviceEntries": entries, "RegisteredDevices": {}}, "Checksum": 1}
    path.write_text(json.dumps(doc))
    return path


def containerd_annotations(namespace: str, pod: str, uid: str, container: str,
                           sandbox: bool = False) -> dict[str, str]:
    return {"io.kubernetes.cri.sandbox-namespace": namespace,
            "io.kubernetes.cri.sandbox-name": pod, "io.kubernetes.cri.sandbox-uid": uid,
            "io.kubernetes.cri.container-name": container,
            "io.kubernetes.cri.container-type": "sandbox" if sandbox else "container"}


def crio_annotations(namespace: str, pod: str, uid: str, container: str,
                     sandbox: bool = False) -> dict[str, str]:
    return {"io.kubernetes.pod.namespace": namespace, "io.kubernetes.pod.name": pod,
            "io.kubernetes.pod.uid": uid, "io.kubernetes.container.name": container,
            "io.kubernetes.cri-o.ContainerType": "sandbox" if sandbox else "container"}
