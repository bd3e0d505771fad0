/*
 * A stand-in for libnvidia-ml.so.1 that exports the NVML entry points the node agent reaches through
 * pynvml, with the real symbol names, argument lists and struct layouts, and answers from a text file.
 *
 * The file is named by the environment variable FAKE_NVML_CONFIG and read again on every nvmlInit*,
 * so a test can change the "hardware" between two checks of one process. One `key=value` per line,
 * `#` starts a comment. Node-wide keys give every GPU's defaults; `gpu.<i>.<key>` overrides one GPU.
 *
 *   gpus=4                     number of GPUs (at most 64)
 *   driver=580.82.07           nvmlSystemGetDriverVersion
 *   init_error=9               nvmlInit* fails with this NVML return code (9: driver not loaded)
 *   count_error=<code>         nvmlDeviceGetCount* fails
 *   fabric_v=none              nvmlDeviceGetGpuFabricInfoV answers FUNCTION_NOT_FOUND, as pynvml does
 *                              when the symbol is absent (build with -DFAKE_NVML_NO_FABRIC_V to drop it)
 *   fabric_v_max=2             newest struct version the versioned call accepts (2 or 3, default 3)
 *   per GPU, also as node-wide defaults:
 *   name=NVIDIA GB200          nvmlDeviceGetName
 *   uuid=GPU-...               nvmlDeviceGetUUID (default derived from the index)
 *   fabric=none                both fabric calls answer NOT_SUPPORTED (PCIe GPU without NVLink fabric)
 *   cluster_uuid=<uuid>|zero   the 16 clusterUuid bytes, canonical UUID text
 *   clique_id=32766            cliqueId
 *   state=completed            not_supported | not_started | in_progress | completed | <number>
 *   status=0                   NVML return code of the fabric registration
 *   health_mask=0              healthMask (versioned call only)
 *   handle_error=<code>        nvmlDeviceGetHandleByIndex* fails
 *   uuid_error=<code>          nvmlDeviceGetUUID fails
 *   name_error=<code>          nvmlDeviceGetName fails
 *   fabric_error=<code>        both fabric calls fail
 *
 * An unreadable file or an unknown key makes nvmlInit* fail (and says why on stderr), so a typo in a
 * test shows up instead of silently using defaults.
 *
 * When FAKE_NVML_TRACE names a file, every nvmlInit* call appends one line (`init <pid>`) to it before
 * anything else, so a test can wait until a process has taken a given number of readings.
 */
#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

typedef unsigned int nvmlReturn_t;

#define NVML_SUCCESS 0u
#define NVML_ERROR_UNINITIALIZED 1u
#define NVML_ERROR_INVALID_ARGUMENT 2u
#define NVML_ERROR_NOT_SUPPORTED 3u
#define NVML_ERROR_INSUFFICIENT_SIZE 7u
#define NVML_ERROR_DRIVER_NOT_LOADED 9u
#define NVML_ERROR_FUNCTION_NOT_FOUND 13u
#define NVML_ERROR_GPU_IS_LOST 15u
#define NVML_ERROR_ARGUMENT_VERSION_MISMATCH 25u
#define NVML_ERROR_UNKNOWN 999u

#define NVML_GPU_FABRIC_UUID_LEN 16
#define NVML_GPU_FABRIC_STATE_NOT_SUPPORTED 0u
#define NVML_GPU_FABRIC_STATE_NOT_STARTED 1u
#define NVML_GPU_FABRIC_STATE_IN_PROGRESS 2u
#define NVML_GPU_FABRIC_STATE_COMPLETED 3u

/* NVML_STRUCT_VERSION(GpuFabricInfo, n): sizeof the struct | n << 24. */
#define NVML_GPU_FABRIC_INFO_V2 0x02000024u
#define NVML_GPU_FABRIC_INFO_V3 0x03000028u

#define MAX_GPUS 64
#define TEXT_LEN 96

struct fake_device {
    unsigned int index;
};
typedef struct fake_device *nvmlDevice_t;

/* Layouts as in nvml.h; the asserts below pin them to what pynvml's ctypes structs expect. */
typedef struct {
    unsigned char clusterUuid[NVML_GPU_FABRIC_UUID_LEN];
    nvmlReturn_t status;
    unsigned int cliqueId;
    unsigned int state;
} nvmlGpuFabricInfo_t;

typedef struct {
    unsigned int version;
    unsigned char clusterUuid[NVML_GPU_FABRIC_UUID_LEN];
    nvmlReturn_t status;
    unsigned int cliqueId;
    unsigned int state;
    unsigned int healthMask;
    unsigned char healthSummary;
} nvmlGpuFabricInfo_v3_t;

