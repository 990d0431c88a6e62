/* SPDX-License-Identifier: MIT */
/* The command table: every monitor command once, with its QMP name, HMP spelling and printer. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cmdline.h"
#include "migration.h"
#include "monitor.h"
#include "pause.h"
#include "tls_objects.h"
#include "vmm.h"

int mon_fail(mon_error *err, const char *cls, const char *fmt, ...)
{
    if (err && !err->desc) {
        va_list ap;
        va_start(ap, fmt);
        err->cls = cls;
        err->desc = g_strdup_vprintf(fmt, ap);
        va_end(ap);
    }
    return -1;
}

void mon_error_clear(mon_error *err)
{
    g_free(err->desc);
    err->desc = NULL;
    err->cls = NULL;
}

int mon_fail_cpr(mon_error *err, cpr_error *cerr)
{
    mon_fail(err, "GenericError", "%s", cpr_error_message(cerr));
    cpr_error_free(cerr);
    return -1;
}

/* ---- run state ------------------------------------------------------------------------ */

static int cmd_query_status(vmm *v, json_object *args, json_object **ret, mon_error *err)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "running", json_object_new_boolean(vmm_vm_running(v)));
    json_object_object_add(o, "status", json_object_new_string(vmm_runstate_name(vmm_runstate_get(v))));
    *ret = o;
    return 0;
}

static void print_status(json_object *ret, GString *out)
{
    const char *st = json_object_get_string(json_object_object_get(ret, "status"));
    if (json_object_get_boolean(json_object_object_get(ret, "running")))
        g_string_append(out, "VM status: running\n");
    else if (!strcmp(st, "paused"))
        g_string_append(out, "VM status: paused\n");
    else
        g_string_append_printf(out, "VM status: paused (%s)\n", st);
}

static int cmd_stop(vmm *v, json_object *args, json_object **ret, mon_error *err)
{
    return vmm_vm_stop(v, err);
}

static int cmd_cont(vmm *v, json_object *args, json_object **ret, mon_error *err)
{
    vmm_runstate rs = vmm_runstate_get(v);
    if (rs == VMM_RS_RUNNING)
        return 0;
    if (rs == VMM_RS_INMIGRATE)
        return mon_fail(err, "GenericError",
                        "Migration is not finished yet: the VM waits for its incoming state");
    if (rs == VMM_RS_FINISH_MIGRATE)
        return mon_fail(err, "GenericError", "Migration is completing; try again when it ended");
    /* After a handover (cpr-transfer, ...) another VMM runs the guest in this very RAM:
     * the library knows, whatever jobs came after. */
    cpr_error *cerr = NULL;
    if (cpr_migrate_check_resume(v->ctx, &cerr) < 0)
        return mon_fail_cpr(err, cerr);
    return vmm_vm_start(v, err);
}

static int cmd_quit(vmm *v, json_object *args, json_object **ret, mon_error *err)
{
    vmm_quit(v, 0);
    return 0;
}

/* ---- guest ---------------------------------------------------------------------------- */

/* The guest's stalls while an incoming postcopy fetched its pages, or between x-record-stalls
 * on and off (pause.h); null when none were recorded. */
static json_object *stalls_json(vmm *v)
{
    vmm_stall_stats st;
    if (vmm_pause_stalls_get(v, &st) < 0)
        return NULL;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "samples", json_object_new_uint64(st.samples));
    json_object_object_add(o, "worst-ms", json_object_new_double((double)st.worst_ns / 1e6));
    json_object_object_add(o, "p99-ms", json_object_new_double((double)st.p99_ns / 1e6));
    json_object_object_add(o, "p50-ms", json_object_new_double((double)st.p50_ns / 1e6));
    json_object_object_add(o, "dropped", json_object_new_uint64(st.dropped));
    json_object_object_add(o, "recording", json_object_new_boolean(st.recording));
    return o;
}

