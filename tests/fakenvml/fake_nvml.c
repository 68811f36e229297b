/*
 * fake_nvml.c - a stand-in for NVIDIA's libnvidia-ml.so.1, so that unmodified pynvml
 * (PyPI nvidia-ml-py) runs on a machine with no GPU and no driver.
 *
 * Build (tests/fakenvml/__init__.py does this at test time):
 *   gcc -O2 -Wall -Wextra -shared -fPIC -Wl,-soname,libnvidia-ml.so.1 \
 *       -o libnvidia-ml.so.1 fake_nvml.c
 * pynvml dlopens "libnvidia-ml.so.1" by soname, so put the output directory on
 * LD_LIBRARY_PATH of a *new* process (the loader reads it only at process start).
 *
 * Environment, read by nvmlInitWithFlags:
 *   FAKE_NVML_TOPOLOGY=<file>  report the GPUs in <file> instead of the built-in topology.
 *   FAKE_NVML_FAIL=<mode>      driver_not_loaded: init returns NVML_ERROR_DRIVER_NOT_LOADED
 *                              no_permission:     init returns NVML_ERROR_NO_PERMISSION
 *                              hang:              init never returns (dies on SIGTERM/SIGKILL)
 *                              enum_hang:         init works; nvmlDeviceGetHandleByIndex_v2
 *                                                 never returns
 *                              any other value:   init returns NVML_ERROR_UNKNOWN (catches typos)
 *   FAKE_NVML_CALLS=<file>     append "init <pid>\n" for each successful nvmlInitWithFlags.
 *
 * Topology file, one record per line; blank lines and lines starting with '#' are ignored:
 *   gpu <uuid> <busId> <minor> <mig> <name...>
 *   mig <slot> <uuid> <gi> <ci> [<profile>]
 * - GPU index = order of the gpu lines. At most MAX_GPUS of them.
 * - <busId> is NVML's form DDDDDDDD:BB:DD.F (hex), e.g. 00000000:17:00.0; it is reported
 *   as written, and its parts fill nvmlPciInfo_t.domain/bus/device.
 * - <mig> is 1 (MIG enabled: current and pending mode 1) or 0 (disabled). <name> is the
 *   rest of the line and may hold spaces.
 * - A mig line is a MIG device in slot <slot> (0..MAX_MIGS-1) of the gpu line above it, which
 *   must have <mig> = 1. Slots with no mig line are empty. <gi>/<ci> are its GPU and compute
 *   instance ids. Its name is "<gpu name> MIG <profile>"; <profile> defaults to 1g.10gb.
 * Anything malformed makes nvmlInitWithFlags print the reason on stderr and return
 * NVML_ERROR_UNKNOWN. Without FAKE_NVML_TOPOLOGY, DEFAULT_TOPOLOGY below is used.
 *
 * Where the behaviour of an edge case is a choice, it follows nvml.h (CUDA 13.0):
 * - nvmlDeviceGetMaxMigDeviceCount "returns zero if MIG is not supported or enabled", so on
 *   a GPU with MIG disabled every index given to nvmlDeviceGetMigDeviceHandleByIndex is out
 *   of range: NVML_ERROR_INVALID_ARGUMENT. An empty slot in range is NVML_ERROR_NOT_FOUND.
 * - A query that does not apply to the kind of handle given (PCI info of a MIG device, GPU
 *   instance id of a whole GPU, ...) is NVML_ERROR_NOT_SUPPORTED.
 */
#define _POSIX_C_SOURCE 200809L /* O_CLOEXEC, pause() */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Return codes, values from nvml.h. */
typedef enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_ALREADY_INITIALIZED = 5,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_LIBRARY_NOT_FOUND = 12,
    NVML_ERROR_FUNCTION_NOT_FOUND = 13,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_UNKNOWN = 999
} nvmlReturn_t;

