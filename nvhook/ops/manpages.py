"""``nvhook(8)``, ``nvhook.toml(5)`` and the generated reference pages in ``docs/``.

Everything here is rendered from the same sources as ``--help`` and the config reader:
the CLI's command tree (click's, as typer builds it; passed in, since ``ops`` sits below
``cli``), ``config_schema.KEYS`` and ``errors.EXIT_MEANINGS``. ``scripts/gen-docs`` writes
the files; ``tests/test_manpages.py`` fails when a committed page differs from a fresh one.
Output is deterministic (no dates), so regenerating an unchanged tree changes nothing.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any

from nvhook import __version__
from nvhook import config_schema as schema
from nvhook.errors import EXIT_MEANINGS

PROG = "nvhook"


@dataclass(frozen=True)
class Param:
    flags: tuple[str, ...]  # ("--config",) or ("-h", "--help"); () for an argument
    metavar: str  # "" for a flag
    help: str
    required: bool
    argument: bool


@dataclass(frozen=True)
class Command:
    path: tuple[str, ...]  # ("config", "set")
    help: str
    params: tuple[Param, ...]
    group: bool
    extra_args: bool  # takes arbitrary arguments it passes on (runtime: runc's)


def walk(root: Any) -> tuple[tuple[Param, ...], tuple[Command, ...]]:
    """(the root's own options, every visible command depth-first in help order)."""
    # click's help names live on the context, which subcommands inherit from the root.
    names = tuple(root.context_settings.get("help_option_names", ["--help"]))
    return _params(root, names), tuple(_commands(root, (), names))


def _commands(group: Any, path: tuple[str, ...], names: tuple[str, ...]) -> list[Command]:
    out: list[Command] = []
    for name, cmd in getattr(group, "commands", {}).items():
        if getattr(cmd, "hidden", False):
            continue
        here = (*path, name)
        sub = hasattr(cmd, "commands")
        extra = bool(getattr(cmd, "allow_extra_args", False))
        out.append(Command(here, _clean(cmd.help or ""), _params(cmd, names), sub, extra))
        if sub:
            out.extend(_commands(cmd, here, names))
    return out


def _params(cmd: Any, help_names: tuple[str, ...]) -> tuple[Param, ...]:
    params = []
    for p in cmd.params:
        if getattr(p, "hidden", False):
            continue
        argument = type(p).__name__.endswith("Argument")
        if argument:
            metavar = p.metavar or p.name.upper()
            params.append(Param((), metavar, _clean(getattr(p, "help", "") or ""), p.required,
                                True))
            continue
        flags = tuple(sorted([*p.opts, *p.secondary_opts], key=lambda f: (len(f), f)))
        flag = getattr(p, "is_flag", False)
        metavar = "" if flag else (p.metavar or p.name.upper())
        params.append(Param(flags, metavar, _clean(p.help or ""), p.required, False))
    # click adds --help itself; it is an option like any other for the reader.
    if getattr(cmd, "add_help_option", True):
        names = tuple(sorted(help_names, key=lambda f: (len(f), f)))
        params.append(Param(names, "", "Show the help and exit.", False, False))
    return tuple(params)


def _clean(text: str) -> str:
    return " ".join(text.split())


# -- roff -----------------------------------------------------------------------------


def _roff(text: str) -> str:
    import unicodedata

    # man's ASCII/latin1 devices lack glyphs like the ellipsis; NFKC spells them in ASCII.
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("\\", "\\e").replace("-", "\\-")
    lines = []
    for line in text.split("\n"):
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def _flag_line(param: Param) -> str:
    if param.argument:
        return f"\\fI{_roff(param.metavar)}\\fR"
    names = ", ".join(f"\\fB{_roff(f)}\\fR" for f in param.flags)
    return f"{names} \\fI{_roff(param.metavar)}\\fR" if param.metavar else names


def _usage(cmd: Command) -> str:
    words = [f"\\fB{PROG} {' '.join(cmd.path)}\\fR"]
    for p in cmd.params:
        if p.argument:
            words.append(f"\\fI{_roff(p.metavar)}\\fR")
        elif p.required:
            words.append(_flag_line(p))
    if cmd.group:
        words.append("\\fICOMMAND\\fR")
    elif cmd.extra_args:
        words.append("\\fIARGS\\fR...")
    elif any(not p.required and not p.argument for p in cmd.params):
        words.append("[\\fIOPTIONS\\fR]")
    return " ".join(words)


def nvhook_8(root: Any) -> str:
    """``nvhook(8)`` from the CLI's command tree."""
    own, commands = walk(root)
    out = [
        f'.TH NVHOOK 8 "" "nvhook {__version__}" "System Administration"',
        ".SH NAME",
        f"{PROG} \\- {_roff(_summary(root))}",
        ".SH SYNOPSIS",
        f"\\fB{PROG}\\fR [\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
        ".SH DESCRIPTION",
        _roff(
            "nvhook runs on a GPU node between the container engine and NVIDIA's container "
            "stack. Whatever a container's env, mounts, annotations or device nodes ask for, "
            "it gets only the GPUs that were allocated to it and that the node's policy lets "
            "it have; the decision is checked against the live GPUs (NVML), written to an "
            "audit log (read it with nvhook log) and to syslog (journalctl -t nvhook), and "
            "explained in one line (starting nvhook: ) when it refuses."
        ),
        ".PP",
        _roff(
            "Container engines run nvhook as an OCI prestart hook (Podman, CRI-O, Sarus), as "
            "a Podman precreate hook, or as a runtime standing in for runc (Docker, "
            "containerd). Operators use the other commands."
        ),
        ".SH GLOBAL OPTIONS",
    ]
    for p in own:
        out += [".TP", _flag_line(p), _roff(p.help)]
    out.append(".SH COMMANDS")
    for cmd in commands:
        out += [f'.SS "{PROG} {" ".join(cmd.path)}"', _usage(cmd), ".PP", _roff(cmd.help)]
        for p in cmd.params:
            req = " (required)" if p.required and not p.argument else ""
            out += [".TP", _flag_line(p), _roff(p.help + req)]
    out.append(".SH EXIT STATUS")
    for status, meaning in EXIT_MEANINGS.items():
        out += [".TP", f"\\fB{int(status)}\\fR", _roff(f"{status.name}: {meaning}")]
    out += [
        ".SH ENVIRONMENT",
        ".TP",
        "\\fBNVHOOK_CONFIG\\fR",
        _roff("nvhook's config file when --config is not given."),
        ".SH FILES",
        ".TP",
        "\\fI/etc/nvhook/config.toml\\fR",
        _roff("nvhook's config, see nvhook.toml(5)."),
        ".TP",
        f"\\fI{_roff(schema.by_dotted()['audit.path'].default)}\\fR",
        _roff("The audit log: one JSON line per decision on a GPU request."),
        ".TP",
        f"\\fI{_roff(schema.by_dotted()['audit.syslog-socket'].default)}\\fR",
        _roff("The syslog socket each decision is also sent to (facility daemon, ident nvhook)."),
        ".SH SEE ALSO",
        "\\fBnvhook.toml\\fR(5), \\fBrunc\\fR(8), \\fBpodman\\fR(1), \\fBoci-hooks\\fR(5)",
        "",
    ]
    return "\n".join(out)


def _summary(root: Any) -> str:
    text = _clean(root.help or "")
    return text.removeprefix(f"{PROG}: ").rstrip(".")


def _toml_value(key: schema.Key) -> str:
    import json

    if key.default is None:
        return f"unset ({key.unset})"
    if isinstance(key.default, bool):
        return "true" if key.default else "false"
    return json.dumps(key.default)


def nvhook_toml_5() -> str:
    """``nvhook.toml(5)`` from ``config_schema.KEYS``."""
    out = [
        f'.TH NVHOOK.TOML 5 "" "nvhook {__version__}" "File Formats"',
        ".SH NAME",
        "nvhook.toml \\- nvhook's config file",
        ".SH SYNOPSIS",
        "\\fI/etc/nvhook/config.toml\\fR (or \\fB\\-\\-config\\fR, or \\fB$NVHOOK_CONFIG\\fR)",
        ".SH DESCRIPTION",
        _roff(
            "A TOML file. A missing default file means every key at its default; a file "
            "named by --config or $NVHOOK_CONFIG must exist. An unknown key, a wrong type or "
            "a value outside the allowed ones is an error naming the file and the key "
            "(exit status 4), and a container asking for a GPU is then refused. Edit it with "
            "nvhook config set KEY VALUE, which validates the whole file before writing it."
        ),
    ]
    for table in schema.tables():
        title = "top-level keys" if not table else (
            "[[policy.rules]]" if table == "policy.rules[]" else f"[{table}]")
        out += [f'.SH "{title}"', _roff(schema.TABLES.get(table, table) + ".")]
        for key in schema.KEYS:
            if key.table != table:
                continue
            out += [".TP", f"\\fB{_roff(key.name)}\\fR (\\fI{_roff(key.type)}\\fR)",
                    _roff(key.meaning + ".")]
            if key.allowed:
                out += [".br", _roff("One of: " + ", ".join(key.allowed) + ".")]
            out += [".br", _roff("Default: " + _toml_value(key) + ".")]
    out += [
        ".SH EXAMPLE",
        ".nf",
        _roff(textwrap.dedent("""\
            version = 1

            [policy]
            mode = "enforce"
            all = "never"

            [[policy.rules]]
            name = "batch"
            match.annotations = { "io.kubernetes.pod.namespace" = "batch-.*" }
            mode = "rewrite"
            """).rstrip("\n")),
        ".fi",
        ".SH SEE ALSO",
        "\\fBnvhook\\fR(8)",
        "",
    ]
    return "\n".join(out)


# -- markdown -------------------------------------------------------------------------

GENERATED = ("<!-- Generated by scripts/gen-docs from {src}; edit that, then run "
             "`bash scripts/gen-docs`. -->")


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def configuration_md() -> str:
    out = [
        GENERATED.format(src="nvhook/config_schema.py"),
        "",
        "# Configuration reference",
        "",
        "nvhook reads one TOML file: `--config PATH`, else `$NVHOOK_CONFIG`, else",
        "`/etc/nvhook/config.toml` (a missing default file means every key at its default).",
        "Unknown keys, wrong types and values outside the allowed ones are refused with one",
        "line naming the file and the key (exit status 4); a container asking for a GPU is then",
        "refused too. `nvhook config set KEY VALUE` edits the file, keeps its comments, and",
        "validates the whole result before writing. `nvhook install` writes the commented",
        "defaults. The same table is in `man 5 nvhook.toml`.",
        "",
    ]
    for table in schema.tables():
        title = "Top-level keys" if not table else (
            "`[[policy.rules]]`" if table == "policy.rules[]" else f"`[{table}]`")
        out += [f"## {title}", "", schema.TABLES.get(table, table) + ".", "",
                "| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
        for key in schema.KEYS:
            if key.table != table:
                continue
            allowed = ", ".join(f"`{a}`" for a in key.allowed)
            default = f"unset: {key.unset}" if key.default is None else f"`{_toml_value(key)}`"
            out.append(f"| `{key.name}` | {key.type} | {_md_cell(default)} | {allowed} | "
                       f"{_md_cell(key.meaning)} |")
        out.append("")
    return "\n".join(out)


def exit_codes_md() -> str:
    out = [
        GENERATED.format(src="nvhook/errors.py"),
        "",
        "# Exit codes",
        "",
        "Every failure is one line on stderr starting `nvhook: ` and one of these statuses.",
        "A container runtime aborts the container on any non-zero status from a hook. The",
        "runtime shim also writes the line into the runtime's `--log`, which is what Docker",
        "and containerd show.",
        "",
        "| status | name | meaning |",
        "|---|---|---|",
    ]
    for status, meaning in EXIT_MEANINGS.items():
        out.append(f"| {int(status)} | `{status.name}` | {_md_cell(meaning)} |")
    out.append("")
    return "\n".join(out)


def pages(root: Any) -> dict[str, str]:
    """Repository path -> generated text, for every generated page."""
    return {
        "man/nvhook.8": nvhook_8(root),
        "man/nvhook.toml.5": nvhook_toml_5(),
        "docs/configuration.md": configuration_md(),
        "docs/exit-codes.md": exit_codes_md(),
    }


def write_all(root: Any, base: Any) -> list[str]:
    """Write every page under ``base`` (a Path); the paths that changed."""
    changed = []
    for rel, text in pages(root).items():
        path = base / rel
        old = path.read_text(encoding="utf-8") if path.exists() else None
        if old != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            changed.append(rel)
    return changed