static int cmd_query_guest(vmm *v, json_object *args, json_object **ret, mon_error *err)
{
    vmm_guest_report r;
    vmm_guest_report_get(v, &r);
    const vmm_guest_stats s = r.stats;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "heartbeat", json_object_new_uint64(s.heartbeat));
    json_object_object_add(o, "pages-total", json_object_new_uint64(s.pages_total));
    json_object_object_add(o, "pages-filled", json_object_new_uint64(s.pages_filled));
    json_object_object_add(o, "pages-verified", json_object_new_uint64(s.pages_verified));
    json_object_object_add(o, "corruptions", json_object_new_uint64(s.corruptions));
    json_object_object_add(o, "rewrites", json_object_new_uint64(s.rewrites));
    json_object_object_add(o, "backend", json_object_new_string(r.backend));
    json_object_object_add(o, "machine", json_object_new_string(r.machine));
    json_object_object_add(o, "last-pause-ms",
                           r.last_pause_ms < 0 ? NULL : json_object_new_double(r.last_pause_ms));
    json_object_object_add(o, "last-pause-seen-ms",
                           r.last_pause_ms < 0 ? NULL : json_object_new_double(r.last_pause_seen_ms));
    json_object_object_add(o, "last-pause-by",
                           r.last_pause_ms < 0 ? NULL : json_object_new_string(r.last_pause_by));
    json_object_object_add(o, "stalls", stalls_json(v));
    *ret = o;
    return 0;
}

/* Records the guest's stalls from now on (record: true) or stops (false): a baseline to hold
 * the postcopy figures against. */
static int cmd_record_stalls(vmm *v, json_object *args, json_object **ret, mon_error *err)
{
    json_object *on = json_object_object_get(args, "record");
    if (!json_object_is_type(on, json_type_boolean))
        return mon_fail(err, "GenericError", "x-record-stalls: want {\"record\": BOOL}");
    if (!v->sampler)
        return mon_fail(err, "GenericError", "x-record-stalls: this VMM has no heartbeat sampler");
    vmm_pause_stalls_record(v, json_object_get_boolean(on));
    return 0;
}

static void append_value(GString *out, json_object *val);

static void print_guest(json_object *ret, GString *out)
{
    json_object_object_foreach(ret, key, val) {
        g_string_append_printf(out, "%s: ", key);
        if (val)
            append_value(out, val);
        else
            g_string_append(out, "none");
        g_string_append_c(out, '\n');
    }
}

/* ---- migration parameters and capabilities ------------------------------------------- */

/* Parameters whose QMP type is an integer; the rest are strings (cpr-exec-command a list). */
static int param_is_int(const char *name)
{
    return !strcmp(name, "downtime-limit") || !strcmp(name, "max-bandwidth") ||
           !strcmp(name, "max-postcopy-bandwidth") ||
           !strcmp(name, "multifd-channels") || !strcmp(name, "multifd-zstd-level") ||
           g_str_has_suffix(name, "-timeout");
}

/* Parameters whose QMP type is a boolean (libcpr takes and gives "true"/"false"). */
static int param_is_bool(const char *name)
{
    return !strcmp(name, "direct-io");
}

/* The QMP type a parameter's value must have (QEMU refuses any other). */
static json_type param_type(const char *name)
{
    if (param_is_int(name))
        return json_type_int;
    if (param_is_bool(name))
        return json_type_boolean;
    return !strcmp(name, "cpr-exec-command") ? json_type_array : json_type_string;
}