#define MAX_GPUS 64
#define MAX_MIGS 7 /* MIG devices per GPU: 7 on A100/H100 */
#define UUID_LEN 96   /* NVML_DEVICE_UUID_V2_BUFFER_SIZE */
#define NAME_LEN 96   /* NVML_DEVICE_NAME_V2_BUFFER_SIZE */
#define BUS_ID_LEN 32 /* NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE */
#define MAX_TOPOLOGY_BYTES (1 << 20)
#define DEFAULT_MIG_PROFILE "1g.10gb"

/* What an nvmlDevice_t points at: a whole GPU or a MIG device (is_mig). */
struct nvmlDevice_st {
    int is_mig;
    unsigned gpu; /* index of the GPU; for a MIG device, of its parent */
    char uuid[UUID_LEN];
    char name[NAME_LEN];
    /* whole GPU only */
    char bus_id[BUS_ID_LEN];
    unsigned domain, bus, device;
    unsigned minor;
    unsigned mig_mode;
    /* MIG device only */
    int present; /* the slot holds a MIG device */
    unsigned gi, ci;
};
typedef struct nvmlDevice_st *nvmlDevice_t;

typedef struct {
    char busIdLegacy[16];
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int pciDeviceId;
    unsigned int pciSubSystemId;
    char busId[BUS_ID_LEN];
} nvmlPciInfo_t;
_Static_assert(sizeof(nvmlPciInfo_t) == 68, "nvmlPciInfo_t must match nvml.h");

#define DRIVER_VERSION "550.54.15"
#define NVML_VERSION "12.550.54.15"
#define CUDA_DRIVER_VERSION 12040
#define PCI_DEVICE_ID 0x233010DEu    /* H100 SXM5 (0x2330), vendor NVIDIA (0x10DE) */
#define PCI_SUBSYSTEM_ID 0x16C110DEu

static const char DEFAULT_TOPOLOGY[] =
    "gpu GPU-5a6e2b1c-8d3f-4e7a-9b0c-1d2e3f4a5b6c 00000000:17:00.0 0 0 NVIDIA H100 80GB HBM3\n"
    "gpu GPU-c0ffee00-1234-4abc-8def-0123456789ab 00000000:65:00.0 1 1 NVIDIA H100 80GB HBM3\n"
    "mig 0 MIG-2f7c1a9e-0b3d-5c4e-8f6a-7b8c9d0e1f2a 1 0\n"
    "mig 2 MIG-8e9f0a1b-2c3d-5e4f-9a0b-1c2d3e4f5a6b 2 0\n";

static struct nvmlDevice_st g_gpus[MAX_GPUS];
static struct nvmlDevice_st g_migs[MAX_GPUS][MAX_MIGS];
static unsigned g_gpu_count;
/* NVML counts nested init/shutdown pairs; queries work while the count is above zero. */
static atomic_uint g_init_count;
static pthread_mutex_t g_init_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- small helpers ---- */

__attribute__((noreturn)) static void hang(void)
{
    /* pause() leaves the default SIGTERM/SIGKILL actions in place, so the process dies. */
    for (;;)
        pause();
}

static int fail_mode_is(const char *mode)
{
    const char *fail = getenv("FAKE_NVML_FAIL");
    return fail && strcmp(fail, mode) == 0;
}

/* Copies src into a caller buffer of len bytes, as NVML's string getters do. */
static nvmlReturn_t copy_out(const char *src, char *dst, unsigned int len)
{
    size_t n = strlen(src);
    if (!dst)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (n >= len)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, n + 1);
    return NVML_SUCCESS;
}

/* Copies into one of our fixed fields; 0 if it does not fit. */
static int set_str(char *dst, size_t size, const char *src)
{
    int n = snprintf(dst, size, "%s", src);
    return n >= 0 && (size_t)n < size;
}

static int parse_uint(const char *s, unsigned *out)
{
    char *end;
    unsigned long v;
    if (*s < '0' || *s > '9')
        return 0;
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || *end || v > UINT_MAX)
        return 0;
    *out = (unsigned)v;
    return 1;
}

