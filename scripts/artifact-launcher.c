/* nvhook's artifact launcher: the `nvhook` executable at the top of the node artifact.
 *
 * Static, so it runs where there is no libc at all (the FROM-scratch image) as well as on any
 * x86_64 host. It finds the artifact from its own real path (/proc/self/exe resolves the
 * /opt/nvhook/current symlink, so a running hook keeps its version even if `current` swaps),
 * then runs the bundled CPython through the bundled glibc's dynamic loader:
 *
 *   ROOT/python/lib/ld-linux-x86-64.so.2 --library-path ROOT/python/lib[:$LD_LIBRARY_PATH]
 *       ROOT/python/bin/python3 -I -S -B -c BOOT ARGS...
 *
 * Invoking the loader explicitly keeps the tree relocatable (no absolute PT_INTERP, no rpath
 * edits) and independent of the host's glibc. The caller's LD_LIBRARY_PATH is appended after the
 * bundled libraries and the environment is passed on untouched, so libnvidia-ml.so.1 is still
 * found by soname on the host (its ld.so.cache, or LD_LIBRARY_PATH, as for any program).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BOOT                                                                        \
    "import sys;sys.argv[0]='nvhook';"                                              \
    "sys.path.append(sys.prefix+'/lib/python%d.%d/site-packages'%sys.version_info[:2]);" \
    "from nvhook.entry import main;main()"

static int fail(const char *what, const char *path) {
    /* Exit 1 is nvhook's INTERNAL status: the artifact itself is broken. */
    dprintf(2, "nvhook: cannot start the bundled interpreter: %s %s: %s\n", what, path,
            strerror(errno));
    return 1;
}

int main(int argc, char **argv) {
    static char root[PATH_MAX], ld[PATH_MAX], py[PATH_MAX], lib[PATH_MAX];
    static char libpath[2 * PATH_MAX + 2];
    ssize_t n = readlink("/proc/self/exe", root, sizeof root - 1);
    if (n <= 0) {
        /* No /proc: fall back to argv[0], which must then be a path. */
        if (argc < 1 || !strchr(argv[0], '/') || !realpath(argv[0], root))
            return fail("locate", "/proc/self/exe");
    } else {
        root[n] = '\0';
    }
    char *slash = strrchr(root, '/');
    if (!slash) return fail("locate", root);
    *slash = '\0';
    snprintf(lib, sizeof lib, "%s/python/lib", root);
    snprintf(ld, sizeof ld, "%s/ld-linux-x86-64.so.2", lib);
    snprintf(py, sizeof py, "%s/python/bin/python3", root);
    const char *user = getenv("LD_LIBRARY_PATH");
    if (user && *user)
        snprintf(libpath, sizeof libpath, "%s:%s", lib, user);
    else
        snprintf(libpath, sizeof libpath, "%s", lib);

    char **args = calloc((size_t)argc + 10, sizeof *args);
    if (!args) return fail("allocate", "argv");
    int i = 0;
    args[i++] = ld;
    args[i++] = "--library-path";
    args[i++] = libpath;
    args[i++] = py;
    args[i++] = "-I"; /* isolated: no PYTHON* env, no user site, no cwd on sys.path */
    args[i++] = "-S"; /* no site: the bundle's own path is set by BOOT */
    args[i++] = "-B"; /* the tree is read-only; its .pyc files are prebuilt */
    args[i++] = "-c";
    args[i++] = BOOT;
    for (int a = 1; a < argc; a++) args[i++] = argv[a];
    args[i] = NULL;
    execv(ld, args);
    return fail("exec", ld);
}