static int cmd_set_params(vmm *v, json_object *args, json_object **ret, mon_error *err)
{
    /* Every value's type first, as QEMU does: a refused command sets nothing. */
    json_object_object_foreach(args, name, value) {
        json_type want = param_type(name);
        if (!json_object_is_type(value, want))
            return mon_fail(err, "GenericError", "Invalid parameter type for '%s', expected: %s", name,
                            want == json_type_int ? "integer" : want == json_type_boolean ? "boolean" :
                            want == json_type_array ? "array of strings" : "string");
    }
    json_object_object_foreach(args, key, val) {
        g_autofree char *s = NULL;
        if (json_object_is_type(val, json_type_array)) {
            /* cpr-exec-command: a list of words; libcpr keeps a shell-style command line
             * (g_shell_parse_argv), so each word is quoted: a word with a space in it (a JSON
             * -incoming channel, a sh -c script) must stay one word. */
            GString *g = g_string_new(NULL);
            for (size_t i = 0; i < json_object_array_length(val); i++) {
                g_autofree char *q = g_shell_quote(json_object_get_string(json_object_array_get_idx(val, i)));
                if (i)
                    g_string_append_c(g, ' ');
                g_string_append(g, q);
            }
            s = g_string_free(g, FALSE);
        } else {
            s = g_strdup(json_object_get_string(val));
        }
        cpr_error *cerr = NULL;
        if (cpr_param_set(v->ctx, key, s, &cerr) < 0)
            return mon_fail_cpr(err, cerr);
    }
    return 0;
}

typedef struct foreach_acc {
    vmm *v;
    json_object *out;
} foreach_acc;

static int add_param(const char *name, void *opaque)
{
    foreach_acc *a = opaque;
    g_autofree char *s = NULL;
    if (cpr_param_get(a->v->ctx, name, &s, NULL) < 0)
        return 0;
    json_object *val;
    if (param_is_int(name)) {
        val = json_object_new_int64(strtoll(s, NULL, 10));
    } else if (param_is_bool(name)) {
        val = json_object_new_boolean(!strcmp(s, "true"));
    } else if (!strcmp(name, "cpr-exec-command")) {
        val = json_object_new_array();
        g_auto(GStrv) words = NULL;
        if (*s && g_shell_parse_argv(s, NULL, &words, NULL))
            for (int i = 0; words[i]; i++)
                json_object_array_add(val, json_object_new_string(words[i]));
    } else {
        val = json_object_new_string(s);
    }
    json_object_object_add(a->out, name, val);
    return 0;
}

static int cmd_query_params(vmm *v, json_object *args, json_object **ret, mon_error *err)
{
    foreach_acc a = {v, json_object_new_object()};
    cpr_param_foreach(add_param, &a);
    *ret = a.out;
    return 0;
}

static void print_params(json_object *ret, GString *out)
{
    json_object_object_foreach(ret, key, val) {
        g_string_append_printf(out, "%s:", key);
        if (json_object_is_type(val, json_type_array)) {
            for (size_t i = 0; i < json_object_array_length(val); i++)
                g_string_append_printf(out, " %s", json_object_get_string(json_object_array_get_idx(val, i)));
        } else {
            g_string_append_printf(out, " %s", json_object_get_string(val));
        }
        g_string_append_c(out, '\n');
    }
}

static int cmd_set_caps(vmm *v, json_object *args, json_object **ret, mon_error *err)
{
    json_object *list = json_object_object_get(args, "capabilities");
    if (!json_object_is_type(list, json_type_array))
        return mon_fail(err, "GenericError", "Parameter 'capabilities' is missing or not a list");
    /* Validate everything first so that a bad entry changes nothing. */
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        json_object *e = json_object_array_get_idx(list, i);
        json_object *name = json_object_object_get(e, "capability");
        if (!json_object_is_type(name, json_type_string) ||
            !json_object_is_type(json_object_object_get(e, "state"), json_type_boolean))
            return mon_fail(err, "GenericError",
                            "capabilities[%zu]: want {\"capability\": NAME, \"state\": BOOL}", i);
        cpr_error *cerr = NULL;
        if (cpr_cap_get(v->ctx, json_object_get_string(name), &cerr) < 0)
            return mon_fail_cpr(err, cerr);
    }
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        json_object *e = json_object_array_get_idx(list, i);
        cpr_error *cerr = NULL;
        if (cpr_cap_set(v->ctx, json_object_get_string(json_object_object_get(e, "capability")),
                        json_object_get_boolean(json_object_object_get(e, "state")), &cerr) < 0)
            return mon_fail_cpr(err, cerr);
    }
    return 0;
}