/* Splits the next whitespace-separated token off *p; NULL at end of line. */
static char *next_token(char **p)
{
    char *s = *p + strspn(*p, " \t\r");
    char *end;
    if (!*s)
        return NULL;
    end = s + strcspn(s, " \t\r");
    if (*end)
        *end++ = '\0';
    *p = end;
    return s;
}

/* ---- topology ---- */

static const char *parse_gpu_line(char *p)
{
    struct nvmlDevice_st *g;
    char *uuid = next_token(&p), *bus = next_token(&p);
    char *minor = next_token(&p), *mig = next_token(&p);
    char *name = p + strspn(p, " \t");
    size_t name_len = strcspn(name, "\r");
    int used = 0;

    if (!uuid || !bus || !minor || !mig || name_len == 0)
        return "expected: gpu <uuid> <busId> <minor> <mig 0|1> <name>";
    name[name_len] = '\0';
    while (name_len > 0 && (name[name_len - 1] == ' ' || name[name_len - 1] == '\t'))
        name[--name_len] = '\0';
    if (g_gpu_count == MAX_GPUS)
        return "too many GPUs";
    g = &g_gpus[g_gpu_count];
    if (!set_str(g->uuid, sizeof g->uuid, uuid))
        return "uuid too long";
    if (strlen(bus) != 16 ||
        sscanf(bus, "%8x:%2x:%2x.%*1x%n", &g->domain, &g->bus, &g->device, &used) != 3 ||
        used != 16)
        return "busId must look like 00000000:17:00.0";
    set_str(g->bus_id, sizeof g->bus_id, bus);
    if (!parse_uint(minor, &g->minor))
        return "bad minor number";
    if (strcmp(mig, "0") != 0 && strcmp(mig, "1") != 0)
        return "mig must be 0 or 1";
    g->mig_mode = mig[0] == '1';
    if (!set_str(g->name, sizeof g->name, name))
        return "name too long";
    g->gpu = g_gpu_count++;
    return NULL;
}

static const char *parse_mig_line(char *p)
{
    struct nvmlDevice_st *parent, *m;
    char *slot = next_token(&p), *uuid = next_token(&p);
    char *gi = next_token(&p), *ci = next_token(&p);
    char *profile = next_token(&p);
    unsigned s;
    int n;

    if (!slot || !uuid || !gi || !ci || next_token(&p))
        return "expected: mig <slot> <uuid> <gi> <ci> [<profile>]";
    if (g_gpu_count == 0)
        return "mig line before any gpu line";
    parent = &g_gpus[g_gpu_count - 1];
    if (!parent->mig_mode)
        return "mig line under a GPU with MIG disabled";
    if (!parse_uint(slot, &s) || s >= MAX_MIGS)
        return "slot must be 0..6";
    m = &g_migs[parent->gpu][s];
    if (m->present)
        return "slot already used";
    if (!set_str(m->uuid, sizeof m->uuid, uuid))
        return "uuid too long";
    if (!parse_uint(gi, &m->gi) || !parse_uint(ci, &m->ci))
        return "bad gi or ci";
    n = snprintf(m->name, sizeof m->name, "%s MIG %s", parent->name,
                 profile ? profile : DEFAULT_MIG_PROFILE);
    if (n < 0 || (size_t)n >= sizeof m->name)
        return "name too long";
    m->is_mig = 1;
    m->gpu = parent->gpu;
    m->present = 1;
    return NULL;
}

