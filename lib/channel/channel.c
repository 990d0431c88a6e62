/* SPDX-License-Identifier: MIT */
/* QEMU-style migration URIs and QMP channel lists: parsing and per-mode validation. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <glib.h>
#include <json-c/json.h>

#include "channel/channel.h"
#include "core/error.h"
#include "core/parse.h"

#define CHANNEL_TYPES 2

struct cpr_channels {
    cpr_addr *addr[CHANNEL_TYPES]; /* indexed by cpr_channel_type */
};

static const char *const channel_type_names[CHANNEL_TYPES] = { "main", "cpr" };

static cpr_addr *addr_new(cpr_transport t)
{
    cpr_addr *a = g_new0(cpr_addr, 1);
    a->transport = t;
    a->port = -1;
    a->fd = -1;
    return a;
}

CPR_API void cpr_addr_free(cpr_addr *addr)
{
    if (!addr)
        return;
    g_free(addr->path);
    g_free(addr->host);
    g_strfreev(addr->argv);
    g_free(addr->command);
    g_free(addr);
}

static int set_port(cpr_addr *a, const char *port, const char *what, cpr_error **errp)
{
    uint64_t v;
    if (cpr_parse_u64(port, 65535, &v) < 0)
        return cpr_error_set(errp, -EINVAL, "%s: port '%s' is not a number from 0 to 65535", what, port);
    a->port = (int)v;
    return 0;
}

static int set_fd(cpr_addr *a, const char *fd, const char *what, cpr_error **errp)
{
    uint64_t v;
    if (cpr_parse_u64(fd, INT_MAX, &v) < 0)
        return cpr_error_set(errp, -EINVAL, "%s: '%s' is not a file descriptor number", what, fd);
    a->fd = (int)v;
    return 0;
}

