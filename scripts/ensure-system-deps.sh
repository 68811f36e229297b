#!/usr/bin/env bash
# Install the Debian packages the end-to-end tests (tests/e2e) need, if they are missing.
#
#   required: runc            the OCI runtime the tests drive directly
#             busybox-static  a static /bin/busybox, copied into the test containers' rootfs
#             docker.io       dockerd 20.10 for tests/e2e/test_docker.py (started on a private socket)
#             containerd      containerd 1.6 + ctr for tests/e2e/test_containerd.py
#             libc6-dev       static glibc, for the node artifact's launcher (scripts/build-artifact)
#             python3         Debian's /usr/bin/python3, the interpreter the node artifact bundles
#   optional: podman          the hooks.d tests skip without it; failing to install it is a warning
#             strace          tests/test_isolation.py traces nvhook's opens; skips without it
#
# Quiet and fast (a few file tests, no dpkg/apt fork) when everything is present; prints one line
# per package it installs. Root is needed only when something has to be installed: not root and a
# required package missing -> a message on stderr and exit 1.
set -euo pipefail

PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"
me="ensure-system-deps"

have_runc() { command -v runc >/dev/null 2>&1; }
# Debian's dynamic `busybox` package ships the same /bin/busybox path, and a static binary cannot
# be told from a dynamic one by a cheap test, so also ask dpkg's database (a file test, no fork).
have_busybox_static() { [[ -x /bin/busybox && -e /var/lib/dpkg/info/busybox-static.list ]]; }
have_libc6_dev() { [[ -e /usr/lib/x86_64-linux-gnu/libc.a ]]; }
have_debian_python3() { [[ -x /usr/bin/python3 && -e /var/lib/dpkg/info/python3.list ]]; }
have_podman() { command -v podman >/dev/null 2>&1; }
have_dockerd() { command -v dockerd >/dev/null 2>&1 && [[ -x /usr/bin/docker ]]; }
have_containerd() { command -v containerd >/dev/null 2>&1 && command -v ctr >/dev/null 2>&1; }
have_strace() { command -v strace >/dev/null 2>&1; }

have() {
    case "$1" in
        runc) have_runc ;;
        busybox-static) have_busybox_static ;;
        podman) have_podman ;;
        docker.io) have_dockerd ;;
        containerd) have_containerd ;;
        libc6-dev) have_libc6_dev ;;
        python3) have_debian_python3 ;;
        *) return 1 ;;
    esac
}

missing=()
for pkg in runc busybox-static docker.io containerd libc6-dev python3; do
    have "$pkg" || missing+=("$pkg")
done
want_podman=0
have_podman || want_podman=1
want_strace=0
have_strace || want_strace=1

if ((${#missing[@]} == 0 && want_podman == 0 && want_strace == 0)); then
    exit 0
fi

if [[ "$(id -u)" -ne 0 ]]; then
    if ((${#missing[@]} > 0)); then
        echo "$me: missing required package(s): ${missing[*]}." \
            "Installing them needs root: run 'sudo $0' (or apt-get install ${missing[*]})." >&2
        exit 1
    fi
    ((want_podman)) && echo "$me: warning: podman is not installed and installing it needs" \
        "root; the podman end-to-end tests will be skipped." >&2
    ((want_strace)) && echo "$me: warning: strace is not installed and installing it needs" \
        "root; the strace isolation tests will be skipped." >&2
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "$me: apt-get not found; install these packages by hand:" \
        "${missing[*]}$( ((want_podman)) && echo ' podman (optional)')$( ((want_strace)) &&
            echo ' strace (optional)')" >&2
    ((${#missing[@]} > 0)) && exit 1
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
log="$(mktemp -t ensure-system-deps.XXXXXX.log)"
trap 'rm -f "$log"' EXIT

updated=0
apt_update() {
    ((updated)) && return 0
    updated=1
    # A failed update is not fatal by itself: the install below may still work from the
    # existing lists, and if it does not, its error and this log are shown.
    apt-get -q update >>"$log" 2>&1 || echo "$me: note: apt-get update failed" >>"$log"
}
apt_install() {
    apt_update
    apt-get -q -y --no-install-recommends -o DPkg::Lock::Timeout=300 install "$@" >>"$log" 2>&1
}

if ((${#missing[@]} > 0)); then
    if ! apt_install "${missing[@]}"; then
        echo "$me: error: 'apt-get install ${missing[*]}' failed; last lines of its output:" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
    for pkg in "${missing[@]}"; do
        if ! have "$pkg"; then
            echo "$me: error: installed $pkg but its binary is still missing" >&2
            exit 1
        fi
        echo "$me: installed $pkg"
    done
fi

if ((want_podman)); then
    if apt_install podman && have_podman; then
        echo "$me: installed podman"
    else
        echo "$me: warning: could not install podman; the podman end-to-end tests will be" \
            "skipped. Last lines of apt-get's output:" >&2
        tail -n 5 "$log" | sed 's/^/    /' >&2
    fi
fi

if ((want_strace)); then
    if apt_install strace && have_strace; then
        echo "$me: installed strace"
    else
        echo "$me: warning: could not install strace; the strace isolation tests will be" \
            "skipped. Last lines of apt-get's output:" >&2
        tail -n 5 "$log" | sed 's/^/    /' >&2
    fi
fi