/* Parses text (modified in place) into g_gpus/g_migs. */
static nvmlReturn_t parse_topology(char *text, const char *origin)
{
    unsigned lineno = 0;
    char *line = text;

    memset(g_gpus, 0, sizeof g_gpus);
    memset(g_migs, 0, sizeof g_migs);
    g_gpu_count = 0;
    while (line) {
        char *nl = strchr(line, '\n');
        char *p = line;
        char *kw;
        const char *why = NULL;

        if (nl)
            *nl = '\0';
        lineno++;
        kw = next_token(&p);
        if (!kw || kw[0] == '#')
            why = NULL;
        else if (strcmp(kw, "gpu") == 0)
            why = parse_gpu_line(p);
        else if (strcmp(kw, "mig") == 0)
            why = parse_mig_line(p);
        else
            why = "unknown record (want gpu or mig)";
        if (why) {
            fprintf(stderr, "fake_nvml: %s:%u: %s\n", origin, lineno, why);
            g_gpu_count = 0;
            return NVML_ERROR_UNKNOWN;
        }
        line = nl ? nl + 1 : NULL;
    }
    return NVML_SUCCESS;
}

static nvmlReturn_t load_topology(void)
{
    const char *path = getenv("FAKE_NVML_TOPOLOGY");
    char *text;
    size_t n;
    FILE *f;
    nvmlReturn_t ret;

    if (!path || !*path) {
        char copy[sizeof DEFAULT_TOPOLOGY];
        memcpy(copy, DEFAULT_TOPOLOGY, sizeof copy);
        return parse_topology(copy, "default topology");
    }
    f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "fake_nvml: cannot open %s: %s\n", path, strerror(errno));
        return NVML_ERROR_UNKNOWN;
    }
    text = malloc(MAX_TOPOLOGY_BYTES + 1);
    if (!text) {
        fclose(f);
        return NVML_ERROR_UNKNOWN;
    }
    n = fread(text, 1, MAX_TOPOLOGY_BYTES + 1, f);
    fclose(f);
    if (n > MAX_TOPOLOGY_BYTES) {
        fprintf(stderr, "fake_nvml: %s: larger than %d bytes\n", path, MAX_TOPOLOGY_BYTES);
        free(text);
        return NVML_ERROR_UNKNOWN;
    }
    text[n] = '\0';
    ret = parse_topology(text, path);
    free(text);
    return ret;
}

/* Appends "init <pid>" to $FAKE_NVML_CALLS; tests use it to see whether NVML was touched. */
static nvmlReturn_t log_init(void)
{
    const char *path = getenv("FAKE_NVML_CALLS");
    char line[32];
    int fd, n;
    ssize_t written;

    if (!path || !*path)
        return NVML_SUCCESS;
    n = snprintf(line, sizeof line, "init %ld\n", (long)getpid());
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        /* Failing loudly: a silently missing line would read as "NVML was not touched". */
        fprintf(stderr, "fake_nvml: cannot open %s: %s\n", path, strerror(errno));
        return NVML_ERROR_UNKNOWN;
    }
    written = write(fd, line, (size_t)n); /* one write: O_APPEND keeps lines whole */
    close(fd);
    return written == n ? NVML_SUCCESS : NVML_ERROR_UNKNOWN;
}

/*
 * Resolves a handle. kind: 'g' a whole GPU, 'm' a MIG device, 'a' either. Unknown pointers
 * are rejected by comparing against our own tables, so garbage is never dereferenced.
 */
static nvmlReturn_t resolve(nvmlDevice_t h, char kind, struct nvmlDevice_st **out)
{
    struct nvmlDevice_st *d = NULL;
    unsigned i, s;

    if (atomic_load(&g_init_count) == 0)
        return NVML_ERROR_UNINITIALIZED;
    for (i = 0; i < g_gpu_count && !d; i++) {
        if (h == &g_gpus[i])
            d = h;
        for (s = 0; s < MAX_MIGS && !d; s++)
            if (h == &g_migs[i][s] && g_migs[i][s].present)
                d = h;
    }
    if (!d)
        return NVML_ERROR_INVALID_ARGUMENT;
    if ((kind == 'g' && d->is_mig) || (kind == 'm' && !d->is_mig))
        return NVML_ERROR_NOT_SUPPORTED;
    *out = d;
    return NVML_SUCCESS;
}

