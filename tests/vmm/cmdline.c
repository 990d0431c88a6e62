/* SPDX-License-Identifier: MIT */
/* Command-line parsing in QEMU's spelling: -opt VALUE with VALUE a comma-separated key=value list. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmdline.h"

static const char usage[] =
    "usage: cpr-vmm [options]\n"
    "  -m SIZE                      guest RAM (bare number: MiB), default 128M\n"
    "  -smp N                       number of vCPUs, default 1\n"
    "  -object memory-backend-memfd,id=ID,size=SIZE[,share=on]\n"
    "  -object memory-backend-file,id=ID,size=SIZE,mem-path=PATH[,share=on]\n"
    "  -object tls-creds-x509,id=ID,dir=DIR,endpoint=client|server[,verify-peer=on|off]\n"
    "  -object authz-simple,id=ID,identity=NAME   the one certificate name (DN, commas doubled)\n"
    "                               a destination admits with tls-authz=ID\n"
    "                               TLS credentials the migration parameter tls-creds names\n"
    "  -machine [TYPE][,memory-backend=ID][,aux-ram-share=on]\n"
    "                               TYPE: the guest-visible state of a release, so that an older\n"
    "                               cpr-vmm can take the guest: cpr-vmm-1.2 (alias cpr-vmm, the\n"
    "                               default), cpr-vmm-1.1, cpr-vmm-1.0; -machine help lists them.\n"
    "                               Incoming without TYPE: the guest's own type is kept\n"
    "  -accel kvm|soft              default: kvm when /dev/kvm works, else soft\n"
    "  -monitor stdio               HMP on stdin/stdout\n"
    "  -qmp unix:PATH,server=on,wait=off\n"
    "  -incoming defer|URI|JSON     repeatable: a main and a cpr channel\n"
    "  -restore source_url=file://PATH[,memory_restore_mode=copy|ondemand|mapped]\n"
    "                               Cloud Hypervisor's restore: -incoming file:PATH; ondemand\n"
    "                               starts the guest before its RAM is read (a mapped-ram file);\n"
    "                               mapped maps the file's RAM copy-on-write (as Firecracker)\n"
    "  -global migration.NAME=VALUE a migration parameter or capability (on/off) set at start-up,\n"
    "                               before -incoming's cpr channel is read; repeatable\n"
    "  -serial file:PATH|stdio|null\n"
    "  -drive file=PATH             a local disk (blocks normal migration only)\n"
    "  -name NAME  -S  -nodefaults  -display none\n"
    "  -guest-dirty-rate PAGES_PER_S   pages the guest rewrites per second (machine default)\n"
    "  -guest-compress PERCENT      share of each data page's words that are one value (0..100,\n"
    "                               default 0: incompressible); a boot only, machine cpr-vmm-1.2\n"
    "  -x-hbmon-version 1|2         write the hbmon section as that version (tests)\n"
    "  -x-affinity vcpus=CPUS[,emulator=CPUS]   host CPUs for the vCPU threads and for all other\n"
    "                               threads; CPUS is N or N-M, a key may repeat (vcpus=1,vcpus=3)\n";

/* One key=value pair of an option argument. */
typedef struct kv {
    char *key;
    char *val;
} kv;

/*
 * Splits "a,b=c,d=e" into pairs. The first element may lack '=' and then gets key
 * `implied` (QEMU's implied option name); later ones must have '='. ",," is a literal comma.
 */