static int set_exec(cpr_addr *a, char **argv, const char *what, cpr_error **errp)
{
    if (!argv || !argv[0] || !*argv[0]) {
        g_strfreev(argv);
        return cpr_error_set(errp, -EINVAL, "%s: exec needs a command", what);
    }
    a->argv = argv;
    /* The command goes to /bin/sh -c: each word quoted where the shell would split or
     * expand it, so the command runs exactly the argv given (found by fuzzing: a JSON arg
     * "cat > f" became three words and a redirection). */
    GString *cmd = g_string_new(NULL);
    for (char **w = argv; *w; w++) {
        if (w != argv)
            g_string_append_c(cmd, ' ');
        if (**w && strspn(*w, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./=:,@%+-") == strlen(*w)) {
            g_string_append(cmd, *w);
        } else {
            g_autofree char *q = g_shell_quote(*w);
            g_string_append(cmd, q);
        }
    }
    a->command = g_string_free(cmd, FALSE);
    return 0;
}

/* file:PATH[,offset=N] — the offset option is QEMU's; a comma inside PATH is not supported. */
static int parse_file(cpr_addr *a, const char *rest, const char *uri, cpr_error **errp)
{
    const char *comma = strchr(rest, ',');
    a->path = comma ? g_strndup(rest, comma - rest) : g_strdup(rest);
    if (!*a->path)
        return cpr_error_set(errp, -EINVAL, "migration URI '%s': file needs a path", uri);
    if (!comma)
        return 0;
    const char *opt = comma + 1;
    if (!g_str_has_prefix(opt, "offset="))
        return cpr_error_set(errp, -EINVAL, "migration URI '%s': unknown file option '%s' (expected offset=N)",
                             uri, opt);
    if (cpr_parse_u64(opt + 7, INT64_MAX, &a->offset) < 0)
        return cpr_error_set(errp, -EINVAL, "migration URI '%s': offset '%s' is not a byte count", uri, opt + 7);
    return 0;
}

/* A host name or address: brackets only ever delimit an IPv6 address in a URI, so a host with
 * one in it could not be written back as a URI that reads the same (found by fuzzing). */
static int check_host(const char *host, const char *where, cpr_error **errp)
{
    if (!*host)
        return cpr_error_set(errp, -EINVAL, "%s: tcp needs a host", where);
    if (strpbrk(host, "[]"))
        return cpr_error_set(errp, -EINVAL, "%s: host '%s' has a bracket (write an IPv6 address as [ADDR])",
                             where, host);
    return 0;
}

/* tcp:HOST:PORT, where HOST may be [IPv6]. */
static int parse_tcp(cpr_addr *a, const char *rest, const char *uri, cpr_error **errp)
{
    const char *colon;
    if (rest[0] == '[') {
        const char *close = strchr(rest, ']');
        if (!close || close[1] != ':')
            return cpr_error_set(errp, -EINVAL, "migration URI '%s': expected tcp:[IPV6]:PORT", uri);
        a->host = g_strndup(rest + 1, close - rest - 1);
        colon = close + 1;
    } else {
        colon = strrchr(rest, ':');
        if (!colon)
            return cpr_error_set(errp, -EINVAL, "migration URI '%s': expected tcp:HOST:PORT", uri);
        a->host = g_strndup(rest, colon - rest);
    }
    g_autofree char *where = g_strdup_printf("migration URI '%s'", uri);
    int ret = check_host(a->host, where, errp);
    return ret < 0 ? ret : set_port(a, colon + 1, uri, errp);
}

CPR_API int cpr_addr_parse_uri(const char *uri, cpr_addr **out, cpr_error **errp)
{
    if (!uri || !out)
        return cpr_error_set(errp, -EINVAL, "cpr_addr_parse_uri: %s is NULL", uri ? "out" : "uri");
    static const struct {
        const char *prefix;
        cpr_transport transport;
    } schemes[] = {
        { "file:", CPR_TRANSPORT_FILE }, { "unix:", CPR_TRANSPORT_UNIX },
        { "tcp:", CPR_TRANSPORT_TCP },   { "fd:", CPR_TRANSPORT_FD },
        { "exec:", CPR_TRANSPORT_EXEC },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(schemes); i++) {
        if (!g_str_has_prefix(uri, schemes[i].prefix))
            continue;
        const char *rest = uri + strlen(schemes[i].prefix);
        cpr_addr *a = addr_new(schemes[i].transport);
        int ret = 0;
        switch (a->transport) {
        case CPR_TRANSPORT_FILE:
            ret = parse_file(a, rest, uri, errp);
            break;
        case CPR_TRANSPORT_UNIX:
            a->path = g_strdup(rest);
            if (!*rest)
                ret = cpr_error_set(errp, -EINVAL, "migration URI '%s': unix needs a socket path", uri);
            break;
        case CPR_TRANSPORT_TCP:
            ret = parse_tcp(a, rest, uri, errp);
            break;
        case CPR_TRANSPORT_FD:
            ret = set_fd(a, rest, uri, errp);
            break;
        case CPR_TRANSPORT_EXEC:
            ret = set_exec(a, g_strdupv((char *[]){ "/bin/sh", "-c", (char *)rest, NULL }), uri, errp);
            if (ret == 0) {
                /* Keep the user's spelling: exec:COMMAND round-trips. */
                g_free(a->command);
                a->command = g_strdup(rest);
                if (!*rest)
                    ret = cpr_error_set(errp, -EINVAL, "migration URI '%s': exec needs a command", uri);
            }
            break;
        }
        if (ret < 0) {
            cpr_addr_free(a);
            return ret;
        }
        *out = a;
        return 0;
    }
    return cpr_error_set(errp, -EINVAL,
                         "migration URI '%s': unknown transport (expected file:, unix:, tcp:, fd: or exec:)",
                         uri);
}

CPR_API cpr_transport cpr_addr_transport(const cpr_addr *addr)
{
    return addr ? addr->transport : 0;
}

CPR_API const char *cpr_addr_path(const cpr_addr *addr)
{
    return addr ? addr->path : NULL;
}

CPR_API const char *cpr_addr_host(const cpr_addr *addr)
{
    return addr ? addr->host : NULL;
}

CPR_API int cpr_addr_port(const cpr_addr *addr)
{
    return addr ? addr->port : -1;
}

CPR_API int cpr_addr_fd(const cpr_addr *addr)
{
    return addr ? addr->fd : -1;
}

CPR_API uint64_t cpr_addr_offset(const cpr_addr *addr)
{
    return addr ? addr->offset : 0;
}

CPR_API const char *cpr_addr_command(const cpr_addr *addr)
{
    return addr ? addr->command : NULL;
}

CPR_API char *cpr_addr_to_uri(const cpr_addr *addr)
{
    if (!addr)
        return NULL;
    switch (addr->transport) {
    case CPR_TRANSPORT_FILE:
        if (addr->offset)
            return g_strdup_printf("file:%s,offset=%" PRIu64, addr->path, addr->offset);
        return g_strdup_printf("file:%s", addr->path);
    case CPR_TRANSPORT_UNIX:
        return g_strdup_printf("unix:%s", addr->path);
    case CPR_TRANSPORT_TCP:
        if (strchr(addr->host, ':'))
            return g_strdup_printf("tcp:[%s]:%d", addr->host, addr->port);
        return g_strdup_printf("tcp:%s:%d", addr->host, addr->port);
    case CPR_TRANSPORT_FD:
        return g_strdup_printf("fd:%d", addr->fd);
    case CPR_TRANSPORT_EXEC:
        return g_strdup_printf("exec:%s", addr->command);
    }
    return NULL;
}

/* ---- QMP MigrationAddress / MigrationChannel, from JSON ---- */

/* A required string member; NULL (with an error) when absent or not a string. */
static const char *json_str(json_object *obj, const char *key, const char *where, cpr_error **errp)
{
    json_object *v;
    if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, json_type_string)) {
        cpr_error_set(errp, -EINVAL, "%s: '%s' must be a string", where, key);
        return NULL;
    }
    return json_object_get_string(v);
}

