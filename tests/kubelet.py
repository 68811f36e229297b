"""A test kubelet: a real grpcio server speaking the PodResources v1 service on a unix
socket, serving the allocations a test sets. It is the kubelet's wire protocol (service
``v1.PodResourcesLister``, methods ``Get`` and ``List``), not a mock of nvhook's code.

- ``get_served = False`` answers ``Get`` with UNIMPLEMENTED, as kubelets before 1.34 do
  (the feature gate off), so the client must fall back to ``List``.
- ``rate_limit = (burst, qps)`` is the kubelet's token bucket: past it, RESOURCE_EXHAUSTED.
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

import grpc

from nvhook.kube.pb import podresources_pb2 as pb


@dataclass
class Ctr:
    name: str
    devices: dict[str, list[str]] = field(default_factory=dict)  # resource -> ids
    cdi_devices: list[str] = field(default_factory=list)


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
        self._lock = threading.Lock()
        self._tokens = 0.0
        self._stamp = time.monotonic()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        handler = grpc.method_handlers_generic_handler("v1.PodResourcesLister", {
            "Get": grpc.unary_unary_rpc_method_handler(
                self._get, request_deserializer=pb.GetPodResourcesRequest.FromString,
                response_serializer=pb.GetPodResourcesResponse.SerializeToString),
            "List": grpc.unary_unary_rpc_method_handler(
                self._list, request_deserializer=pb.ListPodResourcesRequest.FromString,
                response_serializer=pb.ListPodResourcesResponse.SerializeToString),
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
        with self._lock:
            now = time.monotonic()
            self._tokens = min(burst, self._tokens + (now - self._stamp) * qps)
            self._stamp = now
            if self._tokens < 1:
                self.calls["rejected"] += 1
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "rejected by rate limit")
            self._tokens -= 1

    def _message(self, pod: PodAlloc) -> pb.PodResources:
        return pb.PodResources(name=pod.name, namespace=pod.namespace, containers=[
            pb.ContainerResources(
                name=c.name,
                devices=[pb.ContainerDevices(resource_name=r, device_ids=ids)
                         for r, ids in c.devices.items()],
                dynamic_resources=[pb.DynamicResource(claim_name="claim", claim_resources=[
                    pb.ClaimResource(cdi_devices=[pb.CDIDevice(name=n) for n in c.cdi_devices])
                ])] if c.cdi_devices else [])
            for c in pod.containers])

    def _get(self, request: pb.GetPodResourcesRequest,
             context: grpc.ServicerContext) -> pb.GetPodResourcesResponse:
        self.calls["Get"] += 1
        if not self.get_served:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "unknown method Get")
        self._admit(context)
        for pod in self.pods:
            if pod.namespace == request.pod_namespace and pod.name == request.pod_name:
                return pb.GetPodResourcesResponse(pod_resources=self._message(pod))
        context.abort(grpc.StatusCode.NOT_FOUND,
                      f"pod {request.pod_name} in namespace {request.pod_namespace} not found")
        raise AssertionError("unreachable")

    def _list(self, request: pb.ListPodResourcesRequest,
              context: grpc.ServicerContext) -> pb.ListPodResourcesResponse:
        self.calls["List"] += 1
        self._admit(context)
        return pb.ListPodResourcesResponse(pod_resources=[self._message(p) for p in self.pods])


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