_Static_assert(sizeof(nvmlGpuFabricInfo_t) == 28, "legacy fabric info layout");
_Static_assert(sizeof(nvmlGpuFabricInfo_v3_t) == (NVML_GPU_FABRIC_INFO_V3 & 0xffffffu), "v3 layout");
_Static_assert(offsetof(nvmlGpuFabricInfo_v3_t, healthSummary) == (NVML_GPU_FABRIC_INFO_V2 & 0xffffffu),
               "v2 is v3 without healthSummary");

struct gpu_config {
    char name[TEXT_LEN];
    char uuid[TEXT_LEN];
    int fabric_supported;
    unsigned char cluster_uuid[NVML_GPU_FABRIC_UUID_LEN];
    unsigned int clique_id;
    unsigned int state;
    unsigned int status;
    unsigned int health_mask;
    unsigned int handle_error;
    unsigned int uuid_error;
    unsigned int name_error;
    unsigned int fabric_error;
};

struct node_config {
    unsigned int gpus;
    char driver[TEXT_LEN];
    unsigned int init_error;
    unsigned int count_error;
    int fabric_v;
    unsigned int fabric_v_max;
    struct gpu_config gpu[MAX_GPUS];
};

static struct node_config config;
static struct fake_device devices[MAX_GPUS];
static unsigned int init_count;

static void copy_text(char *dst, const char *src) {
    snprintf(dst, TEXT_LEN, "%s", src);
}

