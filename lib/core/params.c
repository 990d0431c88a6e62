/* SPDX-License-Identifier: MIT */
/* Migration parameters and capabilities by QMP name, table-driven so that a new one is a row. */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include <cpr/params.h>

#include "core/ctx.h"
#include "core/error.h"
#include "core/params.h"
#include "core/parse.h"

void cpr_params_init(struct cpr_params *p)
{
    memset(p, 0, sizeof(*p));
    p->mode = CPR_MODE_NORMAL;
    p->downtime_limit_ms = CPR_DEFAULT_DOWNTIME_LIMIT_MS;
    p->cpr_connect_timeout_ms = CPR_DEFAULT_CPR_CONNECT_TIMEOUT_MS;
    p->multifd_channels = CPR_DEFAULT_MULTIFD_CHANNELS;
    p->multifd_zstd_level = CPR_DEFAULT_MULTIFD_ZSTD_LEVEL;
}

int64_t cpr_params_wait_ms(uint64_t ms)
{
    return ms ? (int64_t)ms : -1;
}

void cpr_params_clear(struct cpr_params *p)
{
    g_free(p->cpr_exec_command);
    g_free(p->tls_creds);
    g_free(p->tls_hostname);
    g_free(p->tls_authz);
    p->cpr_exec_command = p->tls_creds = p->tls_hostname = p->tls_authz = NULL;
}

static void *params_new(void)
{
    struct cpr_params *p = g_new(struct cpr_params, 1);
    cpr_params_init(p);
    return p;
}

static void params_free(void *p)
{
    cpr_params_clear(p);
    g_free(p);
}

/* The context's parameters. Caller holds ctx->lock. */
static struct cpr_params *params_of(cpr_ctx *ctx)
{
    return cpr_ctx_shared_locked(ctx, CPR_SHARED_PARAMS, params_new, params_free);
}

void cpr_params_snapshot(cpr_ctx *ctx, struct cpr_params *out)
{
    g_mutex_lock(&ctx->lock);
    struct cpr_params *p = params_of(ctx);
    *out = *p;
    out->cpr_exec_command = g_strdup(p->cpr_exec_command);
    out->tls_creds = g_strdup(p->tls_creds);
    out->tls_hostname = g_strdup(p->tls_hostname);
    out->tls_authz = g_strdup(p->tls_authz);
    g_mutex_unlock(&ctx->lock);
}

typedef int (*param_set_fn)(struct cpr_params *p, const char *value);
typedef char *(*param_get_fn)(const struct cpr_params *p);