/* Rejects members other than the allowed ones: a typo must not pass silently. */
static int json_only(json_object *obj, const char *const *allowed, const char *where, cpr_error **errp)
{
    json_object_object_foreach(obj, key, val)
    {
        (void)val;
        gboolean ok = FALSE;
        for (const char *const *k = allowed; *k; k++)
            ok |= strcmp(*k, key) == 0;
        if (!ok)
            return cpr_error_set(errp, -EINVAL, "%s: unexpected member '%s'", where, key);
    }
    return 0;
}

static int parse_socket_addr(json_object *obj, cpr_addr **out, const char *where, cpr_error **errp)
{
    const char *type = json_str(obj, "type", where, errp);
    if (!type)
        return -EINVAL;
    cpr_addr *a = NULL;
    int ret;
    if (strcmp(type, "unix") == 0) {
        static const char *const keys[] = { "transport", "type", "path", "abstract", "tight", NULL };
        const char *path = json_str(obj, "path", where, errp);
        if (!path || json_only(obj, keys, where, errp) < 0)
            return -EINVAL;
        if (!*path)
            return cpr_error_set(errp, -EINVAL, "%s: 'path' is empty", where);
        a = addr_new(CPR_TRANSPORT_UNIX);
        a->path = g_strdup(path);
    } else if (strcmp(type, "inet") == 0) {
        static const char *const keys[] = { "transport", "type", "host", "port", "numeric", "to",
                                             "ipv4", "ipv6", "keep-alive", NULL };
        const char *host = json_str(obj, "host", where, errp);
        const char *port = host ? json_str(obj, "port", where, errp) : NULL;
        if (!port || json_only(obj, keys, where, errp) < 0)
            return -EINVAL;
        if (!*host)
            return cpr_error_set(errp, -EINVAL, "%s: 'host' is empty", where);
        if ((ret = check_host(host, where, errp)) < 0)
            return ret;
        a = addr_new(CPR_TRANSPORT_TCP);
        a->host = g_strdup(host);
        if ((ret = set_port(a, port, where, errp)) < 0) {
            cpr_addr_free(a);
            return ret;
        }
    } else if (strcmp(type, "fd") == 0) {
        static const char *const keys[] = { "transport", "type", "str", NULL };
        const char *str = json_str(obj, "str", where, errp);
        if (!str || json_only(obj, keys, where, errp) < 0)
            return -EINVAL;
        a = addr_new(CPR_TRANSPORT_FD);
        if ((ret = set_fd(a, str, where, errp)) < 0) {
            cpr_addr_free(a);
            return ret;
        }
    } else {
        return cpr_error_set(errp, -EINVAL, "%s: unknown socket type '%s' (expected unix, inet or fd)", where,
                             type);
    }
    *out = a;
    return 0;
}