static GArray *split_kv(const char *arg, const char *implied)
{
    GArray *out = g_array_new(FALSE, TRUE, sizeof(kv));
    GString *cur = g_string_new(NULL);
    size_t n = strlen(arg);
    for (size_t i = 0; i <= n; i++) {
        if (i < n && arg[i] == ',' && arg[i + 1] == ',') {
            g_string_append_c(cur, ',');
            i++;
            continue;
        }
        if (i < n && arg[i] != ',') {
            g_string_append_c(cur, arg[i]);
            continue;
        }
        char *eq = strchr(cur->str, '=');
        kv e;
        if (eq) {
            e.key = g_strndup(cur->str, (size_t)(eq - cur->str));
            e.val = g_strdup(eq + 1);
        } else if (out->len == 0 && implied) {
            e.key = g_strdup(implied);
            e.val = g_strdup(cur->str);
        } else if (cur->len) {
            /* QEMU's shorthand: "server" means server=on, "nowait" wait=off. */
            if (g_str_has_prefix(cur->str, "no")) {
                e.key = g_strdup(cur->str + 2);
                e.val = g_strdup("off");
            } else {
                e.key = g_strdup(cur->str);
                e.val = g_strdup("on");
            }
        } else {
            g_string_truncate(cur, 0);
            continue;
        }
        g_array_append_val(out, e);
        g_string_truncate(cur, 0);
    }
    g_string_free(cur, TRUE);
    return out;
}

static void free_kv(GArray *a)
{
    for (guint i = 0; i < a->len; i++) {
        g_free(g_array_index(a, kv, i).key);
        g_free(g_array_index(a, kv, i).val);
    }
    g_array_free(a, TRUE);
}

void vmm_kv_foreach(const char *arg, const char *implied, void (*fn)(const char *key, const char *val, void *opaque),
                    void *opaque)
{
    GArray *a = split_kv(arg, implied);
    for (guint i = 0; i < a->len; i++)
        fn(g_array_index(a, kv, i).key, g_array_index(a, kv, i).val, opaque);
    free_kv(a);
}

static int parse_bool(const char *v, int *out)
{
    if (!strcmp(v, "on") || !strcmp(v, "yes") || !strcmp(v, "true")) {
        *out = 1;
        return 0;
    }
    if (!strcmp(v, "off") || !strcmp(v, "no") || !strcmp(v, "false")) {
        *out = 0;
        return 0;
    }
    return -1;
}

int vmm_parse_size(const char *s, uint64_t unit, uint64_t *out)
{
    if (!s || !g_ascii_isdigit(*s))
        return -EINVAL;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || v < 0)
        return -EINVAL;
    uint64_t mul = unit;
    switch (g_ascii_toupper(*end)) {
    case 0: break;
    case 'B': mul = 1; break;
    case 'K': mul = 1ull << 10; break;
    case 'M': mul = 1ull << 20; break;
    case 'G': mul = 1ull << 30; break;
    case 'T': mul = 1ull << 40; break;
    default: return -EINVAL;
    }
    if (*end && end[1] && !(g_ascii_toupper(end[1]) == 'B' && !end[2]) &&
        !(g_ascii_toupper(end[1]) == 'I' && g_ascii_toupper(end[2]) == 'B' && !end[3]))
        return -EINVAL;
    double bytes = v * (double)mul;
    if (bytes >= 18446744073709551616.0)
        return -ERANGE;
    *out = (uint64_t)bytes;
    return 0;
}

static void memdev_free(gpointer p)
{
    vmm_memdev *m = p;
    g_free(m->id);
    g_free(m->mem_path);
    g_free(m);
}

#define FAIL(...)                                  \
    do {                                           \
        *err = g_strdup_printf(__VA_ARGS__);       \
        goto out;                                  \
    } while (0)

vmm_tls_obj *vmm_tls_obj_new(const char *type)
{
    int authz = !strcmp(type, "authz-simple");
    if (!authz && strcmp(type, "tls-creds-x509"))
        return NULL;
    vmm_tls_obj *o = g_new0(vmm_tls_obj, 1);
    o->authz = authz;
    o->verify_peer = 1;
    return o;
}

void vmm_tls_obj_free(void *p)
{
    vmm_tls_obj *o = p;
    if (!o)
        return;
    g_free(o->id);
    g_free(o->dir);
    g_free(o->identity);
    g_free(o);
}

/* The string property `key` of `o`, NULL when it has none of that name. */
static char **string_prop(vmm_tls_obj *o, const char *key)
{
    if (!strcmp(key, "id"))
        return &o->id;
    if (!strcmp(key, o->authz ? "identity" : "dir"))
        return o->authz ? &o->identity : &o->dir;
    return NULL;
}

