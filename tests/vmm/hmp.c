/* SPDX-License-Identifier: MIT */
/*
 * The human monitor. Lines come from stdin; each is split into words, matched against the
 * command table's HMP names, turned into QMP arguments and dispatched like a QMP command.
 * When stdin is not a terminal, each command is echoed after the prompt so that the output
 * reads like the seeds' transcripts.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <glib-unix.h>

#include "hmp.h"
#include "migration.h"

struct hmp_monitor {
    vmm *v;
    guint watch;
    GString *in;      /* bytes read and not yet executed */
    mon_wait waiting; /* a blocking command is under way: no new input is executed */
    int echo;
    int eof;
};

static void prompt(hmp_monitor *h)
{
    fputs("(qemu) ", stdout);
    fflush(stdout);
}

static void run_line(hmp_monitor *h, const char *line)
{
    if (h->echo) {
        fputs(line, stdout);
        fputc('\n', stdout);
    }
    g_auto(GStrv) words = g_strsplit_set(g_strstrip((char *)line), " \t", -1);
    /* Drop empty words left by repeated blanks. */
    int n = 0;
    for (int i = 0; words[i]; i++) {
        if (*words[i])
            words[n++] = words[i];
        else
            g_free(words[i]);
    }
    words[n] = NULL;
    if (!n)
        return;
    int used = 0;
    const mon_cmd *cmd = mon_find_hmp(words, &used);
    if (!cmd) {
        printf("unknown command: '%s%s%s'\n", words[0], n > 1 && !strcmp(words[0], "info") ? " " : "",
               n > 1 && !strcmp(words[0], "info") ? words[1] : "");
        return;
    }
    mon_error err = {0};
    int detach = 0;
    json_object *args = NULL;
    if (cmd->hmp_args) {
        args = cmd->hmp_args(words + used, &detach, &err);
        if (!args)
            goto fail;
    } else if (words[used]) {
        printf("Error: %s takes no arguments\n", cmd->hmp);
        return;
    }
    json_object *ret = NULL;
    int r = mon_dispatch(h->v, cmd, args, &ret, &err);
    json_object_put(args);
    if (r < 0)
        goto fail;
    if (cmd->hmp_print && ret) {
        GString *out = g_string_new(NULL);
        cmd->hmp_print(ret, out);
        fputs(out->str, stdout);
        g_string_free(out, TRUE);
    }
    json_object_put(ret);
    if (cmd->hmp_wait && !detach)
        h->waiting = cmd->hmp_wait;
    return;
fail:
    printf("Error: %s\n", err.desc);
    mon_error_clear(&err);
}

/* Ends a wait whose migration reached a final state, reporting its error. Returns 1 then. */
static int wait_over(hmp_monitor *h)
{
    int busy = h->waiting == MON_WAIT_MIGRATION ? vmm_mig_out_active(h->v) : vmm_mig_in_active(h->v);
    if (busy)
        return 0;
    const char *e = vmm_mig_last_error(h->v);
    if (e)
        printf("Error: %s\n", e);
    h->waiting = MON_WAIT_NONE;
    return 1;
}

/* Executes complete lines until one suspends the monitor or input runs out. */
static void drain(hmp_monitor *h)
{
    while (!h->waiting && !h->v->quitting) {
        char *nl = memchr(h->in->str, '\n', h->in->len);
        if (!nl)
            break;
        g_autofree char *line = g_strndup(h->in->str, (gsize)(nl - h->in->str));
        g_string_erase(h->in, 0, (gssize)(nl - h->in->str) + 1);
        run_line(h, line);
        if (h->waiting)
            wait_over(h);
        if (!h->waiting && !h->v->quitting)
            prompt(h);
    }
    fflush(stdout);
}

static gboolean stdin_readable(gint fd, GIOCondition cond, gpointer opaque)
{
    hmp_monitor *h = opaque;
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return G_SOURCE_CONTINUE;
    if (n <= 0) {
        /* As QEMU: the monitor goes quiet at end of input; the VM keeps running. */
        h->eof = 1;
        h->watch = 0;
        if (h->in->len)
            g_string_append_c(h->in, '\n');
        drain(h);
        return G_SOURCE_REMOVE;
    }
    g_string_append_len(h->in, buf, n);
    drain(h);
    return G_SOURCE_CONTINUE;
}

hmp_monitor *hmp_new(vmm *v)
{
    hmp_monitor *h = g_new0(hmp_monitor, 1);
    h->v = v;
    h->in = g_string_new(NULL);
    h->echo = !isatty(STDIN_FILENO);
    printf("cpr-vmm %d.%d.%d monitor - type 'help' for more information\n", CPR_VERSION_MAJOR,
           CPR_VERSION_MINOR, CPR_VERSION_PATCH);
    prompt(h);
    h->watch = g_unix_fd_add(STDIN_FILENO, G_IO_IN | G_IO_HUP | G_IO_ERR, stdin_readable, h);
    return h;
}

void hmp_free(hmp_monitor *h)
{
    if (!h)
        return;
    if (h->watch)
        g_source_remove(h->watch);
    g_string_free(h->in, TRUE);
    g_free(h);
}

void hmp_migration_changed(hmp_monitor *h)
{
    if (h && h->waiting && wait_over(h) && !h->v->quitting) {
        prompt(h);
        /* Lines typed while the monitor was suspended run now. */
        drain(h);
    }
}