static int add_cap(const char *name, void *opaque)
{
    foreach_acc *a = opaque;
    json_object *e = json_object_new_object();
    json_object_object_add(e, "capability", json_object_new_string(name));
    json_object_object_add(e, "state", json_object_new_boolean(cpr_cap_get(a->v->ctx, name, NULL) > 0));
    json_object_array_add(a->out, e);
    return 0;
}

static int cmd_query_caps(vmm *v, json_object *args, json_object **ret, mon_error *err)
{
    foreach_acc a = {v, json_object_new_array()};
    cpr_cap_foreach(add_cap, &a);
    *ret = a.out;
    return 0;
}

static void print_caps(json_object *ret, GString *out)
{
    for (size_t i = 0; i < json_object_array_length(ret); i++) {
        json_object *e = json_object_array_get_idx(ret, i);
        g_string_append_printf(out, "%s: %s\n",
                               json_object_get_string(json_object_object_get(e, "capability")),
                               json_object_get_boolean(json_object_object_get(e, "state")) ? "on" : "off");
    }
}

/* ---- migration ------------------------------------------------------------------------ */

static int cmd_migrate(vmm *v, json_object *args, json_object **ret, mon_error *err)
{
    return vmm_mig_migrate(v, args, err);
}

static int cmd_migrate_incoming(vmm *v, json_object *args, json_object **ret, mon_error *err)
{
    return vmm_mig_incoming(v, args, err);
}

static int cmd_migrate_recover(vmm *v, json_object *args, json_object **ret, mon_error *err)
{
    return vmm_mig_recover(v, args, err);
}

static int cmd_migrate_pause(vmm *v, json_object *args, json_object **ret, mon_error *err)
{
    cpr_error *cerr = NULL;
    return cpr_migrate_pause(v->ctx, &cerr) < 0 ? mon_fail_cpr(err, cerr) : 0;
}

static int cmd_migrate_cancel(vmm *v, json_object *args, json_object **ret, mon_error *err)
{
    return vmm_mig_cancel(v, err);
}

static int cmd_migrate_start_postcopy(vmm *v, json_object *args, json_object **ret, mon_error *err)
{
    return vmm_mig_start_postcopy(v, err);
}

static int cmd_query_migrate(vmm *v, json_object *args, json_object **ret, mon_error *err)
{
    *ret = vmm_mig_query(v);
    return 0;
}

/* The pause breakdown: libcpr's steps and this VMM's (cpr/trace.h), with this process's id. */
static int cmd_query_cpr_trace(vmm *v, json_object *args, json_object **ret, mon_error *err)
{
    char *json = NULL;
    cpr_error *cerr = NULL;
    if (cpr_trace_json(v->ctx, &json, &cerr) < 0)
        return mon_fail_cpr(err, cerr);
    *ret = json_tokener_parse(json);
    cpr_free(json);
    if (!*ret)
        return mon_fail(err, "GenericError", "the cpr trace is not valid JSON");
    json_object_object_add(*ret, "pid", json_object_new_int64(getpid()));
    return 0;
}

/* One value for a person: doubles rounded, the rest as JSON prints them. */
static void append_value(GString *out, json_object *val)
{
    if (json_object_is_type(val, json_type_double))
        g_string_append_printf(out, "%.2f", json_object_get_double(val));
    else
        g_string_append(out, json_object_get_string(val));
}