static int parse_file_addr(json_object *obj, cpr_addr **out, const char *where, cpr_error **errp)
{
    static const char *const keys[] = { "transport", "filename", "offset", NULL };
    const char *filename = json_str(obj, "filename", where, errp);
    if (!filename || json_only(obj, keys, where, errp) < 0)
        return -EINVAL;
    if (!*filename)
        return cpr_error_set(errp, -EINVAL, "%s: 'filename' is empty", where);
    /* As in a file: URI, where a comma starts an option: a path with one could not be
     * written back as a URI that reads the same (found by fuzzing). */
    if (strchr(filename, ','))
        return cpr_error_set(errp, -EINVAL, "%s: 'filename' %s has a comma, which is not supported", where,
                             filename);
    uint64_t offset = 0;
    json_object *v;
    if (json_object_object_get_ex(obj, "offset", &v)) {
        if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0)
            return cpr_error_set(errp, -EINVAL, "%s: 'offset' must be a non-negative integer", where);
        offset = (uint64_t)json_object_get_int64(v);
    }
    cpr_addr *a = addr_new(CPR_TRANSPORT_FILE);
    a->path = g_strdup(filename);
    a->offset = offset;
    *out = a;
    return 0;
}

static int parse_exec_addr(json_object *obj, cpr_addr **out, const char *where, cpr_error **errp)
{
    static const char *const keys[] = { "transport", "args", NULL };
    json_object *args;
    if (!json_object_object_get_ex(obj, "args", &args) || !json_object_is_type(args, json_type_array))
        return cpr_error_set(errp, -EINVAL, "%s: 'args' must be an array of strings", where);
    if (json_only(obj, keys, where, errp) < 0)
        return -EINVAL;
    size_t n = json_object_array_length(args);
    char **argv = g_new0(char *, n + 1);
    for (size_t i = 0; i < n; i++) {
        json_object *s = json_object_array_get_idx(args, i);
        if (!json_object_is_type(s, json_type_string)) {
            g_strfreev(argv);
            return cpr_error_set(errp, -EINVAL, "%s: args[%zu] is not a string", where, i);
        }
        argv[i] = g_strdup(json_object_get_string(s));
    }
    cpr_addr *a = addr_new(CPR_TRANSPORT_EXEC);
    int ret = set_exec(a, argv, where, errp);
    if (ret < 0) {
        cpr_addr_free(a);
        return ret;
    }
    *out = a;
    return 0;
}

static int parse_addr_json(json_object *obj, cpr_addr **out, const char *where, cpr_error **errp)
{
    if (!json_object_is_type(obj, json_type_object))
        return cpr_error_set(errp, -EINVAL, "%s: 'addr' must be an object", where);
    const char *transport = json_str(obj, "transport", where, errp);
    if (!transport)
        return -EINVAL;
    if (strcmp(transport, "socket") == 0)
        return parse_socket_addr(obj, out, where, errp);
    if (strcmp(transport, "file") == 0)
        return parse_file_addr(obj, out, where, errp);
    if (strcmp(transport, "exec") == 0)
        return parse_exec_addr(obj, out, where, errp);
    return cpr_error_set(errp, -EINVAL, "%s: unknown transport '%s' (expected socket, file or exec)", where,
                         transport);
}

static int parse_channel_json(cpr_channels *list, json_object *obj, const char *where, cpr_error **errp)
{
    static const char *const keys[] = { "channel-type", "addr", NULL };
    if (!json_object_is_type(obj, json_type_object))
        return cpr_error_set(errp, -EINVAL, "%s: a channel must be an object", where);
    const char *type = json_str(obj, "channel-type", where, errp);
    if (!type || json_only(obj, keys, where, errp) < 0)
        return -EINVAL;
    cpr_channel_type ct;
    if (strcmp(type, "main") == 0)
        ct = CPR_CHANNEL_MAIN;
    else if (strcmp(type, "cpr") == 0)
        ct = CPR_CHANNEL_CPR;
    else
        return cpr_error_set(errp, -EINVAL, "%s: unknown channel-type '%s' (expected main or cpr)", where, type);
    json_object *addr_obj;
    if (!json_object_object_get_ex(obj, "addr", &addr_obj))
        return cpr_error_set(errp, -EINVAL, "%s: 'addr' is missing", where);
    cpr_addr *addr = NULL;
    int ret = parse_addr_json(addr_obj, &addr, where, errp);
    if (ret < 0)
        return ret;
    if (list->addr[ct]) {
        cpr_addr_free(addr);
        return cpr_error_set(errp, -EINVAL, "%s: a second '%s' channel", where, type);
    }
    list->addr[ct] = addr;
    return 0;
}

CPR_API int cpr_channels_new(cpr_channels **out, cpr_error **errp)
{
    if (!out)
        return cpr_error_set(errp, -EINVAL, "cpr_channels_new: out is NULL");
    *out = g_new0(cpr_channels, 1);
    return 0;
}

