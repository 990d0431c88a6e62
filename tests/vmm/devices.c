/* SPDX-License-Identifier: MIT */
/* Creates the devices in a fixed order: the order their sections are saved and loaded. */
#include "devices.h"

int vmm_devices_init(vmm *v, char **err)
{
    v->devs = g_new0(vmm_devices, 1);
    if (dev_cpu_init(v, err) < 0 || dev_hbmon_init(v, err) < 0 || dev_serial_init(v, err) < 0 ||
        dev_disk_init(v, err) < 0)
        return -1;
    return 0;
}

void vmm_devices_fini(vmm *v)
{
    if (!v->devs)
        return;
    dev_disk_fini(v);
    dev_serial_fini(v);
    dev_hbmon_fini(v);
    dev_cpu_fini(v);
    g_free(v->devs);
    v->devs = NULL;
}

int vmm_devices_flush(vmm *v)
{
    return dev_disk_flush(v);
}