/* Prints query-migrate the way HMP's `info migrate` does: status first, then the figures. */
static void print_migrate(json_object *ret, GString *out)
{
    json_object *st = json_object_object_get(ret, "status");
    if (st)
        g_string_append_printf(out, "Migration status: %s\n", json_object_get_string(st));
    json_object_object_foreach(ret, key, val) {
        if (!strcmp(key, "status"))
            continue;
        if (json_object_is_type(val, json_type_object)) {
            json_object_object_foreach(val, k2, v2) {
                g_string_append_printf(out, "%s %s: ", key, k2);
                append_value(out, v2);
                g_string_append_c(out, '\n');
            }
        } else {
            g_string_append_printf(out, "%s: ", key);
            append_value(out, val);
            g_string_append(out, strstr(key, "time") ? " ms\n" : "\n");
        }
    }
}

/* ---- HMP argument builders ------------------------------------------------------------ */

static int nwords(char **w)
{
    int n = 0;
    while (w && w[n])
        n++;
    return n;
}

static json_object *hmp_args_cap(char **w, int *detach, mon_error *err)
{
    int on;
    if (nwords(w) != 2 ||
        ((on = !strcmp(w[1], "on")) == 0 && strcmp(w[1], "off"))) {
        mon_fail(err, "GenericError", "usage: migrate_set_capability CAPABILITY on|off");
        return NULL;
    }
    json_object *e = json_object_new_object();
    json_object_object_add(e, "capability", json_object_new_string(w[0]));
    json_object_object_add(e, "state", json_object_new_boolean(on));
    json_object *list = json_object_new_array();
    json_object_array_add(list, e);
    json_object *args = json_object_new_object();
    json_object_object_add(args, "capabilities", list);
    return args;
}

static void add_string(const char *key, const char *val, void *obj)
{
    json_object_object_add(obj, key, json_object_new_string(val));
}

/* object_add TYPE,id=ID,...: object-add's arguments, every property a string (object-add
 * takes on/off for booleans too). */
static json_object *hmp_args_object(char **w, int *detach, mon_error *err)
{
    if (nwords(w) < 1) {
        mon_fail(err, "GenericError", "usage: object_add TYPE,id=ID[,PROP=VALUE...]");
        return NULL;
    }
    /* The rest of the line, as QEMU takes it: a value may hold blanks ("O=libcpr tests"). */
    g_autofree char *line = g_strjoinv(" ", w);
    json_object *args = json_object_new_object();
    vmm_kv_foreach(line, "qom-type", add_string, args);
    return args;
}

static json_object *hmp_args_id(char **w, int *detach, mon_error *err)
{
    if (nwords(w) != 1) {
        mon_fail(err, "GenericError", "usage: object_del ID");
        return NULL;
    }
    json_object *args = json_object_new_object();
    json_object_object_add(args, "id", json_object_new_string(w[0]));
    return args;
}

/* An HMP word as the parameter's QMP type: integers in decimal, booleans on|off|true|false. */
static json_object *hmp_param_value(const char *name, const char *word, mon_error *err)
{
    json_type want = param_type(name);
    if (want == json_type_int) {
        gint64 n;
        if (!g_ascii_string_to_signed(word, 10, G_MININT64, G_MAXINT64, &n, NULL)) {
            mon_fail(err, "GenericError", "migrate_set_parameter %s: '%s' is not an integer", name, word);
            return NULL;
        }
        return json_object_new_int64(n);
    }
    if (want == json_type_boolean) {
        int on = !strcmp(word, "on") || !strcmp(word, "true");
        if (!on && strcmp(word, "off") && strcmp(word, "false")) {
            mon_fail(err, "GenericError", "migrate_set_parameter %s: '%s' is not on or off", name, word);
            return NULL;
        }
        return json_object_new_boolean(on);
    }
    return json_object_new_string(word);
}