CPR_API void cpr_channels_free(cpr_channels *list)
{
    if (!list)
        return;
    for (int i = 0; i < CHANNEL_TYPES; i++)
        cpr_addr_free(list->addr[i]);
    g_free(list);
}

CPR_API int cpr_channels_parse_json(const char *json, cpr_channels **out, cpr_error **errp)
{
    if (!json || !out)
        return cpr_error_set(errp, -EINVAL, "cpr_channels_parse_json: %s is NULL", json ? "out" : "json");
    json_tokener *tok = json_tokener_new();
    json_object *root = json_tokener_parse_ex(tok, json, (int)strnlen(json, INT_MAX));
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t consumed = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (!root || jerr != json_tokener_success) {
        json_object_put(root);
        return cpr_error_set(errp, -EINVAL, "migration channels: invalid JSON at byte %zu: %s", consumed,
                             json_tokener_error_desc(jerr));
    }
    /* json-c stops at the end of the first value: anything but blanks after it is an error. */
    for (const char *p = json + consumed; *p; p++) {
        if (!g_ascii_isspace(*p)) {
            json_object_put(root);
            return cpr_error_set(errp, -EINVAL, "migration channels: unexpected text after JSON at byte %zu",
                                 consumed);
        }
    }
    cpr_channels *list = g_new0(cpr_channels, 1);
    int ret = 0;
    if (json_object_is_type(root, json_type_array)) {
        size_t n = json_object_array_length(root);
        if (n == 0)
            ret = cpr_error_set(errp, -EINVAL, "migration channels: the list is empty");
        for (size_t i = 0; i < n && ret == 0; i++) {
            char *where = g_strdup_printf("migration channel %zu", i);
            ret = parse_channel_json(list, json_object_array_get_idx(root, i), where, errp);
            g_free(where);
        }
    } else {
        ret = parse_channel_json(list, root, "migration channel", errp);
    }
    json_object_put(root);
    if (ret < 0) {
        cpr_channels_free(list);
        return ret;
    }
    *out = list;
    return 0;
}

CPR_API int cpr_channels_from_uri(const char *uri, cpr_channels **out, cpr_error **errp)
{
    if (!out)
        return cpr_error_set(errp, -EINVAL, "cpr_channels_from_uri: out is NULL");
    cpr_addr *addr;
    int ret = cpr_addr_parse_uri(uri, &addr, errp);
    if (ret < 0)
        return ret;
    cpr_channels *list = g_new0(cpr_channels, 1);
    list->addr[CPR_CHANNEL_MAIN] = addr;
    *out = list;
    return 0;
}

static int valid_type(cpr_channel_type type)
{
    return (unsigned int)type < CHANNEL_TYPES;
}

CPR_API int cpr_channels_add(cpr_channels *list, cpr_channel_type type, cpr_addr *addr, cpr_error **errp)
{
    if (!list || !addr)
        return cpr_error_set(errp, -EINVAL, "cpr_channels_add: %s is NULL", list ? "addr" : "list");
    if (!valid_type(type))
        return cpr_error_set(errp, -EINVAL, "cpr_channels_add: unknown channel type %d", (int)type);
    if (list->addr[type])
        return cpr_error_set(errp, -EEXIST, "migration channels: there is already a '%s' channel",
                             channel_type_names[type]);
    list->addr[type] = addr;
    return 0;
}

CPR_API int cpr_channels_merge(cpr_channels *dst, cpr_channels *src, cpr_error **errp)
{
    if (!dst || !src)
        return cpr_error_set(errp, -EINVAL, "cpr_channels_merge: %s is NULL", dst ? "src" : "dst");
    for (int i = 0; i < CHANNEL_TYPES; i++) {
        if (dst->addr[i] && src->addr[i])
            return cpr_error_set(errp, -EEXIST, "migration channels: '%s' channel given twice",
                                 channel_type_names[i]);
    }
    for (int i = 0; i < CHANNEL_TYPES; i++) {
        if (src->addr[i]) {
            dst->addr[i] = src->addr[i];
            src->addr[i] = NULL;
        }
    }
    return 0;
}

CPR_API const cpr_addr *cpr_channels_get(const cpr_channels *list, cpr_channel_type type)
{
    if (!list || !valid_type(type))
        return NULL;
    return list->addr[type];
}