int vmm_tls_obj_set(vmm_tls_obj *o, const char *key, const char *val, char **err)
{
    char **field = string_prop(o, key);
    if (field) {
        g_free(*field);
        *field = g_strdup(val);
    } else if (o->authz) {
        *err = g_strdup_printf("authz-simple: unknown property '%s' (id, identity)", key);
        return -1;
    } else if (!strcmp(key, "endpoint")) {
        if (strcmp(val, "client") && strcmp(val, "server")) {
            *err = g_strdup_printf("tls-creds-x509: endpoint wants client or server, not '%s'", val);
            return -1;
        }
        o->server = !strcmp(val, "server");
    } else if (!strcmp(key, "verify-peer")) {
        if (parse_bool(val, &o->verify_peer) < 0) {
            *err = g_strdup_printf("tls-creds-x509: verify-peer wants on or off, not '%s'", val);
            return -1;
        }
    } else {
        *err = g_strdup_printf("tls-creds-x509: unknown property '%s' (id, dir, endpoint, verify-peer)", key);
        return -1;
    }
    return 0;
}

int vmm_tls_obj_check(const vmm_tls_obj *o, char **err)
{
    const char *other = o->authz ? o->identity : o->dir;
    if (!o->id || !other) {
        *err = g_strdup_printf("%s: parameter '%s' is missing", o->authz ? "authz-simple" : "tls-creds-x509",
                               o->id ? (o->authz ? "identity" : "dir") : "id");
        return -1;
    }
    return 0;
}

static int opt_tls_object(vmm_config *cfg, GArray *a, const char *type, char **err)
{
    vmm_tls_obj *o = vmm_tls_obj_new(type);
    for (guint i = 1; i < a->len; i++) {
        kv *e = &g_array_index(a, kv, i);
        if (vmm_tls_obj_set(o, e->key, e->val, err) < 0) {
            vmm_tls_obj_free(o);
            return -1;
        }
    }
    if (vmm_tls_obj_check(o, err) < 0) {
        vmm_tls_obj_free(o);
        return -1;
    }
    g_ptr_array_add(cfg->tls_objs, o);
    return 0;
}

static int opt_object(vmm_config *cfg, const char *arg, char **err)
{
    int ret = -1;
    GArray *a = split_kv(arg, "qom-type");
    vmm_memdev *m = g_new0(vmm_memdev, 1);
    const char *type = a->len ? g_array_index(a, kv, 0).val : "";
    if (!strcmp(type, "tls-creds-x509") || !strcmp(type, "authz-simple")) {
        ret = opt_tls_object(cfg, a, type, err);
        goto out;
    }
    if (!strcmp(type, "memory-backend-file"))
        m->is_file = 1;
    else if (strcmp(type, "memory-backend-memfd"))
        FAIL("-object %s: unsupported object type '%s' (memory-backend-memfd, memory-backend-file, "
             "tls-creds-x509 or authz-simple)",
             arg, type);
    /* QEMU's defaults: a memfd is shared unless told otherwise, a file is not. */
    m->share = !m->is_file;
    for (guint i = 1; i < a->len; i++) {
        kv *e = &g_array_index(a, kv, i);
        if (!strcmp(e->key, "id")) {
            g_free(m->id);
            m->id = g_strdup(e->val);
        } else if (!strcmp(e->key, "size")) {
            if (vmm_parse_size(e->val, 1, &m->size) < 0 || !m->size)
                FAIL("-object %s: invalid size '%s'", arg, e->val);
        } else if (!strcmp(e->key, "share")) {
            if (parse_bool(e->val, &m->share) < 0)
                FAIL("-object %s: share wants on or off, not '%s'", arg, e->val);
        } else if (!strcmp(e->key, "mem-path") && m->is_file) {
            g_free(m->mem_path);
            m->mem_path = g_strdup(e->val);
        } else if (!strcmp(e->key, "prealloc") || !strcmp(e->key, "hugetlb") ||
                   !strcmp(e->key, "seal")) {
            /* accepted and ignored: they do not change what the guest sees */
        } else {
            FAIL("-object %s: unknown property '%s' for %s", arg, e->key, type);
        }
    }
    if (!m->id)
        FAIL("-object %s: parameter 'id' is missing", arg);
    if (!m->size)
        FAIL("-object %s: parameter 'size' is missing", arg);
    if (m->is_file && !m->mem_path)
        FAIL("-object %s: parameter 'mem-path' is missing", arg);
    if (m->is_file && !m->share)
        FAIL("-object %s: a private file mapping is not supported: add share=on", arg);
    for (guint i = 0; i < cfg->memdevs->len; i++)
        if (!strcmp(((vmm_memdev *)cfg->memdevs->pdata[i])->id, m->id))
            FAIL("-object %s: duplicate id '%s'", arg, m->id);
    g_ptr_array_add(cfg->memdevs, m);
    m = NULL;
    ret = 0;
out:
    if (m)
        memdev_free(m);
    free_kv(a);
    return ret;
}

