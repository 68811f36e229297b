"""The JSON field names Go's decoders know in ``config.json`` (and the hook's state).

Data only, no imports: the hook's fast path (``oci.scan``) checks every object key
against these names, and ``oci.gojson`` does the full check. Taken from the struct
tags of the OCI runtime spec's Go types (``specs-go/config.go`` and ``state.go``),
which runc, Podman and containerd decode into, and from the types NVIDIA's hook
decodes into (``process``, ``env``, ``capabilities``, ``bounding``, ``root``,
``path``, ``mounts``, ``source``, ``destination``, ``bundle``, ``bundlePath``).
No two of them fold to the same name (a test checks it), so a key equal to one of
them is exactly that field wherever it stands.
"""

from __future__ import annotations

OCI_FIELDS = frozenset({
    # Spec
    "ociVersion", "process", "root", "hostname", "domainname", "mounts", "hooks",
    "annotations", "linux", "solaris", "windows", "vm", "zos",
    # Process, Box, User, Scheduler, IOPriority, CPU affinity
    "terminal", "consoleSize", "height", "width", "user", "uid", "gid", "umask",
    "additionalGids", "username", "args", "commandLine", "env", "cwd", "capabilities",
    "rlimits", "noNewPrivileges", "apparmorProfile", "oomScoreAdj", "scheduler",
    "selinuxLabel", "ioPriority", "class", "priority", "policy", "nice", "flags",
    "runtime", "deadline", "period", "execCPUAffinity", "initial", "final",
    # LinuxCapabilities
    "bounding", "effective", "inheritable", "permitted", "ambient",
    # Root, Mount, Hook(s)
    "path", "readonly", "destination", "type", "source", "options", "uidMappings",
    "gidMappings", "timeout", "prestart", "createRuntime", "createContainer",
    "startContainer", "poststart", "poststop",
    # Linux
    "sysctl", "resources", "cgroupsPath", "namespaces", "devices", "seccomp",
    "rootfsPropagation", "maskedPaths", "readonlyPaths", "mountLabel", "intelRdt",
    "personality", "timeOffsets", "netDevices", "memoryPolicy", "name", "mode", "nodes",
    "containerID", "hostID", "size", "secs", "nanosecs", "hard", "soft", "domain",
    # LinuxResources and below
    "memory", "cpu", "pids", "blockIO", "hugepageLimits", "network", "rdma", "unified",
    "limit", "reservation", "swap", "kernel", "kernelTCP", "swappiness",
    "disableOOMKiller", "useHierarchy", "checkBeforeUpdate", "shares", "quota", "burst",
    "realtimeRuntime", "realtimePeriod", "cpus", "mems", "idle", "weight", "leafWeight",
    "weightDevice", "throttleReadBpsDevice", "throttleWriteBpsDevice",
    "throttleReadIOPSDevice", "throttleWriteIOPSDevice", "major", "minor", "rate",
    "pageSize", "classID", "priorities", "hcaHandles", "hcaObjects", "allow", "access",
    "fileMode",
    # Seccomp
    "defaultAction", "defaultErrnoRet", "architectures", "listenerPath",
    "listenerMetadata", "syscalls", "names", "action", "errnoRet", "index", "value",
    "valueTwo", "op",
    # IntelRdt
    "closID", "schemata", "l3CacheSchema", "memBwSchema", "enableCMT", "enableMBM",
    "enableMonitoring",
    # Solaris
    "milestone", "limitpriv", "maxShmMemory", "anet", "cappedCPU", "cappedMemory",
    "ncpus", "physical", "linkname", "lowerLink", "allowedAddress",
    "configureAllowedAddress", "defrouter", "linkProtection", "macAddress",
    # Windows
    "layerFolders", "credentialSpec", "servicing", "ignoreFlushesDuringBoot", "hyperv",
    "id", "idType", "count", "maximum", "storage", "iops", "bps", "sandboxSize",
    "endpointList", "allowUnqualifiedDNSQuery", "DNSSearchList",
    "networkSharedContainerName", "networkNamespace", "utilityVMPath",
    # VM
    "hypervisor", "parameters", "initrd", "image", "format",
    # State (stdin of a hook)
    "status", "pid", "bundle", "bundlePath",
})

# Lower-cased name -> the one exact spelling (every name is ASCII, so lower() is Go's fold).
BY_LOWER = {name.lower(): name for name in OCI_FIELDS}