static json_object *hmp_args_param(char **w, int *detach, mon_error *err)
{
    if (nwords(w) < 2) {
        mon_fail(err, "GenericError", "usage: migrate_set_parameter PARAMETER VALUE");
        return NULL;
    }
    json_object *args = json_object_new_object();
    if (!strcmp(w[0], "cpr-exec-command")) {
        json_object *list = json_object_new_array();
        for (int i = 1; w[i]; i++)
            json_object_array_add(list, json_object_new_string(w[i]));
        json_object_object_add(args, w[0], list);
    } else if (nwords(w) != 2) {
        json_object_put(args);
        mon_fail(err, "GenericError", "migrate_set_parameter %s: takes one value", w[0]);
        return NULL;
    } else {
        json_object *val = hmp_param_value(w[0], w[1], err);
        if (!val) {
            json_object_put(args);
            return NULL;
        }
        json_object_object_add(args, w[0], val);
    }
    return args;
}

/* [-d] [-r] URI: the URI may also be a JSON channel list, as QMP's channels. -r: resume a
 * postcopy-paused migration (QMP's resume=true; returns at once, as -d). */
static json_object *hmp_args_uri(char **w, int *detach, mon_error *err)
{
    int i = 0, resume = 0;
    for (; w[i] && w[i][0] == '-'; i++) {
        if (!strcmp(w[i], "-d"))
            *detach = 1;
        else if (!strcmp(w[i], "-r"))
            resume = *detach = 1;
        else {
            mon_fail(err, "GenericError", "unknown flag '%s'", w[i]);
            return NULL;
        }
    }
    if (!w[i]) {
        mon_fail(err, "GenericError", "a URI is required");
        return NULL;
    }
    g_autofree char *rest = g_strjoinv(" ", w + i);
    json_object *args = json_object_new_object();
    if (rest[0] == '[' || rest[0] == '{') {
        json_object *ch = json_tokener_parse(rest);
        if (!ch) {
            json_object_put(args);
            mon_fail(err, "GenericError", "channels: not valid JSON: %s", rest);
            return NULL;
        }
        json_object_object_add(args, "channels", ch);
    } else {
        json_object_object_add(args, "uri", json_object_new_string(rest));
    }
    if (resume)
        json_object_object_add(args, "resume", json_object_new_boolean(1));
    return args;
}

static int cmd_help(vmm *v, json_object *args, json_object **ret, mon_error *err)
{
    json_object *o = json_object_new_array();
    for (const mon_cmd *c = mon_commands; c->fn; c++)
        if (c->hmp)
            json_object_array_add(o, json_object_new_string(c->hmp_usage ? c->hmp_usage : c->hmp));
    *ret = o;
    return 0;
}

static void print_help(json_object *ret, GString *out)
{
    for (const mon_cmd *c = mon_commands; c->fn; c++)
        if (c->hmp)
            g_string_append_printf(out, "%-40s -- %s\n", c->hmp_usage ? c->hmp_usage : c->hmp, c->help);
}