static const char *transport_name(cpr_transport t)
{
    switch (t) {
    case CPR_TRANSPORT_FILE: return "file";
    case CPR_TRANSPORT_UNIX: return "unix socket";
    case CPR_TRANSPORT_TCP: return "tcp socket";
    case CPR_TRANSPORT_FD: return "fd";
    case CPR_TRANSPORT_EXEC: return "exec";
    }
    return "unknown";
}

/* Modes whose source gives the guest up only on the destination's acknowledgement need a
 * main channel that carries it back: a socket. exec: and a pipe or other fd: have no way back. */
static int check_ack_path(const cpr_addr *main_ch, const char *mode, cpr_error **errp)
{
    struct stat st;
    if (main_ch->transport == CPR_TRANSPORT_EXEC)
        return cpr_error_set(errp, -EINVAL,
                             "mode %s: the main channel exec:%s cannot carry the destination's acknowledgement back: use a socket",
                             mode, main_ch->command ? main_ch->command : "");
    if (main_ch->transport == CPR_TRANSPORT_FD && fstat(main_ch->fd, &st) == 0 && !S_ISSOCK(st.st_mode))
        return cpr_error_set(errp, -EINVAL,
                             "mode %s: the main channel fd:%d is not a socket, so it cannot carry the destination's acknowledgement back",
                             mode, main_ch->fd);
    return 0;
}

CPR_API int cpr_channels_check_mode(const cpr_channels *list, cpr_mode mode, const char *exec_command,
                                    cpr_error **errp)
{
    const char *name = cpr_mode_name(mode);
    int ret;
    if (!name)
        return cpr_error_set(errp, -EINVAL, "unknown migration mode %d", (int)mode);
    const cpr_addr *main_ch = cpr_channels_get(list, CPR_CHANNEL_MAIN);
    const cpr_addr *cpr_ch = cpr_channels_get(list, CPR_CHANNEL_CPR);
    if (!main_ch)
        return cpr_error_set(errp, -EINVAL, "mode %s: a main migration channel is required", name);
    if (cpr_ch && mode != CPR_MODE_CPR_TRANSFER)
        return cpr_error_set(errp, -EINVAL, "mode %s: a cpr channel is only used by mode cpr-transfer", name);

    switch (mode) {
    case CPR_MODE_NORMAL:
        return 0;
    case CPR_MODE_CPR_REBOOT:
        if (main_ch->transport != CPR_TRANSPORT_FILE)
            return cpr_error_set(errp, -EINVAL, "mode cpr-reboot: the main channel must be a file, not %s",
                                 transport_name(main_ch->transport));
        return 0;
    case CPR_MODE_CPR_TRANSFER:
        if (!cpr_ch)
            return cpr_error_set(errp, -EINVAL, "mode cpr-transfer: a cpr channel is required");
        if (cpr_ch->transport != CPR_TRANSPORT_UNIX)
            return cpr_error_set(errp, -EINVAL,
                                 "mode cpr-transfer: the cpr channel must be a unix socket (it carries fds), not %s",
                                 transport_name(cpr_ch->transport));
        if (main_ch->transport == CPR_TRANSPORT_FILE)
            return cpr_error_set(errp, -EINVAL, "mode cpr-transfer: the main channel cannot be a file");
        if ((ret = check_ack_path(main_ch, name, errp)) < 0)
            return ret;
        if (main_ch->transport == CPR_TRANSPORT_TCP && main_ch->port == 0)
            return cpr_error_set(errp, -EINVAL,
                                 "mode cpr-transfer: the main channel's tcp port cannot be 0 (the new process must know it in advance)");
        return 0;
    case CPR_MODE_CPR_EXEC:
        if (!exec_command || !*exec_command)
            return cpr_error_set(errp, -EINVAL, "mode cpr-exec: parameter cpr-exec-command is not set");
        if (main_ch->transport != CPR_TRANSPORT_FILE)
            return cpr_error_set(errp, -EINVAL,
                                 "mode cpr-exec: the main channel must be a file (the old process is gone before the new one reads it), not %s",
                                 transport_name(main_ch->transport));
        return 0;
    }
    return 0;
}

CPR_API cpr_mode cpr_channels_incoming_mode(const cpr_channels *list, cpr_mode fallback)
{
    return cpr_channels_get(list, CPR_CHANNEL_CPR) ? CPR_MODE_CPR_TRANSFER : fallback;
}