static int opt_machine(vmm_config *cfg, const char *arg, char **err)
{
    int ret = -1;
    GArray *a = split_kv(arg, "type");
    for (guint i = 0; i < a->len; i++) {
        kv *e = &g_array_index(a, kv, i);
        if (!strcmp(e->key, "memory-backend")) {
            g_free(cfg->machine_memdev);
            cfg->machine_memdev = g_strdup(e->val);
        } else if (!strcmp(e->key, "aux-ram-share")) {
            if (parse_bool(e->val, &cfg->aux_ram_share) < 0)
                FAIL("-machine %s: aux-ram-share wants on or off, not '%s'", arg, e->val);
        } else if (!strcmp(e->key, "accel")) {
            if (!strcmp(e->val, "kvm"))
                cfg->accel = CFG_ACCEL_KVM;
            else if (!strcmp(e->val, "soft") || !strcmp(e->val, "tcg"))
                cfg->accel = CFG_ACCEL_SOFT;
            else
                FAIL("-machine %s: unknown accelerator '%s'", arg, e->val);
        } else if (!strcmp(e->key, "type")) {
            const vmm_machine_type *t = vmm_machine_type_find(e->val);
            if (!t) {
                char *list = vmm_machine_types_describe();
                *err = g_strdup_printf("-machine %s: unknown machine type '%s'; the types are:\n%s", arg,
                                       e->val, g_strchomp(list));
                g_free(list);
                goto out;
            }
            cfg->machine_type = t;
            cfg->machine_type_given = 1;
        } else {
            FAIL("-machine %s: unknown property '%s'", arg, e->key);
        }
    }
    ret = 0;
out:
    free_kv(a);
    return ret;
}

static int opt_qmp(vmm_config *cfg, const char *arg, char **err)
{
    int ret = -1;
    GArray *a = split_kv(arg, "path");
    const char *path = a->len ? g_array_index(a, kv, 0).val : "";
    if (!g_str_has_prefix(path, "unix:") || !path[5])
        FAIL("-qmp %s: only unix:PATH,server=on,wait=off is supported", arg);
    for (guint i = 1; i < a->len; i++) {
        kv *e = &g_array_index(a, kv, i);
        int b;
        if (parse_bool(e->val, &b) < 0)
            FAIL("-qmp %s: %s wants on or off, not '%s'", arg, e->key, e->val);
        if (!strcmp(e->key, "server")) {
            if (!b)
                FAIL("-qmp %s: only server=on is supported", arg);
        } else if (!strcmp(e->key, "wait")) {
            if (b)
                FAIL("-qmp %s: only wait=off is supported", arg);
        } else {
            FAIL("-qmp %s: unknown property '%s'", arg, e->key);
        }
    }
    g_free(cfg->qmp_path);
    cfg->qmp_path = g_strdup(path + 5);
    ret = 0;
out:
    free_kv(a);
    return ret;
}