const mon_cmd mon_commands[] = {
    {"query-status", "info status", NULL, "show the VM's run state", cmd_query_status, NULL, print_status, 0},
    {"stop", "stop", NULL, "stop the VM", cmd_stop, NULL, NULL, 0},
    {"cont", "cont", NULL, "resume the VM", cmd_cont, NULL, NULL, 0},
    {"quit", "quit", NULL, "quit the VMM", cmd_quit, NULL, NULL, 0},
    {"query-guest", "info guest", NULL, "guest heartbeat, pattern and pause figures", cmd_query_guest, NULL, print_guest, 0},
    {"x-record-stalls", NULL, NULL, "record the guest's stalls (record: true) or stop (false)",
     cmd_record_stalls, NULL, NULL, 0},
    {"migrate-set-parameters", "migrate_set_parameter", "migrate_set_parameter parameter value",
     "set a migration parameter", cmd_set_params, hmp_args_param, NULL, 0},
    {"query-migrate-parameters", "info migrate_parameters", NULL, "show migration parameters",
     cmd_query_params, NULL, print_params, 0},
    {"migrate-set-capabilities", "migrate_set_capability", "migrate_set_capability capability on|off",
     "set a migration capability", cmd_set_caps, hmp_args_cap, NULL, 0},
    {"query-migrate-capabilities", "info migrate_capabilities", NULL, "show migration capabilities",
     cmd_query_caps, NULL, print_caps, 0},
    {"migrate", "migrate", "migrate [-d] [-r] uri",
     "migrate the VM (-d: do not wait for completion; -r: resume a postcopy-paused migration on uri)",
     cmd_migrate, hmp_args_uri, NULL, MON_WAIT_MIGRATION},
    {"migrate-incoming", "migrate_incoming", "migrate_incoming uri", "load the VM's incoming state",
     cmd_migrate_incoming, hmp_args_uri, NULL, MON_WAIT_INCOMING},
    {"migrate-recover", "migrate_recover", "migrate_recover uri",
     "listen on uri for the source of a postcopy-paused migration (destination)", cmd_migrate_recover,
     hmp_args_uri, NULL, 0},
    {"migrate-pause", "migrate_pause", NULL,
     "break a postcopy-active migration's channel: both sides postcopy-paused (either side)",
     cmd_migrate_pause, NULL, NULL, 0},
    {"migrate_cancel", "migrate_cancel", NULL, "cancel the current migration", cmd_migrate_cancel, NULL, NULL, 0},
    {"migrate-start-postcopy", "migrate_start_postcopy", NULL,
     "switch the running migration to postcopy (capability postcopy-ram)", cmd_migrate_start_postcopy,
     NULL, NULL, 0},
    {"object-add", "object_add", "object_add TYPE,id=ID[,PROP=VALUE...]",
     "add a tls-creds-x509 or authz-simple object", vmm_cmd_object_add, hmp_args_object, NULL, 0},
    {"object-del", "object_del", "object_del ID", "delete a tls-creds-x509 or authz-simple object",
     vmm_cmd_object_del, hmp_args_id, NULL, 0},
    {"query-migrate", "info migrate", NULL, "show migration status", cmd_query_migrate, NULL, print_migrate, 0},
    {"x-query-cpr-trace", NULL, NULL, "the pause breakdown: timestamped steps of libcpr and the VMM",
     cmd_query_cpr_trace, NULL, NULL, 0},
    {NULL, "help", NULL, "list commands", cmd_help, NULL, print_help, 0},
    {0},
};

const mon_cmd *mon_find_qmp(const char *name)
{
    for (const mon_cmd *c = mon_commands; c->fn; c++)
        if (c->qmp && !strcmp(c->qmp, name))
            return c;
    return NULL;
}

const mon_cmd *mon_find_hmp(char **words, int *used)
{
    if (!words[0])
        return NULL;
    for (const mon_cmd *c = mon_commands; c->fn; c++) {
        if (!c->hmp)
            continue;
        const char *sp = strchr(c->hmp, ' ');
        if (!sp && !strcmp(c->hmp, words[0])) {
            *used = 1;
            return c;
        }
        if (sp && words[1] && !strncmp(c->hmp, words[0], (size_t)(sp - c->hmp)) &&
            !words[0][sp - c->hmp] && !strcmp(sp + 1, words[1])) {
            *used = 2;
            return c;
        }
    }
    if (!strcmp(words[0], "?") || !strcmp(words[0], "h")) {
        *used = 1;
        return mon_find_hmp((char *[]){"help", NULL}, used);
    }
    return NULL;
}

int mon_dispatch(vmm *v, const mon_cmd *cmd, json_object *args, json_object **ret, mon_error *err)
{
    json_object *empty = NULL;
    if (!args)
        args = empty = json_object_new_object();
    if (!json_object_is_type(args, json_type_object)) {
        json_object_put(empty);
        return mon_fail(err, "GenericError", "'arguments' must be an object");
    }
    *ret = NULL;
    int r = cmd->fn(v, args, ret, err);
    if (r < 0 && !err->desc)
        mon_fail(err, "GenericError", "%s failed", cmd->qmp ? cmd->qmp : cmd->hmp);
    json_object_put(empty);
    return r;
}