#define RESOLVE(h, kind, d)                          \
    do {                                             \
        nvmlReturn_t r_ = resolve((h), (kind), &(d)); \
        if (r_ != NVML_SUCCESS)                      \
            return r_;                               \
    } while (0)

#define REQUIRE_INIT()                          \
    do {                                        \
        if (atomic_load(&g_init_count) == 0)    \
            return NVML_ERROR_UNINITIALIZED;    \
    } while (0)

/* ---- init and system queries ---- */

nvmlReturn_t nvmlInitWithFlags(unsigned int flags)
{
    const char *fail = getenv("FAKE_NVML_FAIL");
    nvmlReturn_t ret = NVML_SUCCESS;

    (void)flags;
    if (fail && *fail) {
        if (strcmp(fail, "hang") == 0)
            hang();
        if (strcmp(fail, "driver_not_loaded") == 0)
            return NVML_ERROR_DRIVER_NOT_LOADED;
        if (strcmp(fail, "no_permission") == 0)
            return NVML_ERROR_NO_PERMISSION;
        if (strcmp(fail, "enum_hang") != 0) {
            fprintf(stderr, "fake_nvml: unknown FAKE_NVML_FAIL=%s\n", fail);
            return NVML_ERROR_UNKNOWN;
        }
    }
    pthread_mutex_lock(&g_init_lock);
    if (atomic_load(&g_init_count) == 0)
        ret = load_topology();
    if (ret == NVML_SUCCESS)
        ret = log_init();
    if (ret == NVML_SUCCESS)
        atomic_fetch_add(&g_init_count, 1);
    pthread_mutex_unlock(&g_init_lock);
    return ret;
}

nvmlReturn_t nvmlInit_v2(void)
{
    return nvmlInitWithFlags(0);
}

nvmlReturn_t nvmlShutdown(void)
{
    nvmlReturn_t ret = NVML_SUCCESS;

    pthread_mutex_lock(&g_init_lock);
    if (atomic_load(&g_init_count) == 0)
        ret = NVML_ERROR_UNINITIALIZED;
    else
        atomic_fetch_sub(&g_init_count, 1);
    pthread_mutex_unlock(&g_init_lock);
    return ret;
}

const char *nvmlErrorString(nvmlReturn_t result)
{
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_ALREADY_INITIALIZED: return "Already Initialized";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_LIBRARY_NOT_FOUND: return "NVML Shared Library Not Found";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
    REQUIRE_INIT();
    return copy_out(DRIVER_VERSION, version, length);
}

nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length)
{
    REQUIRE_INIT();
    return copy_out(NVML_VERSION, version, length);
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *cudaDriverVersion)
{
    REQUIRE_INIT();
    if (!cudaDriverVersion)
        return NVML_ERROR_INVALID_ARGUMENT;
    *cudaDriverVersion = CUDA_DRIVER_VERSION;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *cudaDriverVersion)
{
    return nvmlSystemGetCudaDriverVersion(cudaDriverVersion);
}

/* ---- whole-GPU enumeration ---- */

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount)
{
    REQUIRE_INIT();
    if (!deviceCount)
        return NVML_ERROR_INVALID_ARGUMENT;
    *deviceCount = g_gpu_count;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
    REQUIRE_INIT();
    if (fail_mode_is("enum_hang"))
        hang();
    if (!device || index >= g_gpu_count)
        return NVML_ERROR_INVALID_ARGUMENT;
    *device = &g_gpus[index];
    return NVML_SUCCESS;
}