static int opt_drive(vmm_config *cfg, const char *arg, char **err)
{
    int ret = -1;
    char *file = NULL;
    GArray *a = split_kv(arg, "file");
    for (guint i = 0; i < a->len; i++) {
        kv *e = &g_array_index(a, kv, i);
        if (!strcmp(e->key, "file")) {
            g_free(file);
            file = g_strdup(e->val);
        } else if (strcmp(e->key, "if") && strcmp(e->key, "format") && strcmp(e->key, "id") &&
                   strcmp(e->key, "cache") && strcmp(e->key, "media")) {
            FAIL("-drive %s: unknown property '%s'", arg, e->key);
        }
    }
    if (!file || !*file)
        FAIL("-drive %s: parameter 'file' is missing", arg);
    g_ptr_array_add(cfg->drives, file);
    file = NULL;
    ret = 0;
out:
    g_free(file);
    free_kv(a);
    return ret;
}

static int opt_serial(vmm_config *cfg, const char *arg, char **err)
{
    if (!strcmp(arg, "stdio")) {
        cfg->serial = VMM_SERIAL_STDIO;
    } else if (!strcmp(arg, "null") || !strcmp(arg, "none")) {
        cfg->serial = VMM_SERIAL_NONE;
    } else if (g_str_has_prefix(arg, "file:") && arg[5]) {
        cfg->serial = VMM_SERIAL_FILE;
        g_free(cfg->serial_path);
        cfg->serial_path = g_strdup(arg + 5);
    } else {
        *err = g_strdup_printf("-serial %s: only file:PATH, stdio and null are supported", arg);
        return -1;
    }
    return 0;
}

static int opt_m(vmm_config *cfg, const char *arg, char **err)
{
    const char *v = g_str_has_prefix(arg, "size=") ? arg + 5 : arg;
    if (vmm_parse_size(v, 1ull << 20, &cfg->ram_size) < 0 || cfg->ram_size < (1ull << 20)) {
        *err = g_strdup_printf("-m %s: invalid RAM size (at least 1M)", arg);
        return -1;
    }
    return 0;
}

static int opt_smp(vmm_config *cfg, const char *arg, char **err)
{
    const char *v = g_str_has_prefix(arg, "cpus=") ? arg + 5 : arg;
    char *end;
    long n = strtol(v, &end, 10);
    if ((*end && *end != ',') || n < 1 || n > 64) {
        *err = g_strdup_printf("-smp %s: invalid number of CPUs (1..64)", arg);
        return -1;
    }
    cfg->smp = (int)n;
    return 0;
}

static int opt_accel(vmm_config *cfg, const char *arg, char **err)
{
    const char *v = g_str_has_prefix(arg, "accel=") ? arg + 6 : arg;
    if (!strcmp(v, "kvm"))
        cfg->accel = CFG_ACCEL_KVM;
    else if (!strcmp(v, "soft") || !strcmp(v, "tcg"))
        cfg->accel = CFG_ACCEL_SOFT;
    else {
        *err = g_strdup_printf("-accel %s: unknown accelerator (kvm or soft)", arg);
        return -1;
    }
    return 0;
}

static int opt_dirty_rate(vmm_config *cfg, const char *arg, char **err)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(arg, &end, 10);
    if (errno || *end || !g_ascii_isdigit(*arg)) {
        *err = g_strdup_printf("-guest-dirty-rate %s: want a number of pages per second", arg);
        return -1;
    }
    cfg->dirty_rate = v;
    cfg->dirty_rate_given = 1;
    return 0;
}

static int opt_compress(vmm_config *cfg, const char *arg, char **err)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(arg, &end, 10);
    if (errno || *end || !g_ascii_isdigit(*arg) || v > 100) {
        *err = g_strdup_printf("-guest-compress %s: want a percentage, 0..100", arg);
        return -1;
    }
    cfg->compress_pct = (uint32_t)v;
    return 0;
}

static int opt_hbmon_version(vmm_config *cfg, const char *arg, char **err)
{
    if (strcmp(arg, "1") && strcmp(arg, "2")) {
        *err = g_strdup_printf("-x-hbmon-version %s: 1 or 2", arg);
        return -1;
    }
    cfg->hbmon_version = (uint32_t)(arg[0] - '0');
    return 0;
}