static int set_mode(struct cpr_params *p, const char *v)
{
    return cpr_mode_from_name(v, &p->mode, NULL);
}
static char *get_mode(const struct cpr_params *p)
{
    return g_strdup(cpr_mode_name(p->mode));
}
/* A string parameter, QEMU's way: "" is unset. */
static int set_string(char **field, const char *v)
{
    g_free(*field);
    *field = (v && *v) ? g_strdup(v) : NULL;
    return 0;
}
static int set_exec_command(struct cpr_params *p, const char *v)
{
    return set_string(&p->cpr_exec_command, v);
}
static char *get_exec_command(const struct cpr_params *p)
{
    return g_strdup(p->cpr_exec_command ? p->cpr_exec_command : "");
}
/* The TLS credentials are looked up when a migration starts, not here. */
static int set_tls_creds(struct cpr_params *p, const char *v)
{
#ifndef CPR_HAVE_GNUTLS
    if (v && *v)
        return -ENOTSUP;
#endif
    return set_string(&p->tls_creds, v);
}
static char *get_tls_creds(const struct cpr_params *p)
{
    return g_strdup(p->tls_creds ? p->tls_creds : "");
}
static int set_tls_hostname(struct cpr_params *p, const char *v)
{
    return set_string(&p->tls_hostname, v);
}
static char *get_tls_hostname(const struct cpr_params *p)
{
    return g_strdup(p->tls_hostname ? p->tls_hostname : "");
}
/* Looked up when an incoming migration starts, as the credentials are. */
static int set_tls_authz(struct cpr_params *p, const char *v)
{
    return set_string(&p->tls_authz, v);
}
static char *get_tls_authz(const struct cpr_params *p)
{
    return g_strdup(p->tls_authz ? p->tls_authz : "");
}
static int set_multifd_compression(struct cpr_params *p, const char *v)
{
    if (!strcmp(v, "none"))
        p->multifd_compression = CPR_MULTIFD_COMPRESS_NONE;
    else if (!strcmp(v, "zstd"))
        p->multifd_compression = CPR_MULTIFD_COMPRESS_ZSTD;
    else
        return -EINVAL;
    return 0;
}
static char *get_multifd_compression(const struct cpr_params *p)
{
    return g_strdup(p->multifd_compression == CPR_MULTIFD_COMPRESS_ZSTD ? "zstd" : "none");
}
/* The multifd counts start at 1, where a plain u64 row starts at 0. */
static int set_u64_from_1(uint64_t *field, const char *v, uint64_t max)
{
    uint64_t u;
    int ret = cpr_parse_u64(v, max, &u);
    if (ret == 0 && u == 0)
        return -ERANGE;
    if (ret == 0)
        *field = u;
    return ret;
}
static int set_multifd_channels(struct cpr_params *p, const char *v)
{
    return set_u64_from_1(&p->multifd_channels, v, 255);
}
static char *get_multifd_channels(const struct cpr_params *p)
{
    return g_strdup_printf("%" PRIu64, p->multifd_channels);
}
static int set_multifd_zstd_level(struct cpr_params *p, const char *v)
{
    return set_u64_from_1(&p->multifd_zstd_level, v, 20);
}
static char *get_multifd_zstd_level(const struct cpr_params *p)
{
    return g_strdup_printf("%" PRIu64, p->multifd_zstd_level);
}

/* QMP's booleans arrive as true/false; HMP says on/off. */
static int set_direct_io(struct cpr_params *p, const char *v)
{
    if (!strcmp(v, "true") || !strcmp(v, "on") || !strcmp(v, "1"))
        p->direct_io = 1;
    else if (!strcmp(v, "false") || !strcmp(v, "off") || !strcmp(v, "0"))
        p->direct_io = 0;
    else
        return -EINVAL;
    return 0;
}
static char *get_direct_io(const struct cpr_params *p)
{
    return g_strdup(p->direct_io ? "true" : "false");
}

/* Cloud Hypervisor's memory_restore_mode: copy reads RAM before the guest runs, ondemand after;
 * mapped is Firecracker's File memory backend: the file's RAM mapped copy-on-write. */
static const char *const restore_modes[] = { [CPR_RESTORE_COPY] = "copy", [CPR_RESTORE_ONDEMAND] = "ondemand",
                                             [CPR_RESTORE_MAPPED] = "mapped" };

static int set_memory_restore_mode(struct cpr_params *p, const char *v)
{
    for (size_t i = 0; i < G_N_ELEMENTS(restore_modes); i++)
        if (!strcmp(v, restore_modes[i])) {
            p->memory_restore_mode = (int)i;
            return 0;
        }
    return -EINVAL;
}
static char *get_memory_restore_mode(const struct cpr_params *p)
{
    return g_strdup(restore_modes[p->memory_restore_mode]);
}

