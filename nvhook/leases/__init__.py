"""Node-local GPU leases: which container holds which device, crash-safe.

``table`` is the versioned file format, ``liveness`` says whether a holder still
exists, ``rules`` says which devices a container may lease given the others,
and ``step`` is the lease step of the flow (acquire, release, preview), run
under the table's ``flock``.
"""
