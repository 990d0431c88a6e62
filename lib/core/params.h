/* SPDX-License-Identifier: MIT */
/* Private: migration parameters as the context stores them. */
#ifndef CPR_CORE_PARAMS_H
#define CPR_CORE_PARAMS_H

#include <stdint.h>

#include <cpr/mode.h>

#define CPR_DEFAULT_DOWNTIME_LIMIT_MS 300
#define CPR_DEFAULT_CPR_CONNECT_TIMEOUT_MS 10000
/* QEMU's defaults for its multifd parameters. */
#define CPR_DEFAULT_MULTIFD_CHANNELS 2
#define CPR_DEFAULT_MULTIFD_ZSTD_LEVEL 1

/* multifd-compression */
enum { CPR_MULTIFD_COMPRESS_NONE = 0, CPR_MULTIFD_COMPRESS_ZSTD = 1 };

struct cpr_params {
    cpr_mode mode;
    uint64_t downtime_limit_ms;
    uint64_t max_bandwidth; /* bytes/s, 0 = unlimited */
    uint64_t max_postcopy_bandwidth; /* bytes/s after the switch to postcopy, 0 = unlimited */
    char *cpr_exec_command; /* NULL when unset */
    int x_ignore_shared;
    int pause_before_switchover; /* stop in pre-switchover until cpr_migrate_continue() */
    int postcopy_ram;            /* may switch to postcopy (cpr_migrate_start_postcopy) */
    uint64_t cpr_connect_timeout_ms; /* cpr-transfer out: wait for the cpr socket to listen */
    uint64_t cpr_accept_timeout_ms;  /* cpr-transfer in: wait for the old process; 0 = forever */
    char *tls_creds;    /* id of TLS credentials (cpr/tls.h); NULL: no TLS */
    char *tls_hostname; /* the name the destination's certificate must carry; NULL: the tcp host */
    char *tls_authz;    /* destination: id of the authorization object the source must match */
    int multifd;                     /* RAM pages over extra connections (lib/migration/multifd.c) */
    uint64_t multifd_channels;
    uint64_t multifd_compression;    /* CPR_MULTIFD_COMPRESS_* */
    uint64_t multifd_zstd_level;
    int mapped_ram;             /* file streams: RAM at fixed offsets (lib/migration/mapped_ram.c) */
    int direct_io;              /* mapped-ram regions written and read with O_DIRECT */
    int memory_restore_mode;    /* CPR_RESTORE_*: memory-restore-mode */
};

/* memory-restore-mode: copy; ondemand, a lazy restore by userfaultfd (lazy_restore.c); mapped,
 * the file's regions mapped copy-on-write (map_restore.c). */
enum { CPR_RESTORE_COPY, CPR_RESTORE_ONDEMAND, CPR_RESTORE_MAPPED };

void cpr_params_init(struct cpr_params *p);
void cpr_params_clear(struct cpr_params *p);

/* A consistent copy of the context's parameters, taken under its lock; clear it after use. */
struct cpr_ctx;
void cpr_params_snapshot(struct cpr_ctx *ctx, struct cpr_params *out);

/* A parameter's millisecond value as a wait (cpr_transfer_opts.timeout_ms): 0 is forever (-1). */
int64_t cpr_params_wait_ms(uint64_t ms);

#endif
