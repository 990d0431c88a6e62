/* SPDX-License-Identifier: MIT */
/*
 * cpr-vmm's command line, in QEMU's spelling so that the seeds' command lines work verbatim.
 * Parsing only: nothing here opens a file or a socket.
 */
#ifndef VMM_CMDLINE_H
#define VMM_CMDLINE_H

#include <stdint.h>

#include <glib.h>

#include "machtype.h"

/* A -object memory-backend-memfd / memory-backend-file. */
typedef struct vmm_memdev {
    char *id;
    int is_file;      /* memory-backend-file (mem-path) rather than memory-backend-memfd */
    char *mem_path;   /* file backends only */
    uint64_t size;
    int share;
} vmm_memdev;

/* A -object tls-creds-x509 or authz-simple (or QMP object-add of one): TLS credentials for
 * migration, or the one source certificate name a destination admits (tls-authz). */
typedef struct vmm_tls_obj {
    char *id;
    int authz;        /* authz-simple: only id and identity; else tls-creds-x509 */
    char *identity;   /* authz-simple: the distinguished name the source's certificate must have */
    char *dir;        /* QEMU's layout: ca-cert.pem, server-*.pem, client-*.pem */
    int server;       /* endpoint=server (the destination), else client */
    int verify_peer;  /* verify-peer, on by default as in QEMU */
} vmm_tls_obj;

typedef enum vmm_serial_kind {
    VMM_SERIAL_NONE,  /* -serial null, or -nodefaults without -serial */
    VMM_SERIAL_STDIO,
    VMM_SERIAL_FILE,
} vmm_serial_kind;

/* -accel values; numerically the machine core's VMM_ACCEL_AUTO/KVM/SOFT. */
enum {
    CFG_ACCEL_AUTO = 0, /* kvm when /dev/kvm works, otherwise soft */
    CFG_ACCEL_KVM = 1,
    CFG_ACCEL_SOFT = 2,
};

typedef struct vmm_config {
    char **argv;             /* the whole command line, for cpr-exec and restart hints */
    char *name;              /* -name */
    uint64_t ram_size;       /* -m, bytes; 0 = take the backend's size */
    int smp;                 /* -smp */
    GPtrArray *memdevs;      /* vmm_memdev * */
    GPtrArray *tls_objs;     /* vmm_tls_obj *: -object tls-creds-x509 */
    char *machine_memdev;    /* -machine memory-backend=ID */
    int aux_ram_share;       /* -machine aux-ram-share=on */
    int monitor_stdio;       /* -monitor stdio */
    char *qmp_path;          /* -qmp unix:PATH,server=on,wait=off */
    GPtrArray *incoming;     /* char *: each -incoming argument (defer, URI or JSON channel) */
    int restore;             /* the incoming stream came from -restore */
    GPtrArray *globals;      /* char *: each -global migration.NAME=VALUE, as "NAME=VALUE" */
    vmm_serial_kind serial;
    char *serial_path;       /* -serial file:PATH */
    uint32_t accel;          /* CFG_ACCEL_* */
    int start_paused;        /* -S */
    uint64_t dirty_rate;     /* -guest-dirty-rate PAGES_PER_S */
    int dirty_rate_given;
    uint32_t compress_pct;   /* -guest-compress PERCENT: how compressible a boot makes guest RAM */
    GPtrArray *drives;       /* char *: -drive file=PATH paths */
    uint32_t hbmon_version;  /* -x-hbmon-version: the hbmon section version written (the type's) */
    const vmm_machine_type *machine_type; /* -machine TYPE: the newest when not given */
    int machine_type_given;  /* -machine TYPE was given: an incoming guest must be of its layout */
    uint64_t vcpu_cpus;      /* -x-affinity vcpus=: host CPUs (bit n = CPU n) for vCPU threads; 0 = any */
    uint64_t emulator_cpus;  /* -x-affinity emulator=: the same for every other thread */
} vmm_config;

/*
 * Parses argv into *cfg. Returns 0, or -1 with a message in *err (g_free it) that names the
 * option at fault. `-help` and `-version` set *exit_now and print to stdout.
 */
int vmm_cmdline_parse(int argc, char **argv, vmm_config *cfg, int *exit_now, char **err);
void vmm_config_clear(vmm_config *cfg);

/* Parses a size with an optional K/M/G/T suffix; bare numbers are in `unit` bytes. */
int vmm_parse_size(const char *s, uint64_t unit, uint64_t *out);
/* Calls fn for each key=value of an option argument in QEMU's syntax ("a,b=c": the first
 * element without '=' gets key `implied`; ",," is a comma; "x" is x=on, "nox" x=off). */
void vmm_kv_foreach(const char *arg, const char *implied, void (*fn)(const char *key, const char *val, void *opaque),
                    void *opaque);

/* tls-creds-x509 and authz-simple objects: a new one with QEMU's defaults, one property (id,
 * dir, endpoint, verify-peer; id, identity) set from its text (-1 with *err naming it), the
 * check that the required ones are there, and its free. */
/* A new object of qom-type `type` (tls-creds-x509 or authz-simple; NULL for another). */
vmm_tls_obj *vmm_tls_obj_new(const char *type);
int vmm_tls_obj_set(vmm_tls_obj *o, const char *key, const char *val, char **err);
int vmm_tls_obj_check(const vmm_tls_obj *o, char **err);
void vmm_tls_obj_free(void *o);

/* The memdev the machine's RAM lives in, or NULL when RAM is the default anonymous memfd. */
const vmm_memdev *vmm_config_ram_memdev(const vmm_config *cfg);

#endif
