"""Exit statuses and the one user-facing error type.

Every failure nvhook reports is an ``NvhookError`` carrying its exit status and a
one-line message. Only the CLI layer turns them into stderr text and an exit code.
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """Documented exit codes. A container runtime aborts the container on any non-zero."""

    OK = 0
    INTERNAL = 1  # a bug in nvhook; reported as one line, never a traceback
    USAGE = 2  # bad command line
    DENIED = 3  # the policy refused the container's GPU request
    CONFIG = 4  # nvhook's own config/policy file is missing or invalid
    STATE = 5  # the OCI state on stdin is invalid
    SPEC = 6  # the bundle or its config.json is missing or invalid
    INVENTORY = 7  # the GPU inventory (NVML or file) could not be read
    DELEGATE = 8  # NVIDIA's hook (or the low-level runtime) could not be run
    WRITE = 9  # a file nvhook rewrites could not be written
    DOCTOR = 10  # `nvhook doctor` found a failing check
    LOG = 11  # `nvhook log`: the audit log is missing or cannot be read
    PIPE = 141  # stdout closed early (`| head`): 128 + SIGPIPE, as the shell reports it


EXIT_MEANINGS: dict[ExitStatus, str] = {
    ExitStatus.OK: "allowed, rewritten, nothing asked for, or the command succeeded",
    ExitStatus.INTERNAL: "a bug in nvhook (still one line, never a traceback); the container "
                         "is refused",
    ExitStatus.USAGE: "bad command line: unknown command or option, a missing option or value",
    ExitStatus.DENIED: "the policy refused the container's GPU request",
    ExitStatus.CONFIG: "nvhook's own config file is missing (when named), unreadable, too "
                       "large or invalid",
    ExitStatus.STATE: "the OCI state on stdin is missing, too large or invalid",
    ExitStatus.SPEC: "the bundle or its config.json is missing or invalid",
    ExitStatus.INVENTORY: "the GPU inventory (NVML, or an inventory file) could not be read",
    ExitStatus.DELEGATE: "NVIDIA's hook (or the low-level runtime) could not be run",
    ExitStatus.WRITE: "a file nvhook rewrites could not be written",
    ExitStatus.DOCTOR: "nvhook doctor found a failing check",
    ExitStatus.LOG: "nvhook log: the audit log is missing, off or cannot be read",
    ExitStatus.PIPE: "the reader of stdout went away (nvhook log | head): nvhook stops "
                     "quietly, with the status a shell gives a command SIGPIPE ended",
}
"""What each status means, for ``--help``'s man page and ``docs/exit-codes.md``."""


class NvhookError(Exception):
    """A failure with a one-line, user-facing message (what, where, why)."""

    status: ExitStatus = ExitStatus.INTERNAL

    def __init__(self, message: str, notes: tuple[str, ...] = ()) -> None:
        # Multi-line text would break the "one clear line" contract on stderr.
        super().__init__(" ".join(message.split("\n")))
        self.notes = notes  # secondary lines (warnings), printed after the message

    @property
    def message(self) -> str:
        return str(self)


class UsageError(NvhookError):
    status = ExitStatus.USAGE


class ConfigError(NvhookError):
    status = ExitStatus.CONFIG


class StateError(NvhookError):
    status = ExitStatus.STATE


class SpecError(NvhookError):
    status = ExitStatus.SPEC


class InventoryError(NvhookError):
    status = ExitStatus.INVENTORY


class DelegateError(NvhookError):
    status = ExitStatus.DELEGATE


class WriteError(NvhookError):
    status = ExitStatus.WRITE


class LogError(NvhookError):
    status = ExitStatus.LOG


class DeniedError(NvhookError):
    """The decision was deny; the message is the first reason."""

    status = ExitStatus.DENIED


class AllocationError(NvhookError):
    """The kubelet's allocation could not be read; with a GPU asked for, a fail-closed denial."""

    status = ExitStatus.DENIED