/* "N" or "N-M" into bits of *mask (CPUs 0..63). */
static int parse_cpu_range(const char *v, uint64_t *mask)
{
    char *end;
    errno = 0;
    unsigned long a = strtoul(v, &end, 10), b = a;
    if (errno || end == v || !g_ascii_isdigit(*v))
        return -1;
    if (*end == '-') {
        const char *w = end + 1;
        b = strtoul(w, &end, 10);
        if (errno || end == w || !g_ascii_isdigit(*w))
            return -1;
    }
    if (*end || a > b || b > 63)
        return -1;
    for (unsigned long c = a; c <= b; c++)
        *mask |= 1ull << c;
    return 0;
}

static int opt_affinity(vmm_config *cfg, const char *arg, char **err)
{
    int ret = -1;
    uint64_t vcpus = 0, emulator = 0;
    GArray *a = split_kv(arg, "vcpus");
    for (guint i = 0; i < a->len; i++) {
        kv *e = &g_array_index(a, kv, i);
        uint64_t *m = !strcmp(e->key, "vcpus") ? &vcpus : !strcmp(e->key, "emulator") ? &emulator : NULL;
        if (!m)
            FAIL("-x-affinity %s: unknown property '%s' (vcpus or emulator)", arg, e->key);
        if (parse_cpu_range(e->val, m) < 0)
            FAIL("-x-affinity %s: %s wants a host CPU N or a range N-M (0..63), not '%s'", arg, e->key, e->val);
    }
    if (!vcpus)
        FAIL("-x-affinity %s: parameter 'vcpus' is missing", arg);
    cfg->vcpu_cpus = vcpus;
    cfg->emulator_cpus = emulator;
    ret = 0;
out:
    free_kv(a);
    return ret;
}

static int opt_incoming(vmm_config *cfg, const char *arg, char **err)
{
    if (!*arg) {
        *err = g_strdup("-incoming: empty argument");
        return -1;
    }
    g_ptr_array_add(cfg->incoming, g_strdup(arg));
    return 0;
}

/* -restore, in Cloud Hypervisor's spelling: the same as -incoming file:PATH plus
 * -global migration.memory-restore-mode=MODE. */
static int opt_restore(vmm_config *cfg, const char *arg, char **err)
{
    GArray *a = split_kv(arg, "source_url");
    const char *url = NULL, *mode = "copy";
    int ret = -1;
    for (guint i = 0; i < a->len; i++) {
        kv *e = &g_array_index(a, kv, i);
        if (!strcmp(e->key, "source_url")) {
            url = e->val;
        } else if (!strcmp(e->key, "memory_restore_mode")) {
            mode = e->val;
        } else {
            *err = g_strdup_printf("-restore: unknown key '%s' (source_url, memory_restore_mode)", e->key);
            goto out;
        }
    }
    if (!url || !g_str_has_prefix(url, "file://") || !url[7]) {
        *err = g_strdup_printf("-restore %s: source_url=file://PATH is required", arg);
        goto out;
    }
    if (strcmp(mode, "copy") && strcmp(mode, "ondemand") && strcmp(mode, "mapped")) {
        *err = g_strdup_printf("-restore: memory_restore_mode=%s: copy, ondemand or mapped", mode);
        goto out;
    }
    g_ptr_array_add(cfg->incoming, g_strdup_printf("file:%s", url + 7));
    g_ptr_array_add(cfg->globals, g_strdup_printf("memory-restore-mode=%s", mode));
    cfg->restore = 1;
    ret = 0;
out:
    free_kv(a);
    return ret;
}

/* -global migration.NAME=VALUE: only the migration object exists; the name is checked when
 * it is applied (the library knows its parameters). */