static int parse_uint(const char *text, unsigned int *out) {
    char *end = NULL;
    unsigned long value = strtoul(text, &end, 0);
    if (end == text || *end != '\0' || value > 0xffffffffUL) return -1;
    *out = (unsigned int)value;
    return 0;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    c = (char)tolower((unsigned char)c);
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

static int parse_cluster_uuid(const char *text, unsigned char out[NVML_GPU_FABRIC_UUID_LEN]) {
    if (strcmp(text, "zero") == 0) {
        memset(out, 0, NVML_GPU_FABRIC_UUID_LEN);
        return 0;
    }
    int nibbles = 0;
    for (const char *p = text; *p; p++) {
        if (*p == '-') continue;
        int v = hex_value(*p);
        if (v < 0 || nibbles >= 2 * NVML_GPU_FABRIC_UUID_LEN) return -1;
        if (nibbles % 2 == 0) out[nibbles / 2] = (unsigned char)(v << 4);
        else out[nibbles / 2] |= (unsigned char)v;
        nibbles++;
    }
    return nibbles == 2 * NVML_GPU_FABRIC_UUID_LEN ? 0 : -1;
}

static int parse_state(const char *text, unsigned int *out) {
    static const char *const names[] = {"not_supported", "not_started", "in_progress", "completed"};
    for (unsigned int i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(text, names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    return parse_uint(text, out);
}

/* Applies one per-GPU key; returns 0, -1 for a bad value, -2 for an unknown key. */
static int apply_gpu_key(struct gpu_config *gpu, const char *key, const char *value) {
    if (strcmp(key, "name") == 0) {
        copy_text(gpu->name, value);
        return 0;
    }
    if (strcmp(key, "uuid") == 0) {
        copy_text(gpu->uuid, value);
        return 0;
    }
    if (strcmp(key, "fabric") == 0) {
        if (strcmp(value, "none") == 0) gpu->fabric_supported = 0;
        else if (strcmp(value, "supported") == 0) gpu->fabric_supported = 1;
        else return -1;
        return 0;
    }
    if (strcmp(key, "cluster_uuid") == 0) return parse_cluster_uuid(value, gpu->cluster_uuid);
    if (strcmp(key, "state") == 0) return parse_state(value, &gpu->state);
    if (strcmp(key, "clique_id") == 0) return parse_uint(value, &gpu->clique_id);
    if (strcmp(key, "status") == 0) return parse_uint(value, &gpu->status);
    if (strcmp(key, "health_mask") == 0) return parse_uint(value, &gpu->health_mask);
    if (strcmp(key, "handle_error") == 0) return parse_uint(value, &gpu->handle_error);
    if (strcmp(key, "uuid_error") == 0) return parse_uint(value, &gpu->uuid_error);
    if (strcmp(key, "name_error") == 0) return parse_uint(value, &gpu->name_error);
    if (strcmp(key, "fabric_error") == 0) return parse_uint(value, &gpu->fabric_error);
    return -2;
}

/* Applies one node-wide key; per-GPU keys given node-wide set the defaults in `base`. */
static int apply_node_key(struct gpu_config *base, const char *key, const char *value) {
    if (strcmp(key, "gpus") == 0) {
        if (parse_uint(value, &config.gpus) != 0 || config.gpus > MAX_GPUS) return -1;
        return 0;
    }
    if (strcmp(key, "driver") == 0) {
        copy_text(config.driver, value);
        return 0;
    }
    if (strcmp(key, "init_error") == 0) return parse_uint(value, &config.init_error);
    if (strcmp(key, "count_error") == 0) return parse_uint(value, &config.count_error);
    if (strcmp(key, "fabric_v") == 0) {
        if (strcmp(value, "none") == 0) config.fabric_v = 0;
        else if (strcmp(value, "present") == 0) config.fabric_v = 1;
        else return -1;
        return 0;
    }
    if (strcmp(key, "fabric_v_max") == 0) {
        if (parse_uint(value, &config.fabric_v_max) != 0) return -1;
        return config.fabric_v_max == 2 || config.fabric_v_max == 3 ? 0 : -1;
    }
    return apply_gpu_key(base, key, value);
}

static char *trim(char *text) {
    while (isspace((unsigned char)*text)) text++;
    char *end = text + strlen(text);
    while (end > text && isspace((unsigned char)end[-1])) *--end = '\0';
    return text;
}

/* Splits `line` into key and value in place; returns 0 for a blank or comment line, 1 for a pair. */
static int split_line(char *line, char **key, char **value) {
    char *hash = strchr(line, '#');
    if (hash) *hash = '\0';
    char *text = trim(line);
    if (*text == '\0') return 0;
    char *eq = strchr(text, '=');
    if (!eq) return -1;
    *eq = '\0';
    *key = trim(text);
    *value = trim(eq + 1);
    return 1;
}

static void set_defaults(struct gpu_config *base) {
    memset(&config, 0, sizeof(config));
    config.gpus = 4;
    copy_text(config.driver, "580.82.07");
    config.fabric_v = 1;
    config.fabric_v_max = 3;
    memset(base, 0, sizeof(*base));
    copy_text(base->name, "NVIDIA GB200");
    base->fabric_supported = 1;
    base->clique_id = 32766;
    base->state = NVML_GPU_FABRIC_STATE_COMPLETED;
    parse_cluster_uuid("7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22", base->cluster_uuid);
}

/* Two passes over the file: node-wide keys first, so `gpu.<i>.*` wins wherever it appears. */
static nvmlReturn_t load_config(void) {
    const char *path = getenv("FAKE_NVML_CONFIG");
    if (!path || !*path) {
        fprintf(stderr, "fake NVML: FAKE_NVML_CONFIG is not set\n");
        return NVML_ERROR_DRIVER_NOT_LOADED;
    }
    struct gpu_config base;
    set_defaults(&base);
    char line[512];
    for (int pass = 0; pass < 2; pass++) {
        FILE *file = fopen(path, "r");
        if (!file) {
            fprintf(stderr, "fake NVML: cannot read %s\n", path);
            return NVML_ERROR_DRIVER_NOT_LOADED;
        }
        int line_no = 0;
        while (fgets(line, sizeof(line), file)) {
            line_no++;
            char *key = NULL, *value = NULL;
            int kind = split_line(line, &key, &value);
            if (kind == 0) continue;
            int rc = -1;
            unsigned int index = 0;
            int used = 0;
            int is_gpu = kind > 0 && sscanf(key, "gpu.%u.%n", &index, &used) == 1 && used > 0;
            if (kind < 0) {
                rc = -1;
            } else if (is_gpu) {
                if (pass == 0) continue;
                rc = index < MAX_GPUS ? apply_gpu_key(&config.gpu[index], key + used, value) : -1;
            } else {
                if (pass == 1) continue;
                rc = apply_node_key(&base, key, value);
            }
            if (rc != 0) {
                fprintf(stderr, "fake NVML: %s:%d: %s\n", path, line_no,
                        rc == -2 ? "unknown key" : "bad line or value");
                fclose(file);
                return NVML_ERROR_INVALID_ARGUMENT;
            }
        }
        fclose(file);
        if (pass == 0) {
            for (unsigned int i = 0; i < MAX_GPUS; i++) {
                config.gpu[i] = base;
                if (config.gpu[i].uuid[0] == '\0')
                    snprintf(config.gpu[i].uuid, TEXT_LEN, "GPU-00000000-0000-4000-8000-%012u", i);
                devices[i].index = i;
            }
        }
    }
    return NVML_SUCCESS;
}

static int valid_device(nvmlDevice_t device) {
    return device != NULL && device >= devices && device < devices + config.gpus &&
           (size_t)(device - devices) == device->index;
}

static nvmlReturn_t copy_out(char *dst, unsigned int length, const char *src) {
    if (dst == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(src) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, strlen(src) + 1);
    return NVML_SUCCESS;
}

static void trace_init(void) {
    const char *path = getenv("FAKE_NVML_TRACE");
    if (!path || !*path) return;
    FILE *file = fopen(path, "a");
    if (!file) {
        fprintf(stderr, "fake NVML: cannot append to %s\n", path);
        return;
    }
    fprintf(file, "init %ld\n", (long)getpid());
    fclose(file);
}

EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    trace_init();
    nvmlReturn_t rc = load_config();
    if (rc != NVML_SUCCESS) return rc;
    if (config.init_error != NVML_SUCCESS) return config.init_error;
    init_count++;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlInit_v2(void) {
    return nvmlInitWithFlags(0);
}

EXPORT nvmlReturn_t nvmlInit(void) {
    return nvmlInitWithFlags(0);
}

EXPORT nvmlReturn_t nvmlShutdown(void) {
    if (init_count == 0) return NVML_ERROR_UNINITIALIZED;
    init_count--;
    return NVML_SUCCESS;
}

EXPORT const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument version mismatch";
    default: return "Unknown Error";
    }
}

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    if (init_count == 0) return NVML_ERROR_UNINITIALIZED;
    return copy_out(version, length, config.driver);
}

EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    if (init_count == 0) return NVML_ERROR_UNINITIALIZED;
    if (count == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (config.count_error != NVML_SUCCESS) return config.count_error;
    *count = config.gpus;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) {
    return nvmlDeviceGetCount_v2(count);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (init_count == 0) return NVML_ERROR_UNINITIALIZED;
    if (device == NULL || index >= config.gpus) return NVML_ERROR_INVALID_ARGUMENT;
    if (config.gpu[index].handle_error != NVML_SUCCESS) return config.gpu[index].handle_error;
    *device = &devices[index];
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    if (init_count == 0) return NVML_ERROR_UNINITIALIZED;
    if (!valid_device(device)) return NVML_ERROR_INVALID_ARGUMENT;
    const struct gpu_config *gpu = &config.gpu[device->index];
    if (gpu->uuid_error != NVML_SUCCESS) return gpu->uuid_error;
    return copy_out(uuid, length, gpu->uuid);
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    if (init_count == 0) return NVML_ERROR_UNINITIALIZED;
    if (!valid_device(device)) return NVML_ERROR_INVALID_ARGUMENT;
    const struct gpu_config *gpu = &config.gpu[device->index];
    if (gpu->name_error != NVML_SUCCESS) return gpu->name_error;
    return copy_out(name, length, gpu->name);
}

/* Checks shared by both fabric calls; on success *gpu_out is the GPU's configuration. */
static nvmlReturn_t fabric_gpu(nvmlDevice_t device, const void *info, const struct gpu_config **gpu_out) {
    if (init_count == 0) return NVML_ERROR_UNINITIALIZED;
    if (!valid_device(device) || info == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    const struct gpu_config *gpu = &config.gpu[device->index];
    if (gpu->fabric_error != NVML_SUCCESS) return gpu->fabric_error;
    if (!gpu->fabric_supported) return NVML_ERROR_NOT_SUPPORTED;
    *gpu_out = gpu;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuFabricInfo(nvmlDevice_t device, nvmlGpuFabricInfo_t *info) {
    const struct gpu_config *gpu = NULL;
    nvmlReturn_t rc = fabric_gpu(device, info, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    memcpy(info->clusterUuid, gpu->cluster_uuid, NVML_GPU_FABRIC_UUID_LEN);
    info->status = gpu->status;
    info->cliqueId = gpu->clique_id;
    info->state = gpu->state;
    return NVML_SUCCESS;
}

#ifndef FAKE_NVML_NO_FABRIC_V
/* Takes the v3 layout; a v2 caller's buffer ends before healthSummary, which is then left alone. */
EXPORT nvmlReturn_t nvmlDeviceGetGpuFabricInfoV(nvmlDevice_t device, nvmlGpuFabricInfo_v3_t *info) {
    if (!config.fabric_v) return NVML_ERROR_FUNCTION_NOT_FOUND;
    if (info == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int version = info->version;
    int v3 = version == NVML_GPU_FABRIC_INFO_V3 && config.fabric_v_max >= 3;
    if (!v3 && version != NVML_GPU_FABRIC_INFO_V2) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    const struct gpu_config *gpu = NULL;
    nvmlReturn_t rc = fabric_gpu(device, info, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    memcpy(info->clusterUuid, gpu->cluster_uuid, NVML_GPU_FABRIC_UUID_LEN);
    info->status = gpu->status;
    info->cliqueId = gpu->clique_id;
    info->state = gpu->state;
    info->healthMask = gpu->health_mask;
    if (v3) info->healthSummary = 0;
    return NVML_SUCCESS;
}
#endif