/* Real NVML accepts GPU and MIG UUIDs here. */
nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device)
{
    unsigned i, s;

    REQUIRE_INIT();
    if (!uuid || !device)
        return NVML_ERROR_INVALID_ARGUMENT;
    for (i = 0; i < g_gpu_count; i++) {
        if (strcmp(g_gpus[i].uuid, uuid) == 0) {
            *device = &g_gpus[i];
            return NVML_SUCCESS;
        }
        for (s = 0; s < MAX_MIGS; s++) {
            if (g_migs[i][s].present && strcmp(g_migs[i][s].uuid, uuid) == 0) {
                *device = &g_migs[i][s];
                return NVML_SUCCESS;
            }
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index)
{
    struct nvmlDevice_st *d;

    RESOLVE(device, 'g', d);
    if (!index)
        return NVML_ERROR_INVALID_ARGUMENT;
    *index = d->gpu;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length)
{
    struct nvmlDevice_st *d;

    RESOLVE(device, 'a', d);
    return copy_out(d->uuid, uuid, length);
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length)
{
    struct nvmlDevice_st *d;

    RESOLVE(device, 'a', d);
    return copy_out(d->name, name, length);
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    struct nvmlDevice_st *d;

    RESOLVE(device, 'g', d);
    if (!pci)
        return NVML_ERROR_INVALID_ARGUMENT;
    memset(pci, 0, sizeof *pci);
    /* The legacy field has a 4-digit domain: NVML_DEVICE_PCI_BUS_ID_LEGACY_FMT. */
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.0",
             d->domain & 0xFFFFu, d->bus & 0xFFu, d->device & 0xFFu);
    pci->domain = d->domain;
    pci->bus = d->bus;
    pci->device = d->device;
    pci->pciDeviceId = PCI_DEVICE_ID;
    pci->pciSubSystemId = PCI_SUBSYSTEM_ID;
    memcpy(pci->busId, d->bus_id, sizeof pci->busId);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int *minorNumber)
{
    struct nvmlDevice_st *d;

    RESOLVE(device, 'g', d);
    if (!minorNumber)
        return NVML_ERROR_INVALID_ARGUMENT;
    *minorNumber = d->minor;
    return NVML_SUCCESS;
}

/* ---- MIG ---- */

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *currentMode,
                                  unsigned int *pendingMode)
{
    struct nvmlDevice_st *d;

    RESOLVE(device, 'g', d);
    if (!currentMode || !pendingMode)
        return NVML_ERROR_INVALID_ARGUMENT;
    *currentMode = d->mig_mode;
    *pendingMode = d->mig_mode;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count)
{
    struct nvmlDevice_st *d;

    RESOLVE(device, 'g', d);
    if (!count)
        return NVML_ERROR_INVALID_ARGUMENT;
    *count = d->mig_mode ? MAX_MIGS : 0;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index,
                                                 nvmlDevice_t *migDevice)
{
    struct nvmlDevice_st *d;

    RESOLVE(device, 'g', d);
    if (!migDevice || !d->mig_mode || index >= MAX_MIGS)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!g_migs[d->gpu][index].present)
        return NVML_ERROR_NOT_FOUND;
    *migDevice = &g_migs[d->gpu][index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t device, unsigned int *isMigDevice)
{
    struct nvmlDevice_st *d;

    RESOLVE(device, 'a', d);
    if (!isMigDevice)
        return NVML_ERROR_INVALID_ARGUMENT;
    *isMigDevice = (unsigned)d->is_mig;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t device, unsigned int *id)
{
    struct nvmlDevice_st *d;

    RESOLVE(device, 'm', d);
    if (!id)
        return NVML_ERROR_INVALID_ARGUMENT;
    *id = d->gi;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t device, unsigned int *id)
{
    struct nvmlDevice_st *d;

    RESOLVE(device, 'm', d);
    if (!id)
        return NVML_ERROR_INVALID_ARGUMENT;
    *id = d->ci;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t migDevice,
                                                          nvmlDevice_t *device)
{
    struct nvmlDevice_st *d;

    RESOLVE(migDevice, 'm', d);
    if (!device)
        return NVML_ERROR_INVALID_ARGUMENT;
    *device = &g_gpus[d->gpu];
    return NVML_SUCCESS;
}