/* A parameter is a u64 member with a maximum (set and get NULL), or a pair of functions. */
static const struct param_def {
    const char *name;
    const char *expect; /* for error messages */
    param_set_fn set;
    param_get_fn get;
    size_t u64_offset;
    uint64_t u64_max;
} params[] = {
    { "mode", "normal, cpr-reboot, cpr-transfer or cpr-exec", set_mode, get_mode, 0, 0 },
    /* QEMU caps downtime-limit at 2000 s. */
    { "downtime-limit", "milliseconds, 0 to 2000000", NULL, NULL,
      offsetof(struct cpr_params, downtime_limit_ms), 2000000 },
    { "max-bandwidth", "bytes per second, 0 for unlimited", NULL, NULL,
      offsetof(struct cpr_params, max_bandwidth), INT64_MAX },
    /* QEMU's: the source's rate after the switch to postcopy (the page server). */
    { "max-postcopy-bandwidth", "bytes per second, 0 for unlimited", NULL, NULL,
      offsetof(struct cpr_params, max_postcopy_bandwidth), INT64_MAX },
    { "cpr-exec-command", "a command line", set_exec_command, get_exec_command, 0, 0 },
    /* The cpr-transfer waits: up to a day (in microseconds still far inside int64). */
    { "cpr-transfer-connect-timeout", "milliseconds, 0 to 86400000 (0: do not wait)", NULL, NULL,
      offsetof(struct cpr_params, cpr_connect_timeout_ms), 86400000 },
    { "cpr-transfer-accept-timeout", "milliseconds, 0 to 86400000 (0: wait forever)", NULL, NULL,
      offsetof(struct cpr_params, cpr_accept_timeout_ms), 86400000 },
    { "tls-creds", "the id of TLS credentials, or \"\" for none", set_tls_creds, get_tls_creds, 0, 0 },
    { "tls-hostname", "a host name or IP address, or \"\"", set_tls_hostname, get_tls_hostname, 0, 0 },
    { "tls-authz", "the id of an authorization object, or \"\" for none", set_tls_authz, get_tls_authz, 0, 0 },
    /* QEMU takes 1 to 255 channels and zstd levels 1 to 20. */
    { "multifd-channels", "a number of channels, 1 to 255", set_multifd_channels, get_multifd_channels, 0, 0 },
    { "multifd-compression", "none or zstd", set_multifd_compression, get_multifd_compression, 0, 0 },
    { "multifd-zstd-level", "a zstd level, 1 to 20", set_multifd_zstd_level, get_multifd_zstd_level, 0, 0 },
    { "direct-io", "true or false", set_direct_io, get_direct_io, 0, 0 },
    { "memory-restore-mode", "copy, ondemand or mapped", set_memory_restore_mode, get_memory_restore_mode, 0, 0 },
};

static uint64_t *u64_field(const struct param_def *def, struct cpr_params *p)
{
    return (uint64_t *)(void *)((char *)p + def->u64_offset);
}

static int param_set_value(const struct param_def *def, struct cpr_params *p, const char *v)
{
    if (def->set)
        return def->set(p, v);
    return cpr_parse_u64(v, def->u64_max, u64_field(def, p));
}

static char *param_get_value(const struct param_def *def, const struct cpr_params *p)
{
    if (def->get)
        return def->get(p);
    uint64_t v;
    memcpy(&v, (const char *)p + def->u64_offset, sizeof(v));
    return g_strdup_printf("%" PRIu64, v);
}

static const char *const caps[] = { "x-ignore-shared", "pause-before-switchover", "multifd", "mapped-ram",
                                    "postcopy-ram" };

static const struct param_def *find_param(const char *name)
{
    for (size_t i = 0; i < G_N_ELEMENTS(params); i++)
        if (name && strcmp(params[i].name, name) == 0)
            return &params[i];
    return NULL;
}

static int *cap_field(struct cpr_params *p, const char *name)
{
    if (name && strcmp(name, caps[0]) == 0)
        return &p->x_ignore_shared;
    if (name && strcmp(name, caps[1]) == 0)
        return &p->pause_before_switchover;
    if (name && strcmp(name, caps[2]) == 0)
        return &p->multifd;
    if (name && strcmp(name, caps[3]) == 0)
        return &p->mapped_ram;
    if (name && strcmp(name, caps[4]) == 0)
        return &p->postcopy_ram;
    return NULL;
}