static int opt_global(vmm_config *cfg, const char *arg, char **err)
{
    const char *prop = g_str_has_prefix(arg, "migration.") ? arg + strlen("migration.") : NULL;
    const char *eq = prop ? strchr(prop, '=') : NULL;
    if (!prop) {
        *err = g_strdup_printf("-global %s: only migration.NAME=VALUE is supported", arg);
        return -1;
    }
    if (!eq || eq == prop) {
        *err = g_strdup_printf("-global %s: expected migration.NAME=VALUE", arg);
        return -1;
    }
    g_ptr_array_add(cfg->globals, g_strdup(prop));
    return 0;
}

static int opt_monitor(vmm_config *cfg, const char *arg, char **err)
{
    if (strcmp(arg, "stdio") && strcmp(arg, "none")) {
        *err = g_strdup_printf("-monitor %s: only stdio and none are supported", arg);
        return -1;
    }
    cfg->monitor_stdio = !strcmp(arg, "stdio");
    return 0;
}

static int opt_display(vmm_config *cfg, const char *arg, char **err)
{
    if (strcmp(arg, "none")) {
        *err = g_strdup_printf("-display %s: only none is supported (there is no display)", arg);
        return -1;
    }
    return 0;
}

static int opt_name(vmm_config *cfg, const char *arg, char **err)
{
    const char *v = g_str_has_prefix(arg, "guest=") ? arg + 6 : arg;
    g_free(cfg->name);
    cfg->name = g_strdup(v);
    return 0;
}

typedef int (*opt_fn)(vmm_config *cfg, const char *arg, char **err);

static const struct option_def {
    const char *name;
    opt_fn fn; /* NULL: a flag without argument */
} options[] = {
    {"m", opt_m},
    {"smp", opt_smp},
    {"object", opt_object},
    {"machine", opt_machine},
    {"M", opt_machine},
    {"accel", opt_accel},
    {"monitor", opt_monitor},
    {"qmp", opt_qmp},
    {"incoming", opt_incoming},
    {"global", opt_global},
    {"restore", opt_restore},
    {"serial", opt_serial},
    {"drive", opt_drive},
    {"display", opt_display},
    {"name", opt_name},
    {"guest-dirty-rate", opt_dirty_rate},
    {"guest-compress", opt_compress},
    {"x-hbmon-version", opt_hbmon_version},
    {"x-affinity", opt_affinity},
    {"nodefaults", NULL},
    {"S", NULL},
    {"enable-kvm", NULL},
    {"nographic", NULL},
    {"help", NULL},
    {"h", NULL},
    {"version", NULL},
};

