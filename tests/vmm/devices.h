/* SPDX-License-Identifier: MIT */
/*
 * cpr-vmm's devices, each in its own dev_*.c, each with versioned state registered as a libcpr
 * section:
 *   serial   the console on an fd (file, stdio or nothing); the fd is a named fd so that
 *            cpr-transfer and cpr-exec keep writing the same file
 *   hbmon    the heartbeat monitor: the guest's last heartbeats and when they were seen, so the
 *            next VMM measures the guest-visible pause; version 2 added the times, and a
 *            subsection carries the pause history
 *   disk     a local disk file (-drive file=PATH): blocks normal migration only
 *   cpu      one section per vCPU with the machine core's state, register by register, plus
 *            the VM's (dev_cpu.c says how its versions differ)
 */
#ifndef VMM_DEVICES_H
#define VMM_DEVICES_H

#include "vmm.h"

typedef struct dev_serial dev_serial;
typedef struct dev_hbmon dev_hbmon;
typedef struct dev_disk dev_disk;
typedef struct dev_cpu dev_cpu;

struct vmm_devices {
    dev_serial *serial;
    dev_hbmon *hbmon;
    GPtrArray *disks; /* dev_disk * */
    dev_cpu *cpu;
};

int vmm_devices_init(vmm *v, char **err);
void vmm_devices_fini(vmm *v);
/* The flush hook: what the devices buffer reaches its backend. 0 or a negative errno. */
int vmm_devices_flush(vmm *v);

/* Per device; each returns 0 or -1 with *err. */
int dev_serial_init(vmm *v, char **err);
void dev_serial_fini(vmm *v);
int dev_hbmon_init(vmm *v, char **err);
void dev_hbmon_fini(vmm *v);
int dev_disk_init(vmm *v, char **err);
void dev_disk_fini(vmm *v);
int dev_disk_flush(vmm *v);
int dev_cpu_init(vmm *v, char **err);
/* Before a save (main thread, no migration running): registers "vm" and "cpu" anew when the
 * guest's type writes another version than they have (a guest that came in version 1). */
int dev_cpu_prepare_save(vmm *v, cpr_error **errp);
/* The version the guest's "vm" and "cpu" are written in: -machine's, else the version they came
 * in, else the newest type's. */
uint32_t dev_cpu_guest_version(const vmm *v);
void dev_cpu_fini(vmm *v);

#endif