CPR_API int cpr_param_set(cpr_ctx *ctx, const char *name, const char *value, cpr_error **errp)
{
    if (!ctx)
        return cpr_error_set(errp, -EINVAL, "cpr_param_set: ctx is NULL");
    const struct param_def *def = find_param(name);
    if (!def)
        return cpr_error_set(errp, -ENOENT, "unknown migration parameter '%s'", name ? name : "(null)");
    if (!value)
        return cpr_error_set(errp, -EINVAL, "parameter '%s': value is NULL", def->name);
    g_mutex_lock(&ctx->lock);
    if (ctx->migration_active) {
        g_mutex_unlock(&ctx->lock);
        return cpr_error_set(errp, -EBUSY, "parameter '%s' cannot change while a migration is under way",
                             def->name);
    }
    /* Validate on a copy so a bad value leaves the old one in place. */
    struct cpr_params tmp = *params_of(ctx);
    int ret = param_set_value(def, &tmp, value);
    if (ret == 0)
        *params_of(ctx) = tmp;
    g_mutex_unlock(&ctx->lock);
    if (ret == -ENOTSUP)
        return cpr_error_set(errp, ret, "parameter '%s': libcpr was built without TLS (GnuTLS)", def->name);
    if (ret < 0)
        return cpr_error_set(errp, -EINVAL, "invalid value '%s' for parameter '%s' (expected %s)",
                             value, def->name, def->expect);
    return 0;
}

CPR_API int cpr_param_get(cpr_ctx *ctx, const char *name, char **out, cpr_error **errp)
{
    if (!ctx || !out)
        return cpr_error_set(errp, -EINVAL, "cpr_param_get: %s is NULL", ctx ? "out" : "ctx");
    const struct param_def *def = find_param(name);
    if (!def)
        return cpr_error_set(errp, -ENOENT, "unknown migration parameter '%s'", name ? name : "(null)");
    g_mutex_lock(&ctx->lock);
    *out = param_get_value(def, params_of(ctx));
    g_mutex_unlock(&ctx->lock);
    return 0;
}

CPR_API int cpr_param_foreach(cpr_name_fn fn, void *opaque)
{
    if (!fn)
        return -EINVAL;
    for (size_t i = 0; i < G_N_ELEMENTS(params); i++) {
        int r = fn(params[i].name, opaque);
        if (r)
            return r;
    }
    return 0;
}

CPR_API int cpr_cap_set(cpr_ctx *ctx, const char *name, int on, cpr_error **errp)
{
    if (!ctx)
        return cpr_error_set(errp, -EINVAL, "cpr_cap_set: ctx is NULL");
    g_mutex_lock(&ctx->lock);
    int *field = cap_field(params_of(ctx), name);
    int ret = 0;
    if (!field)
        ret = -ENOENT;
    else if (ctx->migration_active)
        ret = -EBUSY;
    else
        *field = !!on;
    g_mutex_unlock(&ctx->lock);
    if (ret == -ENOENT)
        return cpr_error_set(errp, ret, "unknown migration capability '%s'", name ? name : "(null)");
    if (ret == -EBUSY)
        return cpr_error_set(errp, ret, "capability '%s' cannot change while a migration is under way", name);
    return 0;
}

CPR_API int cpr_cap_get(cpr_ctx *ctx, const char *name, cpr_error **errp)
{
    if (!ctx)
        return cpr_error_set(errp, -EINVAL, "cpr_cap_get: ctx is NULL");
    g_mutex_lock(&ctx->lock);
    int *field = cap_field(params_of(ctx), name);
    int ret = field ? *field : -ENOENT;
    g_mutex_unlock(&ctx->lock);
    if (ret < 0)
        return cpr_error_set(errp, ret, "unknown migration capability '%s'", name ? name : "(null)");
    return ret;
}

CPR_API int cpr_cap_foreach(cpr_name_fn fn, void *opaque)
{
    if (!fn)
        return -EINVAL;
    for (size_t i = 0; i < G_N_ELEMENTS(caps); i++) {
        int r = fn(caps[i], opaque);
        if (r)
            return r;
    }
    return 0;
}

CPR_API int cpr_set_mode(cpr_ctx *ctx, cpr_mode mode, cpr_error **errp)
{
    const char *name = cpr_mode_name(mode);
    if (!name)
        return cpr_error_set(errp, -EINVAL, "cpr_set_mode: unknown mode %d", (int)mode);
    return cpr_param_set(ctx, "mode", name, errp);
}

CPR_API cpr_mode cpr_get_mode(cpr_ctx *ctx)
{
    if (!ctx)
        return CPR_MODE_NORMAL;
    g_mutex_lock(&ctx->lock);
    cpr_mode m = params_of(ctx)->mode;
    g_mutex_unlock(&ctx->lock);
    return m;
}
