/* SPDX-License-Identifier: MIT */
/*
 * The serial console. While the guest runs it prints one numbered line a second with the
 * guest's heartbeat. The line counter is device state (section "serial"), and a file backend
 * is a named fd: after cpr-transfer or cpr-exec the new VMM writes to the very same open file,
 * so the numbering goes on without a gap or a repeat in one file.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "devices.h"

#define SERIAL_FD_NAME "serial"
#define SERIAL_PERIOD_MS 1000

struct dev_serial {
    vmm *v;
    int fd;         /* -1: -serial null */
    int named;      /* fd is in libcpr's registry under SERIAL_FD_NAME */
    guint timer;
    /* section "serial", version 1 */
    uint64_t lines; /* lines printed so far, by this VMM and the ones before it */
};

static gboolean serial_tick(gpointer p)
{
    dev_serial *s = p;
    vmm *v = s->v;
    /* Under the run-control lock: a migration that stops the VM cannot slip in between the
     * check and the line, so the saved counter always matches the file. */
    g_mutex_lock(&v->lock);
    if (vmm_vm_running(v)) {
        vmm_guest_stats st = {.size = sizeof(st)};
        if (vmm_machine_get_stats(v->machine, &st) == 0) {
            char line[160];
            int n = snprintf(line, sizeof(line), "serial line %llu: heartbeat %llu corruptions %llu\n",
                             (unsigned long long)s->lines, (unsigned long long)st.heartbeat,
                             (unsigned long long)st.corruptions);
            vmm_write_all(s->fd, line, (size_t)n);
            s->lines++;
        }
    }
    g_mutex_unlock(&v->lock);
    return G_SOURCE_CONTINUE;
}

int dev_serial_init(vmm *v, char **err)
{
    dev_serial *s = g_new0(dev_serial, 1);
    s->v = v;
    s->fd = -1;
    v->devs->serial = s;
    cpr_error *cerr = NULL;
    switch (v->cfg->serial) {
    case VMM_SERIAL_NONE:
        break;
    case VMM_SERIAL_STDIO:
        s->fd = STDOUT_FILENO;
        break;
    case VMM_SERIAL_FILE:
        /* Appending, so that a VMM restarted for cpr-reboot continues the file too. */
        s->fd = cpr_fd_open(v->ctx, v->cfg->serial_path, O_WRONLY | O_CREAT | O_APPEND, 0644,
                            SERIAL_FD_NAME, 0, &cerr);
        if (s->fd < 0) {
            *err = g_strdup_printf("-serial file:%s: %s", v->cfg->serial_path, cpr_error_message(cerr));
            cpr_error_free(cerr);
            return -1;
        }
        s->named = 1;
        break;
    }
    /* Section "serial", version 1: the line counter. */
    cpr_desc *d = NULL;
    if (cpr_desc_new("serial", 1, 1, sizeof(*s), &d, &cerr) < 0 ||
        cpr_desc_add(d, "lines", CPR_TYPE_U64, CPR_MEMBER(dev_serial, lines), &cerr) < 0 ||
        cpr_savevm_register(v->ctx, NULL, 0, d, s, 0, NULL, &cerr) < 0) {
        cpr_desc_unref(d);
        return vmm_fail_cpr(err, "serial", cerr);
    }
    cpr_desc_unref(d);
    if (s->fd >= 0)
        s->timer = g_timeout_add(SERIAL_PERIOD_MS, serial_tick, s);
    return 0;
}

void dev_serial_fini(vmm *v)
{
    dev_serial *s = v->devs->serial;
    if (!s)
        return;
    if (s->timer)
        g_source_remove(s->timer);
    if (s->named) {
        cpr_fd_delete(v->ctx, SERIAL_FD_NAME, 0);
        close(s->fd);
    }
    g_free(s);
    v->devs->serial = NULL;
}
