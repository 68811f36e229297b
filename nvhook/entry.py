"""Console-script entry point, with the hook's stdlib-only fast path.

A hooks.d hook runs for every container on the node (no ``when`` condition can
see the env), so a container that cannot be asking for a GPU must cost almost
nothing: read stdin and config.json, scan them, exit 0. Past that point the hook
runs through ``modes.prestart``, never the typer app; pynvml is imported only when an
inventory is needed, and jsonschema only to word an invalid state's error.
"""

from __future__ import annotations

import os
import sys

from nvhook.hookargs import (
    HOOK_STAGES,
    NOOP_STAGES,
    REFUSED_STAGES,
    config_option,
    normalize_argv,
    plain_hook_call,
    stage_word,
    swarm_names,
)
from nvhook.oci.scan import (
    MAX_STATE_BYTES,
    loads_spec,
    may_request_gpu,
    read_regular,
    state_looks_valid,
)

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms on the fast path
if TYPE_CHECKING:
    from typing import NoReturn

    from nvhook.oci.state import Preloaded


def main() -> None:
    argv = normalize_argv(sys.argv[1:])
    stage = stage_word(argv)
    if stage in NOOP_STAGES:
        leave(0)
    if stage in REFUSED_STAGES:
        sys.stderr.write(f"nvhook: stage {stage} is not one nvhook judges: register nvhook as a "
                         "prestart or createRuntime hook (NVIDIA's hook refuses it too)\n")
        leave(2)  # ExitStatus.USAGE, as NVIDIA's hook exits for a stage it does not know
    if stage in HOOK_STAGES and plain_hook_call(argv, stage):
        raw = _read_stdin()
        fast = fast_path(raw, config_option(argv))
        if fast is True:
            leave(0)
        # No cyclic garbage collection in the hook process: its passes over the GPU path's
        # ~150 modules while they import cost ~5 ms of every GPU decision, more than the
        # cyclic garbage of one bounded-input run that exits in milliseconds ever holds
        # (reference counting still frees everything else at once).
        import gc

        gc.disable()
        from nvhook.modes.prestart import run  # not cli: typer costs ~30 ms of imports

        try:
            run(argv, raw, fast or None)  # exits (SystemExit) or execs the delegate
        except SystemExit as e:
            leave(e.code)
    from nvhook import cli

    cli.run(argv)


def leave(code: object) -> NoReturn:
    """Exit with ``code`` as ``sys.exit(code)`` would, without the interpreter's finalization.

    Tearing down the modules of the GPU path costs about 11 ms here (1.4 ms on the fast path),
    on every container start. The hook leaves nothing for it to finish: the audit line, the
    lease table and a rewritten spec are written through descriptors and closed before this,
    nvhook registers no atexit handler and starts no thread but NVML's daemon one (left behind
    on purpose, see gpus.nvml), and stdout and stderr are flushed here.
    """
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # as the interpreter does for sys.exit("text")
        sys.stderr.write(f"{code}\n")
        status = 1
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 (contextlib is not on the fast path's import list)
            stream.flush()
        except (OSError, ValueError, AttributeError):  # the reader is gone, or never was
            pass  # the status is all that is left to say
    os._exit(status)


def _read_stdin() -> bytes:
    try:
        # Bounded: a state is a few hundred bytes; one byte more than the limit is enough
        # for the state reader to refuse it, and /dev/zero on stdin cannot eat the memory.
        return sys.stdin.buffer.read(MAX_STATE_BYTES + 1)
    except (OSError, ValueError, AttributeError):
        return b""


def fast_path(raw: bytes, config_option: str | None) -> bool | Preloaded | None:
    """True: nothing can ask for a GPU, exit 0. Else the parsed documents for the
    full path, or None when anything looked off: the full path then reads
    everything again and reports the problem properly."""
    try:
        if len(raw) > MAX_STATE_BYTES:
            return None
        # Decode as UTF-8 explicitly: json.loads(bytes) would also take UTF-16/32,
        # which the full path rejects.
        state = loads_spec(raw.decode("utf-8"))  # NVIDIA's hook reads it with Go's JSON too
        if not state_looks_valid(state):
            return None
        bundle = state.get("bundle", state.get("bundlePath"))
        # A regular file only (no FIFO, device or symlink), and no key Go could read
        # otherwise: anything else goes to the full path, which refuses it.
        spec = loads_spec(read_regular(os.path.join(bundle, "config.json")).decode("utf-8"))
        if not isinstance(spec, dict):
            return None
    except (ValueError, OSError, AttributeError, RecursionError):
        return None
    swarm = swarm_names(config_option)
    if swarm is not None and not may_request_gpu(spec, swarm):
        return True
    from nvhook.oci.state import Preloaded

    return Preloaded(state, spec)
