/* SPDX-License-Identifier: MIT */
/*
 * A local disk (-drive file=PATH). Its file is on this host only, so normal migration to
 * another host would leave the guest without its disk: it blocks normal mode. The cpr modes
 * keep the VM on this host with the same file (seed 001, "cpr: relax some blockers"), so they
 * are not blocked. The fd is a named fd, so cpr-transfer and cpr-exec keep it open; the flush
 * hook syncs it before a migration completes.
 */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "devices.h"

#define DISK_FD_NAME "disk"

struct dev_disk {
    int index;
    char *path;
    int fd;
    cpr_blocker *blocker;
};

static void disk_free(vmm *v, dev_disk *d)
{
    cpr_blocker_del(v->ctx, d->blocker);
    if (d->fd >= 0) {
        cpr_fd_delete(v->ctx, DISK_FD_NAME, d->index);
        close(d->fd);
    }
    g_free(d->path);
    g_free(d);
}

int dev_disk_init(vmm *v, char **err)
{
    v->devs->disks = g_ptr_array_new();
    for (guint i = 0; i < v->cfg->drives->len; i++) {
        dev_disk *d = g_new0(dev_disk, 1);
        d->index = (int)i;
        d->path = g_strdup(v->cfg->drives->pdata[i]);
        g_ptr_array_add(v->devs->disks, d);
        cpr_error *cerr = NULL;
        d->fd = cpr_fd_open(v->ctx, d->path, O_RDWR | O_CREAT, 0644, DISK_FD_NAME, d->index, &cerr);
        if (d->fd < 0)
            return vmm_fail_cpr(err, "-drive", cerr);
        g_autofree char *reason = g_strdup_printf("local disk %s (drive %d) is not on shared storage",
                                                  d->path, d->index);
        if (cpr_blocker_add(v->ctx, CPR_MODES_NORMAL_ONLY, reason, &d->blocker, &cerr) < 0)
            return vmm_fail_cpr(err, "-drive", cerr);
    }
    return 0;
}

void dev_disk_fini(vmm *v)
{
    if (!v->devs->disks)
        return;
    for (guint i = 0; i < v->devs->disks->len; i++)
        disk_free(v, v->devs->disks->pdata[i]);
    g_ptr_array_free(v->devs->disks, TRUE);
    v->devs->disks = NULL;
}

int dev_disk_flush(vmm *v)
{
    for (guint i = 0; v->devs && v->devs->disks && i < v->devs->disks->len; i++) {
        dev_disk *d = v->devs->disks->pdata[i];
        if (fdatasync(d->fd) < 0)
            return -errno;
    }
    return 0;
}