int vmm_cmdline_parse(int argc, char **argv, vmm_config *cfg, int *exit_now, char **err)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->smp = 1;
    cfg->machine_type = vmm_machine_type_newest();
    cfg->memdevs = g_ptr_array_new_with_free_func(memdev_free);
    cfg->tls_objs = g_ptr_array_new_with_free_func(vmm_tls_obj_free);
    cfg->incoming = g_ptr_array_new_with_free_func(g_free);
    cfg->globals = g_ptr_array_new_with_free_func(g_free);
    cfg->drives = g_ptr_array_new_with_free_func(g_free);
    cfg->serial = VMM_SERIAL_STDIO;
    cfg->argv = g_new0(char *, (size_t)argc + 1);
    for (int i = 0; i < argc; i++)
        cfg->argv[i] = g_strdup(argv[i]);
    *exit_now = 0;
    int serial_given = 0, nodefaults = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || !a[1]) {
            *err = g_strdup_printf("unexpected argument '%s' (options start with '-'; try -help)", a);
            return -1;
        }
        const char *name = a + 1 + (a[1] == '-');
        const struct option_def *d = NULL;
        for (size_t k = 0; k < G_N_ELEMENTS(options); k++)
            if (!strcmp(options[k].name, name))
                d = &options[k];
        if (!d) {
            *err = g_strdup_printf("unknown option '%s' (try -help)", a);
            return -1;
        }
        if (!d->fn) {
            if (!strcmp(name, "nodefaults"))
                nodefaults = 1;
            else if (!strcmp(name, "S"))
                cfg->start_paused = 1;
            else if (!strcmp(name, "enable-kvm"))
                cfg->accel = CFG_ACCEL_KVM;
            else if (!strcmp(name, "help") || !strcmp(name, "h")) {
                fputs(usage, stdout);
                *exit_now = 1;
                return 0;
            } else if (!strcmp(name, "version")) {
                printf("cpr-vmm, the libcpr reference VMM\n");
                *exit_now = 1;
                return 0;
            }
            continue;
        }
        if (i + 1 >= argc) {
            *err = g_strdup_printf("option '%s' requires an argument", a);
            return -1;
        }
        if (!strcmp(name, "serial"))
            serial_given = 1;
        if ((!strcmp(name, "machine") || !strcmp(name, "M")) && !strcmp(argv[i + 1], "help")) {
            char *list = vmm_machine_types_describe();
            printf("Supported machines are:\n%s", list);
            g_free(list);
            *exit_now = 1;
            return 0;
        }
        if (d->fn(cfg, argv[++i], err) < 0)
            return -1;
    }
    if (!cfg->hbmon_version)
        cfg->hbmon_version = cfg->machine_type->hbmon_version;
    /* As QEMU: without -serial, a -nodefaults machine has no console; otherwise stdio, unless
     * the monitor already owns stdio. */
    if (!serial_given)
        cfg->serial = (nodefaults || cfg->monitor_stdio) ? VMM_SERIAL_NONE : VMM_SERIAL_STDIO;
    if (cfg->serial == VMM_SERIAL_STDIO && cfg->monitor_stdio) {
        *err = g_strdup("-serial stdio and -monitor stdio cannot share stdio");
        return -1;
    }
    if (cfg->machine_memdev) {
        const vmm_memdev *m = vmm_config_ram_memdev(cfg);
        if (!m) {
            *err = g_strdup_printf("-machine memory-backend=%s: no -object with that id",
                                   cfg->machine_memdev);
            return -1;
        }
        if (cfg->ram_size && cfg->ram_size != m->size) {
            *err = g_strdup_printf("-m size (%llu) differs from memory-backend '%s' size (%llu)",
                                   (unsigned long long)cfg->ram_size, m->id,
                                   (unsigned long long)m->size);
            return -1;
        }
        cfg->ram_size = m->size;
    } else if (!cfg->ram_size) {
        cfg->ram_size = 128ull << 20;
    }
    if (cfg->restore && cfg->incoming->len > 1) {
        /* One would be ignored: -incoming defer would wait for a migrate-incoming while the
         * -restore file sat unread, or two files would compete. */
        *err = g_strdup("-restore names the incoming stream itself: it takes no -incoming and no second -restore");
        return -1;
    }
    if (cfg->incoming->len > 2) {
        *err = g_strdup("-incoming given more than twice (one main and one cpr channel)");
        return -1;
    }
    return 0;
}

const vmm_memdev *vmm_config_ram_memdev(const vmm_config *cfg)
{
    if (!cfg->machine_memdev)
        return NULL;
    for (guint i = 0; i < cfg->memdevs->len; i++) {
        const vmm_memdev *m = cfg->memdevs->pdata[i];
        if (!strcmp(m->id, cfg->machine_memdev))
            return m;
    }
    return NULL;
}

void vmm_config_clear(vmm_config *cfg)
{
    g_strfreev(cfg->argv);
    g_free(cfg->name);
    if (cfg->memdevs)
        g_ptr_array_free(cfg->memdevs, TRUE);
    if (cfg->tls_objs)
        g_ptr_array_free(cfg->tls_objs, TRUE);
    g_free(cfg->machine_memdev);
    g_free(cfg->qmp_path);
    if (cfg->incoming)
        g_ptr_array_free(cfg->incoming, TRUE);
    if (cfg->globals)
        g_ptr_array_free(cfg->globals, TRUE);
    g_free(cfg->serial_path);
    if (cfg->drives)
        g_ptr_array_free(cfg->drives, TRUE);
    memset(cfg, 0, sizeof(*cfg));
}
