/* SPDX-License-Identifier: MIT */
/*
 * The migration engine in one process: two contexts (source and destination VMs, each with a
 * guest thread and a memfd or file RAM block) over real files and UNIX sockets. The state
 * machine, notifier order, statistics against the bytes that really moved, and the failures
 * that leave the source guest running. Two-process tests are in tests/integration.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "mig_fixture.h"
#include "testutil.h"

#define RAM (8u << 20)

/* A VM with RAM filled and its guest running: RAM in a memfd, or in the file ram_path. */
static struct mig_vm *running_vm_on(const char *ram_path)
{
    return mig_running_vm(RAM, ram_path);
}

static struct mig_vm *running_vm(void)
{
    return running_vm_on(NULL);
}

/* Asserts that the words of `order` appear in `log` in that order (others may be between). */
static void assert_in_order(const char *log, const char *order)
{
    g_auto(GStrv) want = g_strsplit(order, " ", -1);
    const char *at = log;
    for (char **w = want; *w; w++) {
        const char *hit = strstr(at, *w);
        ck_assert_msg(hit, "'%s' missing (in order) from log: %s", *w, log);
        at = hit + strlen(*w);
    }
}

static uint64_t file_size(const char *p)
{
    struct stat st;
    ck_assert_int_eq(stat(p, &st), 0);
    return (uint64_t)st.st_size;
}

START_TEST(test_status_and_runstate_names_are_qemus)
{
    ck_assert_str_eq(cpr_migration_status_name(CPR_MIGRATION_NONE), "none");
    ck_assert_str_eq(cpr_migration_status_name(CPR_MIGRATION_DEVICE), "device");
    ck_assert_str_eq(cpr_migration_status_name(CPR_MIGRATION_PRE_SWITCHOVER), "pre-switchover");
    ck_assert_str_eq(cpr_migration_status_name(CPR_MIGRATION_POSTCOPY_PAUSED), "postcopy-paused");
    ck_assert_int_eq(CPR_MIGRATION_POSTCOPY_RECOVER, 11); /* appended, never renumbered */
    ck_assert_str_eq(cpr_migration_status_name(CPR_MIGRATION_POSTCOPY_RECOVER), "postcopy-recover");
    ck_assert_ptr_null(cpr_migration_status_name(12));
    ck_assert_ptr_null(cpr_migration_status_name(99));
    ck_assert_str_eq(cpr_runstate_name(CPR_RUNSTATE_POSTMIGRATE), "postmigrate");
    ck_assert_str_eq(cpr_runstate_name(CPR_RUNSTATE_FINISH_MIGRATE), "finish-migrate");
    ck_assert_ptr_null(cpr_runstate_name(-1));
}
END_TEST

/* Postcopy recovery's calls refuse, changing nothing, without a paused job or on an address
 * that is no socket (integration.postcopy.recover runs a real one). */
START_TEST(test_recover_and_resume_need_a_paused_postcopy)
{
    struct mig_vm *vm = running_vm();
    g_autofree char *u = uri("unix", "rec.sock");
    ck_assert_cpr_fails(cpr_migrate_recover(vm->ctx, u, errp_), -EINVAL,
                        "no incoming migration in status postcopy-paused (status none)");
    ck_assert_int_eq(access(u + strlen("unix:"), F_OK), -1); /* nothing listened */
    ck_assert_cpr_fails(cpr_migrate_resume(vm->ctx, u, errp_), -EINVAL,
                        "no outgoing migration in status postcopy-paused");
    ck_assert_cpr_fails(cpr_migrate_resume(vm->ctx, "file:/tmp/x", errp_), -EINVAL,
                        "'file:/tmp/x' is not a unix: or tcp: address");
    ck_assert_cpr_fails(cpr_migrate_recover(vm->ctx, NULL, errp_), -EINVAL, "uri is NULL");
    ck_assert_int_eq(cpr_migrate_resume(NULL, u, NULL), -EINVAL);
    ck_assert_int_eq(cpr_migrate_cancel(vm->ctx, NULL), 0);
    /* migrate-pause: only a postcopy-active job (integration.postcopy.pause-* pause real ones). */
    ck_assert_cpr_fails(cpr_migrate_pause(vm->ctx, errp_), -EINVAL,
                        "migrate-pause: no migration in status postcopy-active or "
                        "postcopy-recover (status none)");
    ck_assert_int_eq(cpr_migrate_pause(NULL, NULL), -EINVAL);
    mig_vm_free(vm);
}
END_TEST

START_TEST(test_query_json_is_empty_before_a_job_and_lists_blockers)
{
    struct mig_vm *vm = running_vm();
    char *json;
    ck_assert_int_eq(cpr_migrate_query_json(vm->ctx, &json, NULL), 0);
    ck_assert_str_eq(json, "{}");
    cpr_free(json);
    cpr_blocker *b;
    ck_assert_int_eq(cpr_blocker_add(vm->ctx, CPR_MODES_NORMAL_ONLY, "local disk /var/d0", &b, NULL), 0);
    ck_assert_int_eq(cpr_migrate_query_json(vm->ctx, &json, NULL), 0);
    /* Slashes as they are: JSON allows "\/" but nobody wants to read it in a path. */
    ck_assert_str_eq(json, "{\"blocked-reasons\":[\"local disk /var/d0\"]}");
    cpr_free(json);
    /* The reasons are those of the mode the next migration would use. */
    ck_assert_int_eq(cpr_set_mode(vm->ctx, CPR_MODE_CPR_REBOOT, NULL), 0);
    ck_assert_int_eq(cpr_migrate_query_json(vm->ctx, &json, NULL), 0);
    ck_assert_str_eq(json, "{}");
    cpr_free(json);
    ck_assert_int_eq(cpr_migrate_runstate(vm->ctx), CPR_RUNSTATE_RUNNING);
    mig_vm_free(vm);
}
END_TEST

START_TEST(test_blocked_migration_changes_nothing_and_normal_only_blocker_spares_cpr_reboot)
{
    struct mig_vm *vm = running_vm();
    cpr_blocker *b;
    ck_assert_int_eq(cpr_blocker_add(vm->ctx, CPR_MODES_NORMAL_ONLY, "local disk d0", &b, NULL), 0);
    g_autofree char *u = uri("file", "vm.state");
    ck_assert_cpr_fails(cpr_migrate_uri(vm->ctx, u, 0, errp_), -EPERM, "local disk d0");
    ck_assert_int_eq(query(vm->ctx).status, CPR_MIGRATION_NONE);
    g_autofree char *log = mig_vm_log(vm);
    ck_assert_str_eq(log, ""); /* refused before it began: no notifier, no status change */
    ck_assert(mig_vm_running(vm));

    ck_assert_int_eq(cpr_set_mode(vm->ctx, CPR_MODE_CPR_REBOOT, NULL), 0);
    ck_assert_int_eq(cpr_migrate_uri(vm->ctx, u, 0, NULL), 0);
    ck_assert_int_eq(query(vm->ctx).status, CPR_MIGRATION_COMPLETED);
    ck_assert_int_eq(cpr_migrate_runstate(vm->ctx), CPR_RUNSTATE_POSTMIGRATE);
    mig_vm_free(vm);
}
END_TEST

START_TEST(test_channel_rules_are_checked_before_anything_starts)
{
    struct mig_vm *vm = running_vm();
    ck_assert_int_eq(cpr_set_mode(vm->ctx, CPR_MODE_CPR_REBOOT, NULL), 0);
    g_autofree char *u = uri("unix", "main.sock");
    ck_assert_cpr_fails(cpr_migrate_uri(vm->ctx, u, 0, errp_), -EINVAL, "cpr-reboot");
    ck_assert_int_eq(query(vm->ctx).status, CPR_MIGRATION_NONE);
    ck_assert_int_eq(cpr_set_mode(vm->ctx, CPR_MODE_CPR_EXEC, NULL), 0);
    g_autofree char *f = uri("file", "vm.state");
    ck_assert_cpr_fails(cpr_migrate_uri(vm->ctx, f, 0, errp_), -EINVAL, "cpr-exec");
    ck_assert(mig_vm_running(vm));
    mig_vm_free(vm);
}
END_TEST

START_TEST(test_vm_ops_need_their_size)
{
    cpr_ctx *ctx;
    ck_assert_int_eq(cpr_ctx_new(&ctx, 0, NULL), 0);
    cpr_vm_ops ops = { .size = 8 };
    ck_assert_cpr_fails(cpr_migrate_set_vm_ops(ctx, &ops, NULL, errp_), -EINVAL, "size");
    ck_assert_cpr_fails(cpr_migrate_continue(ctx, errp_), -EINVAL, "not pre-switchover");
    ck_assert_int_eq(cpr_migrate_cancel(ctx, NULL), 0); /* nothing to cancel: fine, as QEMU */
    ck_assert_int_eq(cpr_migrate_wait(ctx, NULL), 0);
    cpr_ctx_free(ctx);
}
END_TEST

/* Bytes of memory allocated to a RAM block's memfd. */
static uint64_t ram_allocated(const struct mig_vm *vm)
{
    struct stat st;
    ck_assert_int_eq(fstat(cpr_ram_block_fd(vm->ram), &st), 0);
    return (uint64_t)st.st_blocks * 512;
}

START_TEST(test_snapshot_to_file_restores_into_a_new_vm)
{
    struct mig_vm *src = running_vm();
    g_autofree char *u = uri("file", "snap");
    g_autofree char *p = path("snap");
    uint64_t allocated = ram_allocated(src);
    ck_assert_int_eq(cpr_migrate_uri(src->ctx, u, 0, NULL), 0);
    /* Never-written memory was sent as zero pages without being read, so not allocated. */
    ck_assert_uint_eq(ram_allocated(src), allocated);
    cpr_migration_info i = query(src->ctx);
    ck_assert_int_eq(i.status, CPR_MIGRATION_COMPLETED);
    ck_assert_int_eq(i.runstate, CPR_RUNSTATE_POSTMIGRATE);
    ck_assert(!mig_vm_running(src));
    g_autofree char *log = mig_vm_log(src);
    assert_in_order(log, "notify:setup status:setup status:active vm:stop status:device vm:flush "
                         "status:completed notify:done");
    ck_assert_ptr_null(strstr(log, "notify:failed"));
    /* Every byte the stream counted is in the file, and nothing else. */
    ck_assert_uint_eq(i.transferred, file_size(p));
    ck_assert_uint_eq(i.total, RAM);
    ck_assert_uint_gt(i.duplicate, 0);                  /* the untouched half: no data */
    ck_assert_uint_ge(i.normal, RAM / 2 / 4096);       /* the written half, at least once */
    /* Zero pages cost no page data: beyond the pages sent with data, only framing. */
    ck_assert_uint_eq(i.normal_bytes, i.normal * 4096);
    ck_assert_uint_lt(i.transferred, i.normal_bytes + 64 * 1024);
    ck_assert_int_ge(i.downtime_ms, 0);
    ck_assert_int_ge(i.total_time_ms, i.downtime_ms);
    char *json;
    ck_assert_int_eq(cpr_migrate_query_json(src->ctx, &json, NULL), 0);
    ck_assert_ptr_nonnull(strstr(json, "\"status\":\"completed\""));
    ck_assert_ptr_nonnull(strstr(json, "\"downtime\":"));
    ck_assert_ptr_nonnull(strstr(json, "\"normal-bytes\":"));
    cpr_free(json);

    struct mig_vm *dst = mig_vm_new(RAM, NULL, 0);
    ck_assert_ptr_nonnull(dst);
    ck_assert_int_eq(cpr_incoming_defer(dst->ctx, NULL), 0);
    ck_assert_int_eq(cpr_migrate_runstate(dst->ctx), CPR_RUNSTATE_INMIGRATE);
    g_autofree char *elsewhere = uri("file", "other");
    ck_assert_cpr_fails(cpr_migrate_uri(dst->ctx, elsewhere, 0, errp_), -EBUSY, "inmigrate");
    ck_assert_int_eq(cpr_incoming_start_uri(dst->ctx, u, CPR_INCOMING_PAUSED, NULL), 0);
    ck_assert_int_eq(cpr_migrate_runstate(dst->ctx), CPR_RUNSTATE_PAUSED);
    ck_assert_int_eq(query(dst->ctx).transferred, file_size(p));
    ck_assert_uint_le(ram_allocated(dst), allocated); /* zero pages were not written either */
    g_autofree char *a = mig_vm_ram_digest(src);
    g_autofree char *b = mig_vm_ram_digest(dst);
    ck_assert_str_eq(a, b);
    ck_assert_uint_eq(mig_vm_corrupt_pages(dst), 0);
    ck_assert_int_eq(dst->post_loads, 1);
    ck_assert_uint_eq(dst->dev.heartbeat, src->dev.heartbeat);
    mig_vm_start(dst);
    ck_assert_int_eq(cpr_migrate_runstate(dst->ctx), CPR_RUNSTATE_RUNNING);
    /* The source's `cont` after a completed migration leaves postmigrate. */
    mig_vm_start(src);
    ck_assert_int_eq(cpr_migrate_runstate(src->ctx), CPR_RUNSTATE_RUNNING);
    mig_vm_free(dst);
    mig_vm_free(src);
}
END_TEST

/* Whether ctx's trace holds the step `name`. */
static int traced(cpr_ctx *ctx, const char *name)
{
    int n = cpr_trace_count(ctx, NULL);
    for (int i = 0; i < n; i++) {
        cpr_trace_step st;
        cpr_trace_step_init(&st);
        if (cpr_trace_get(ctx, (size_t)i, &st, NULL) == 0 && strcmp(st.name, name) == 0)
            return 1;
    }
    return 0;
}

START_TEST(test_live_migration_over_unix_socket_converges_and_matches)
{
    struct mig_vm *src = running_vm();
    mig_vm_set_rate(src, 32); /* keep pages dirty while it runs */
    struct mig_vm *dst = mig_vm_new(RAM, NULL, 0);
    ck_assert_ptr_nonnull(dst);
    g_autofree char *u = uri("unix", "main.sock");
    ck_assert_int_eq(cpr_incoming_start_uri(dst->ctx, u, CPR_INCOMING_DETACH | CPR_INCOMING_PAUSED, NULL), 0);
    ck_assert_int_eq(cpr_migrate_runstate(dst->ctx), CPR_RUNSTATE_INMIGRATE);
    ck_assert_int_eq(cpr_migrate_uri(src->ctx, u, 0, NULL), 0);
    ck_assert_int_eq(cpr_migrate_wait(dst->ctx, NULL), 0);
    cpr_migration_info si = query(src->ctx), di = query(dst->ctx);
    ck_assert_int_eq(si.status, CPR_MIGRATION_COMPLETED);
    ck_assert_int_eq(di.status, CPR_MIGRATION_COMPLETED);
    ck_assert_int_eq(si.runstate, CPR_RUNSTATE_POSTMIGRATE);
    ck_assert_int_eq(di.runstate, CPR_RUNSTATE_PAUSED);
    /* What one side wrote is what the other read. */
    ck_assert_uint_eq(si.transferred, di.transferred);
    ck_assert_uint_eq(si.transferred, si.precopy_bytes + si.downtime_bytes);
    ck_assert_uint_ge(si.dirty_sync_count, 2); /* the first pass and the one after the stop */
    /* The destination offered to acknowledge the passes of the single stream (the source
     * asked in the config), so no pass was taken as sent while in socket buffers. */
    ck_assert(traced(src->ctx, "pass-acks-on"));
    g_autofree char *a = mig_vm_ram_digest(src);
    g_autofree char *b = mig_vm_ram_digest(dst);
    ck_assert_str_eq(a, b);
    ck_assert_uint_eq(mig_vm_corrupt_pages(dst), 0);
    ck_assert_uint_eq(dst->dev.heartbeat, src->dev.heartbeat);
    ck_assert_int_eq(src->stops, 1);
    ck_assert_int_eq(src->starts, 1); /* the test's own start only: never resumed */
    mig_vm_free(dst);
    mig_vm_free(src);
}
END_TEST

/* ---- a VMM's own progressive section (say, a disk) beside RAM ---- */

#define BLK_BYTES (4u << 20)
#define BLK_PART (32u << 10)

/* Sends `total` bytes of a pattern, BLK_PART per iterate(); counts what went out with the
 * guest stopped. Loads: checks the pattern and counts. */
struct blk {
    struct mig_vm *vm;
    uint64_t total, sent, sent_stopped, loaded;
    int bad;
};

static uint8_t blk_byte(uint64_t off)
{
    return (uint8_t)(off * 7 + (off >> 9));
}

static int blk_put(cpr_stream *s, struct blk *b, uint64_t n, cpr_error **errp)
{
    uint8_t buf[4096];
    for (uint64_t done = 0; done < n;) {
        size_t len = (size_t)MIN(sizeof(buf), n - done);
        for (size_t i = 0; i < len; i++)
            buf[i] = blk_byte(b->sent + done + i);
        int ret = cpr_stream_put_bytes(s, buf, len, errp);
        if (ret < 0)
            return ret;
        done += len;
    }
    b->sent += n;
    if (!mig_vm_running(b->vm))
        b->sent_stopped += n;
    return 0;
}

static int blk_setup(cpr_stream *s, void *opaque, cpr_error **errp)
{
    return 0;
}

static int blk_iterate(cpr_stream *s, uint64_t *pending, void *opaque, cpr_error **errp)
{
    struct blk *b = opaque;
    int ret = blk_put(s, b, MIN(BLK_PART, b->total - b->sent), errp);
    *pending = b->total - b->sent;
    return ret < 0 ? ret : b->sent == b->total;
}

static int blk_complete(cpr_stream *s, void *opaque, cpr_error **errp)
{
    struct blk *b = opaque;
    return blk_put(s, b, b->total - b->sent, errp);
}

static int blk_load(cpr_stream *s, uint32_t version, int phase, void *opaque, cpr_error **errp)
{
    struct blk *b = opaque;
    uint8_t c;
    while (cpr_stream_remaining(s)) {
        int ret = cpr_stream_get_bytes(s, &c, 1, errp);
        if (ret < 0)
            return ret;
        b->bad |= c != blk_byte(b->loaded++);
    }
    return 0;
}

static uint64_t blk_pending(void *opaque)
{
    struct blk *b = opaque;
    return b->total - b->sent;
}

static const cpr_live_ops blk_ops = { .size = sizeof(cpr_live_ops), .setup = blk_setup,
                                      .iterate = blk_iterate, .complete = blk_complete,
                                      .load = blk_load, .pending = blk_pending };

/* Registers "blk" of `total` bytes on both sides; 64 MB/s and a 10 ms limit on the source
 * leave about 640 KB for the stop, less than the section holds. */
static void blk_pair(struct mig_vm *src, struct mig_vm *dst, struct blk *out, struct blk *in, uint64_t total)
{
    *out = (struct blk){ .vm = src, .total = total };
    *in = (struct blk){ .vm = dst, .total = total };
    ck_assert_int_eq(cpr_savevm_register_live(src->ctx, "blk", 0, 1, 1, &blk_ops, out, 0, NULL, NULL), 0);
    ck_assert_int_eq(cpr_savevm_register_live(dst->ctx, "blk", 0, 1, 1, &blk_ops, in, 0, NULL, NULL), 0);
    ck_assert_int_eq(cpr_param_set(src->ctx, "max-bandwidth", "64000000", NULL), 0);
    ck_assert_int_eq(cpr_param_set(src->ctx, "downtime-limit", "10", NULL), 0);
}

/* Everything arrived intact; returns how much of it went with the guest stopped. */
static uint64_t blk_check(const struct blk *out, const struct blk *in)
{
    ck_assert_uint_eq(out->sent, out->total);
    ck_assert_uint_eq(in->loaded, out->total);
    ck_assert_int_eq(in->bad, 0);
    return out->sent_stopped;
}

/* Most of the section went while the guest ran: at most the limit's worth (64 MB/s x 10 ms). */
static void assert_sent_live(uint64_t stopped)
{
    ck_assert_msg(stopped <= 640000, "%" PRIu64 " of the section's bytes were sent with the guest stopped", stopped);
}

START_TEST(test_live_migration_converges_every_progressive_section_not_only_ram)
{
    struct mig_vm *src = running_vm();
    mig_vm_set_rate(src, 0); /* RAM: one pass and nothing more to send */
    struct mig_vm *dst = mig_vm_new(RAM, NULL, 0);
    ck_assert_ptr_nonnull(dst);
    struct blk out, in;
    blk_pair(src, dst, &out, &in, BLK_BYTES);
    g_autofree char *u = uri("unix", "main.sock");
    ck_assert_int_eq(cpr_incoming_start_uri(dst->ctx, u, CPR_INCOMING_DETACH | CPR_INCOMING_PAUSED, NULL), 0);
    ck_assert_int_eq(cpr_migrate_uri(src->ctx, u, 0, NULL), 0);
    ck_assert_int_eq(cpr_migrate_wait(dst->ctx, NULL), 0);
    ck_assert_int_eq(query(src->ctx).status, CPR_MIGRATION_COMPLETED);
    assert_sent_live(blk_check(&out, &in));
    mig_vm_free(dst);
    mig_vm_free(src);
}
END_TEST

START_TEST(test_disk_full_fails_and_the_guest_runs_again)
{
    struct mig_vm *src = running_vm();
    ck_assert_int_eq(cpr_set_mode(src->ctx, CPR_MODE_CPR_REBOOT, NULL), 0);
    ck_assert_cpr_fails(cpr_migrate_uri(src->ctx, "file:/dev/full", 0, errp_), -ENOSPC, "No space");
    cpr_migration_info i = query(src->ctx);
    ck_assert_int_eq(i.status, CPR_MIGRATION_FAILED);
    ck_assert_int_eq(i.runstate, CPR_RUNSTATE_RUNNING);
    ck_assert(mig_vm_running(src));
    g_autofree char *log = mig_vm_log(src);
    assert_in_order(log, "notify:setup status:setup vm:stop vm:start status:failed notify:failed");
    ck_assert_ptr_null(strstr(log, "notify:done"));
    g_autofree char *desc = cpr_migrate_error_desc(src->ctx);
    ck_assert_ptr_nonnull(strstr(desc, "No space"));
    char *json;
    ck_assert_int_eq(cpr_migrate_query_json(src->ctx, &json, NULL), 0);
    ck_assert_ptr_nonnull(strstr(json, "\"status\":\"failed\""));
    ck_assert_ptr_nonnull(strstr(json, "\"error-desc\":"));
    cpr_free(json);
    /* A failed migration may be retried. */
    g_autofree char *u = uri("file", "retry");
    ck_assert_int_eq(cpr_migrate_uri(src->ctx, u, 0, NULL), 0);
    mig_vm_free(src);
}
END_TEST

START_TEST(test_refused_connection_fails_without_stopping_the_guest)
{
    struct mig_vm *src = running_vm();
    g_autofree char *u = uri("unix", "nobody.sock");
    ck_assert_cpr_fails(cpr_migrate_uri(src->ctx, u, 0, errp_), -ENOENT, "nobody.sock");
    /* The main channel's error names the main channel, not the cpr channel (it once did). */
    ck_assert_cpr_fails(cpr_migrate_uri(src->ctx, u, 0, errp_), -ENOENT, "main channel: cannot connect to unix:");
    cpr_error *err = NULL;
    ck_assert_int_lt(cpr_migrate_uri(src->ctx, u, 0, &err), 0);
    ck_assert_ptr_null(strstr(cpr_error_message(err), "cpr channel"));
    cpr_error_free(err);
    ck_assert_int_eq(query(src->ctx).status, CPR_MIGRATION_FAILED);
    ck_assert(mig_vm_running(src));
    ck_assert_int_eq(src->stops, 0);
    ck_assert_cpr_fails(cpr_migrate_uri(src->ctx, "tcp:127.0.0.1:1", 0, errp_), -ECONNREFUSED, "tcp:127.0.0.1:1");
    ck_assert(mig_vm_running(src));
    g_autofree char *log = mig_vm_log(src);
    assert_in_order(log, "notify:setup status:failed notify:failed notify:setup status:failed notify:failed");
    mig_vm_free(src);
}
END_TEST

START_TEST(test_flush_failure_fails_and_resumes)
{
    struct mig_vm *src = running_vm();
    src->fail_flush = -EIO;
    g_autofree char *u = uri("file", "snap");
    ck_assert_cpr_fails(cpr_migrate_uri(src->ctx, u, 0, errp_), -EIO, "flush");
    ck_assert(mig_vm_running(src));
    ck_assert_int_eq(cpr_migrate_runstate(src->ctx), CPR_RUNSTATE_RUNNING);
    mig_vm_free(src);
}
END_TEST

static int veto(cpr_ctx *ctx, cpr_event event, cpr_mode mode, cpr_error **errp, void *opaque)
{
    if (event != CPR_EVENT_SETUP)
        return 0;
    return cpr_error_set(errp, -EPERM, "device d0 refuses to migrate");
}

START_TEST(test_setup_veto_stops_the_migration)
{
    struct mig_vm *src = running_vm();
    cpr_notifier *n;
    ck_assert_int_eq(cpr_notifier_add(src->ctx, CPR_MODES_ALL, veto, NULL, &n, NULL), 0);
    g_autofree char *u = uri("file", "snap");
    ck_assert_cpr_fails(cpr_migrate_uri(src->ctx, u, 0, errp_), -EPERM, "device d0 refuses");
    ck_assert(mig_vm_running(src));
    ck_assert_int_eq(src->stops, 0);
    g_autofree char *log = mig_vm_log(src);
    assert_in_order(log, "notify:setup notify:failed");
    ck_assert_int_ne(query(src->ctx).status, CPR_MIGRATION_COMPLETED);
    cpr_notifier_del(src->ctx, n);
    mig_vm_free(src);
}
END_TEST

START_TEST(test_cancel_in_pre_switchover_resumes_and_destination_loads_nothing)
{
    struct mig_vm *src = running_vm();
    struct mig_vm *dst = mig_vm_new(RAM, NULL, 0);
    ck_assert_ptr_nonnull(dst);
    ck_assert_int_eq(cpr_cap_set(src->ctx, "pause-before-switchover", 1, NULL), 0);
    g_autofree char *u = uri("unix", "main.sock");
    ck_assert_int_eq(cpr_incoming_start_uri(dst->ctx, u, CPR_INCOMING_DETACH, NULL), 0);
    ck_assert_int_eq(cpr_migrate_uri(src->ctx, u, CPR_MIGRATE_DETACH, NULL), 0);
    ck_assert(wait_status(src->ctx, CPR_MIGRATION_PRE_SWITCHOVER));
    ck_assert_int_eq(cpr_migrate_runstate(src->ctx), CPR_RUNSTATE_FINISH_MIGRATE);
    ck_assert(!mig_vm_running(src));
    ck_assert_cpr_fails(cpr_param_set(src->ctx, "downtime-limit", "10", errp_), -EBUSY, "under way");
    ck_assert_int_eq(cpr_migrate_cancel(src->ctx, NULL), 0);
    ck_assert_cpr_fails(cpr_migrate_wait(src->ctx, errp_), -ECANCELED, "cancel");
    ck_assert_int_eq(query(src->ctx).status, CPR_MIGRATION_CANCELLED);
    ck_assert(mig_vm_running(src));
    ck_assert_int_eq(cpr_migrate_runstate(src->ctx), CPR_RUNSTATE_RUNNING);
    g_autofree char *log = mig_vm_log(src);
    assert_in_order(log, "status:pre-switchover status:cancelling vm:start status:cancelled notify:failed");
    ck_assert_int_lt(cpr_migrate_wait(dst->ctx, NULL), 0);
    ck_assert_int_eq(query(dst->ctx).status, CPR_MIGRATION_FAILED);
    ck_assert_int_eq(cpr_migrate_runstate(dst->ctx), CPR_RUNSTATE_INMIGRATE);
    ck_assert(!mig_vm_running(dst));
    ck_assert_int_eq(dst->post_loads, 0);
    mig_vm_free(dst);
    mig_vm_free(src);
}
END_TEST

START_TEST(test_continue_from_pre_switchover_completes)
{
    struct mig_vm *src = running_vm();
    ck_assert_int_eq(cpr_cap_set(src->ctx, "pause-before-switchover", 1, NULL), 0);
    g_autofree char *u = uri("file", "snap");
    ck_assert_int_eq(cpr_migrate_uri(src->ctx, u, CPR_MIGRATE_DETACH, NULL), 0);
    ck_assert(wait_status(src->ctx, CPR_MIGRATION_PRE_SWITCHOVER));
    ck_assert_int_eq(cpr_migrate_continue(src->ctx, NULL), 0);
    ck_assert_int_eq(cpr_migrate_wait(src->ctx, NULL), 0);
    g_autofree char *log = mig_vm_log(src);
    assert_in_order(log, "vm:stop status:pre-switchover status:device vm:flush status:completed");
    mig_vm_free(src);
}
END_TEST

/* A running VM whose snapshot to file:snap is under way, throttled to 1 MB/s for 4 MiB of
 * data: it is still running when the test acts on it. */
static struct mig_vm *throttled_snapshot(void)
{
    struct mig_vm *src = running_vm();
    ck_assert_int_eq(cpr_param_set(src->ctx, "max-bandwidth", "1000000", NULL), 0);
    g_autofree char *u = uri("file", "snap");
    ck_assert_int_eq(cpr_migrate_uri(src->ctx, u, CPR_MIGRATE_DETACH, NULL), 0);
    ck_assert(wait_status(src->ctx, CPR_MIGRATION_ACTIVE));
    return src;
}

START_TEST(test_cancel_while_active_never_stops_the_guest)
{
    struct mig_vm *src = throttled_snapshot();
    g_autofree char *u = uri("file", "snap");
    ck_assert_cpr_fails(cpr_migrate_uri(src->ctx, u, 0, errp_), -EBUSY, "already running");
    ck_assert_int_eq(cpr_migrate_cancel(src->ctx, NULL), 0);
    ck_assert_int_eq(cpr_migrate_wait(src->ctx, NULL), -ECANCELED);
    ck_assert_int_eq(src->stops, 0);
    ck_assert(mig_vm_running(src));
    cpr_migration_info i = query(src->ctx);
    ck_assert_int_eq(i.status, CPR_MIGRATION_CANCELLED);
    ck_assert_uint_lt(i.transferred, RAM / 2); /* it really was throttled */
    mig_vm_free(src);
}
END_TEST

/* Combinations postcopy does not support yet are refused before anything starts, naming both. */
START_TEST(test_postcopy_refuses_multifd_before_starting)
{
    struct mig_vm *src = running_vm();
    ck_assert_int_eq(cpr_cap_set(src->ctx, "postcopy-ram", 1, NULL), 0);
    ck_assert_int_eq(cpr_cap_set(src->ctx, "multifd", 1, NULL), 0);
    g_autofree char *u = uri("unix", "pc.sock");
    ck_assert_cpr_fails(cpr_migrate_uri(src->ctx, u, CPR_MIGRATE_DETACH, errp_), -ENOTSUP,
                        "postcopy-ram with capability multifd");
    ck_assert_int_eq(src->stops, 0);
    ck_assert(mig_vm_running(src));
    mig_vm_free(src);
}
END_TEST

/* cpr_ctx_free() under a running job stops the job before any state it uses goes: its last
 * steps still mark the trace (ASan saw them land in a freed trace ring). */
START_TEST(test_context_freed_under_a_running_job_stops_the_job_first)
{
    struct mig_vm *src = throttled_snapshot();
    ck_assert_int_eq(cpr_trace_mark(src->ctx, "vmm-step"), 0); /* the trace exists meanwhile */
    mig_vm_free(src); /* frees the context: cancels and joins the job first */
}
END_TEST

START_TEST(test_cpr_reboot_with_ignore_shared_writes_no_ram)
{
    g_autofree char *ram = path("ram");
    struct mig_vm *src = running_vm_on(ram);
    ck_assert_int_eq(cpr_set_mode(src->ctx, CPR_MODE_CPR_REBOOT, NULL), 0);
    ck_assert_int_eq(cpr_cap_set(src->ctx, "x-ignore-shared", 1, NULL), 0);
    g_autofree char *u = uri("file", "vm.state");
    g_autofree char *p = path("vm.state");
    ck_assert_int_eq(cpr_migrate_uri(src->ctx, u, 0, NULL), 0);
    cpr_migration_info i = query(src->ctx);
    ck_assert_int_eq(i.runstate, CPR_RUNSTATE_POSTMIGRATE);
    ck_assert_uint_eq(i.normal, 0);
    ck_assert_uint_eq(i.total, 0);
    ck_assert_uint_lt(file_size(p), 64 * 1024); /* device state only */
    ck_assert_uint_eq(i.transferred, file_size(p));
    g_autofree char *digest = mig_vm_ram_digest(src);
    uint64_t heartbeat = src->dev.heartbeat;
    mig_vm_free(src); /* quit */

    struct mig_vm *dst = mig_vm_new(RAM, ram, 0);
    ck_assert_ptr_nonnull(dst);
    ck_assert_int_eq(cpr_set_mode(dst->ctx, CPR_MODE_CPR_REBOOT, NULL), 0);
    ck_assert_int_eq(cpr_cap_set(dst->ctx, "x-ignore-shared", 1, NULL), 0);
    ck_assert_int_eq(cpr_incoming_defer(dst->ctx, NULL), 0);
    ck_assert_int_eq(cpr_incoming_start_uri(dst->ctx, u, CPR_INCOMING_PAUSED, NULL), 0);
    ck_assert_uint_eq(dst->dev.heartbeat, heartbeat);
    g_autofree char *after = mig_vm_ram_digest(dst);
    ck_assert_str_eq(after, digest);
    /* RAM came from the file, not the stream. Checked while paused: a page the running guest
     * is rewriting reads torn. */
    ck_assert_uint_eq(mig_vm_corrupt_pages(dst), 0);
    mig_vm_start(dst);
    ck_assert_int_eq(cpr_migrate_runstate(dst->ctx), CPR_RUNSTATE_RUNNING);
    ck_assert_int_eq(dst->post_loads, 1);
    mig_vm_free(dst);
}
END_TEST

START_TEST(test_cpr_reboot_without_ignore_shared_writes_ram)
{
    g_autofree char *ram = path("ram");
    struct mig_vm *src = running_vm_on(ram);
    ck_assert_int_eq(cpr_set_mode(src->ctx, CPR_MODE_CPR_REBOOT, NULL), 0);
    g_autofree char *u = uri("file", "vm.state");
    ck_assert_int_eq(cpr_migrate_uri(src->ctx, u, 0, NULL), 0);
    cpr_migration_info i = query(src->ctx);
    ck_assert_uint_eq(i.total, RAM);
    ck_assert_uint_eq(i.normal, RAM / 2 / 4096); /* the guest was stopped first: one pass */
    ck_assert_uint_eq(i.dirty_sync_count, 2);
    mig_vm_free(src);
}
END_TEST

/* docs/format.md: the RAM layout travels in the ram section's block table (not in the config
 * record), in every stream cpr_migrate_* writes, a snapshot too; a loader whose block differs
 * refuses it, naming the block and both sizes. */
START_TEST(test_snapshot_carries_the_ram_layout_in_its_ram_section)
{
    struct mig_vm *src = running_vm();
    g_autofree char *u = uri("file", "snap");
    ck_assert_int_eq(cpr_migrate_uri(src->ctx, u, 0, NULL), 0);
    struct mig_vm *dst = mig_vm_new(2 * RAM, NULL, 0);
    ck_assert_ptr_nonnull(dst);
    g_autofree char *want = g_strdup_printf("RAM block '%s' is %llu bytes in the stream but %llu here",
                                            MIG_VM_RAM_NAME, (unsigned long long)RAM,
                                            (unsigned long long)(2 * RAM));
    ck_assert_cpr_fails(cpr_incoming_start_uri(dst->ctx, u, CPR_INCOMING_PAUSED, errp_), -EINVAL, want);
    ck_assert_int_eq(dst->post_loads, 0);
    mig_vm_free(dst);
    mig_vm_free(src);
}
END_TEST

/* Runs fn(arg) as the new VMM's start-up, and returns once it listens on its cpr socket. */
static GThread *start_new_vmm(GThreadFunc fn, void *arg)
{
    GThread *th = g_thread_new("new-vmm", fn, arg);
    g_autofree char *cpr_sock = path("cpr.sock");
    ck_assert(mig_wait_listening(cpr_sock));
    return th;
}

struct transfer_dst {
    struct mig_vm *vm;
    cpr_channels *channels;
    int mode;
    int ret;
};

static gpointer transfer_destination(gpointer p)
{
    struct transfer_dst *t = p;
    /* A new VMM: cpr state first, then its RAM and devices, then main. */
    t->mode = cpr_incoming_cpr_load(t->vm->ctx, t->channels, NULL);
    if (t->mode < 0 || mig_vm_add_ram(t->vm, RAM, NULL) < 0) {
        t->ret = -1;
        return NULL;
    }
    t->ret = cpr_incoming_start(t->vm->ctx, t->channels, CPR_INCOMING_DETACH | CPR_INCOMING_PAUSED, NULL);
    return NULL;
}

/* A cpr-transfer from src to dst (made with MIG_VM_NO_RAM), the new VMM on a thread, until dst
 * has loaded; returns the channels (the caller frees them). */
static cpr_channels *transfer_in_process(struct mig_vm *src, struct mig_vm *dst)
{
    cpr_channels *ch = transfer_channels();
    struct transfer_dst t = { .vm = dst, .channels = ch };
    GThread *th = start_new_vmm(transfer_destination, &t);
    ck_assert_int_eq(cpr_set_mode(src->ctx, CPR_MODE_CPR_TRANSFER, NULL), 0);
    ck_assert_int_eq(cpr_migrate_channels(src->ctx, ch, 0, NULL), 0);
    g_thread_join(th);
    ck_assert_int_eq(t.mode, CPR_MODE_CPR_TRANSFER);
    ck_assert_int_eq(t.ret, 0);
    ck_assert_int_eq(cpr_migrate_wait(dst->ctx, NULL), 0);
    return ch;
}

START_TEST(test_cpr_transfer_in_process_keeps_ram_in_place)
{
    struct mig_vm *src = running_vm();
    struct mig_vm *dst = mig_vm_new(RAM, NULL, MIG_VM_NO_RAM);
    ck_assert_ptr_nonnull(dst);
    cpr_channels *ch = transfer_in_process(src, dst);
    ck_assert(cpr_ram_block_reattached(dst->ram));
    cpr_migration_info si = query(src->ctx);
    ck_assert_int_eq(si.status, CPR_MIGRATION_COMPLETED);
    ck_assert_int_eq(si.runstate, CPR_RUNSTATE_POSTMIGRATE);
    ck_assert_uint_eq(si.normal, 0);            /* RAM never copied */
    ck_assert_uint_lt(si.transferred, 64 * 1024);
    ck_assert_uint_ge(si.cpr_fds, 1);
    ck_assert_uint_eq(si.transferred, query(dst->ctx).transferred);
    struct stat a, b;
    ck_assert_int_eq(fstat(cpr_ram_block_fd(src->ram), &a), 0);
    ck_assert_int_eq(fstat(cpr_ram_block_fd(dst->ram), &b), 0);
    ck_assert_uint_eq(a.st_ino, b.st_ino);
    ck_assert_uint_eq(dst->dev.heartbeat, src->dev.heartbeat);
    ck_assert_uint_eq(mig_vm_corrupt_pages(dst), 0);
    g_autofree char *log = mig_vm_log(src);
    assert_in_order(log, "notify:setup status:setup status:active vm:stop status:device vm:flush "
                         "status:completed notify:done");
    cpr_channels_free(ch);
    mig_vm_free(dst);
    mig_vm_free(src);
}
END_TEST

START_TEST(test_handed_over_guest_is_never_migrated_or_resumed_again)
{
    /* Issue 25 item 2: a completed cpr-transfer, then a second migration that fails, used to
     * reset the job's mode and run state and so lift the VMM's "do not resume" check. */
    struct mig_vm *src = running_vm();
    struct mig_vm *dst = mig_vm_new(RAM, NULL, MIG_VM_NO_RAM);
    ck_assert_ptr_nonnull(dst);
    cpr_channels *ch = transfer_in_process(src, dst);
    ck_assert_cpr_fails(cpr_migrate_check_resume(src->ctx, errp_), -EPERM, "handed over with its RAM");
    /* A second migration, of any mode to anywhere, is refused before it starts. */
    ck_assert_int_eq(cpr_set_mode(src->ctx, CPR_MODE_NORMAL, NULL), 0);
    g_autofree char *nowhere = uri("unix", "nobody.sock");
    ck_assert_cpr_fails(cpr_migrate_uri(src->ctx, nowhere, 0, errp_), -EPERM, "cannot migrate this VM again");
    g_autofree char *snap = uri("file", "snap");
    ck_assert_cpr_fails(cpr_migrate_uri(src->ctx, snap, 0, errp_), -EPERM, "cpr-transfer, completed");
    ck_assert_int_eq(cpr_set_mode(src->ctx, CPR_MODE_CPR_TRANSFER, NULL), 0);
    ck_assert_cpr_fails(cpr_migrate_channels(src->ctx, ch, 0, errp_), -EPERM, "it runs there");
    ck_assert_int_ne(access(snap + 5, F_OK), 0); /* nothing was written */
    /* Whatever was tried since, resuming stays refused, and the state is untouched. */
    ck_assert_cpr_fails(cpr_migrate_check_resume(src->ctx, errp_), -EPERM, "cannot resume the guest here");
    cpr_migration_info si = query(src->ctx);
    ck_assert_int_eq(si.status, CPR_MIGRATION_COMPLETED);
    ck_assert_int_eq(si.mode, CPR_MODE_CPR_TRANSFER);
    ck_assert_int_eq(si.runstate, CPR_RUNSTATE_POSTMIGRATE);
    ck_assert(!mig_vm_running(src));
    ck_assert_int_eq(cpr_migrate_check_resume(dst->ctx, NULL), 0); /* the new VMM may */
    ck_assert_cpr_fails(cpr_migrate_check_resume(NULL, errp_), -EINVAL, "ctx is NULL");
    cpr_channels_free(ch);
    mig_vm_free(dst);
    mig_vm_free(src);
}
END_TEST

/* A cpr-transfer of a VM with a "blk" section of `total` bytes and, when `rom`, a private RAM
 * block too (which must be sent). Returns the bytes of "blk" sent with the guest stopped. */
static uint64_t cpr_transfer_with_blk(uint64_t total, int rom)
{
    struct mig_vm *src = running_vm();
    struct mig_vm *dst = mig_vm_new(RAM, NULL, MIG_VM_NO_RAM);
    ck_assert_ptr_nonnull(dst);
    struct blk out, in;
    blk_pair(src, dst, &out, &in, total);
    cpr_ram_block *rom_src = NULL, *rom_dst = NULL;
    if (rom) {
        ck_assert_int_eq(cpr_ram_block_new(src->ctx, "rom", 65536, 4096, CPR_RAM_PRIVATE, &rom_src, NULL), 0);
        ck_assert_int_eq(cpr_ram_block_new(dst->ctx, "rom", 65536, 4096, CPR_RAM_PRIVATE, &rom_dst, NULL), 0);
        memset(cpr_ram_block_host(rom_src), 0x5a, 65536);
        cpr_ram_dirty_set_all(rom_src);
    }
    cpr_channels *ch = transfer_in_process(src, dst);
    cpr_migration_info si = query(src->ctx);
    ck_assert_int_eq(si.status, CPR_MIGRATION_COMPLETED);
    ck_assert_uint_eq(si.normal, rom ? 16 : 0); /* shared RAM never copied */
    uint64_t stopped = blk_check(&out, &in);
    if (rom)
        ck_assert_int_eq(memcmp(cpr_ram_block_host(rom_dst), cpr_ram_block_host(rom_src), 65536), 0);
    ck_assert_uint_eq(mig_vm_corrupt_pages(dst), 0);
    cpr_ram_block_free(rom_src);
    cpr_ram_block_free(rom_dst);
    cpr_channels_free(ch);
    mig_vm_free(dst);
    mig_vm_free(src);
    return stopped;
}

/* RAM stays in place, but a VMM's own progressive section goes while the guest runs. */
START_TEST(test_cpr_transfer_sends_other_progressive_sections_live)
{
    assert_sent_live(cpr_transfer_with_blk(BLK_BYTES, 0));
}
END_TEST

/* 1 MiB takes 16 ms at 64 MB/s, but its first parts leave at memory speed: judged by them, it
 * would all fit the 10 ms limit at once. Judged by 100 ms of the link, it never stops early. */
START_TEST(test_cpr_transfer_judges_the_link_by_100_ms_not_by_a_first_part)
{
    assert_sent_live(cpr_transfer_with_blk(1u << 20, 0));
}
END_TEST

/* A private block must be sent, and the cpr modes log no dirty pages: the guest stops first
 * and everything goes after the stop, as before. */
START_TEST(test_cpr_transfer_with_private_ram_stops_first)
{
    ck_assert_uint_eq(cpr_transfer_with_blk(BLK_BYTES, 1), BLK_BYTES);
}
END_TEST

START_TEST(test_exec_and_fd_transports_carry_a_snapshot)
{
    struct mig_vm *src = running_vm();
    g_autofree char *p = path("snap");
    g_autofree char *out = g_strdup_printf("exec:cat > %s", p);
    ck_assert_int_eq(cpr_migrate_uri(src->ctx, out, 0, NULL), 0);
    cpr_migration_info si = query(src->ctx);
    ck_assert_uint_eq(si.transferred, file_size(p));
    g_autofree char *digest = mig_vm_ram_digest(src);

    struct mig_vm *dst = mig_vm_new(RAM, NULL, 0);
    ck_assert_ptr_nonnull(dst);
    g_autofree char *in = g_strdup_printf("exec:cat %s", p);
    ck_assert_int_eq(cpr_incoming_start_uri(dst->ctx, in, CPR_INCOMING_PAUSED, NULL), 0);
    g_autofree char *d1 = mig_vm_ram_digest(dst);
    ck_assert_str_eq(d1, digest);
    mig_vm_free(dst);

    /* fd: over a socketpair — the fds stay the caller's; the ack runs over it too. */
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    mig_vm_start(src);
    dst = mig_vm_new(RAM, NULL, 0);
    g_autofree char *fin = g_strdup_printf("fd:%d", sv[1]);
    g_autofree char *fout = g_strdup_printf("fd:%d", sv[0]);
    ck_assert_int_eq(cpr_incoming_start_uri(dst->ctx, fin, CPR_INCOMING_DETACH | CPR_INCOMING_PAUSED, NULL), 0);
    ck_assert_int_eq(cpr_migrate_uri(src->ctx, fout, 0, NULL), 0);
    ck_assert_int_eq(cpr_migrate_wait(dst->ctx, NULL), 0);
    g_autofree char *a = mig_vm_ram_digest(src);
    g_autofree char *b = mig_vm_ram_digest(dst);
    ck_assert_str_eq(a, b);
    ck_assert_uint_eq(query(src->ctx).transferred, query(dst->ctx).transferred);
    ck_assert_int_eq(fcntl(sv[0], F_GETFD), FD_CLOEXEC);
    close(sv[0]);
    close(sv[1]);
    mig_vm_free(dst);
    mig_vm_free(src);
}
END_TEST

struct hold_dst {
    struct mig_vm *vm;
    cpr_channels *channels;
    int mode;
};

static gpointer load_cpr_state_only(gpointer p)
{
    struct hold_dst *t = p;
    t->mode = cpr_incoming_cpr_load(t->vm->ctx, t->channels, NULL);
    return NULL;
}

START_TEST(test_cancel_while_waiting_for_the_hangup)
{
    struct mig_vm *src = running_vm();
    struct mig_vm *dst = mig_vm_new(RAM, NULL, MIG_VM_NO_RAM);
    ck_assert_ptr_nonnull(dst);
    cpr_channels *ch = transfer_channels();
    struct hold_dst t = { .vm = dst, .channels = ch };
    GThread *th = start_new_vmm(load_cpr_state_only, &t);
    ck_assert_int_eq(cpr_set_mode(src->ctx, CPR_MODE_CPR_TRANSFER, NULL), 0);
    ck_assert_int_eq(cpr_migrate_channels(src->ctx, ch, CPR_MIGRATE_DETACH, NULL), 0);
    g_thread_join(th); /* the new process holds the state and never hangs up */
    ck_assert_int_eq(t.mode, CPR_MODE_CPR_TRANSFER);
    ck_assert(wait_status(src->ctx, CPR_MIGRATION_ACTIVE));
    g_usleep(20 * 1000);
    ck_assert_int_eq(cpr_migrate_cancel(src->ctx, NULL), 0);
    ck_assert_int_eq(cpr_migrate_wait(src->ctx, NULL), -ECANCELED);
    ck_assert_int_eq(src->stops, 0);
    ck_assert(mig_vm_running(src));
    ck_assert_int_eq(cpr_migrate_runstate(src->ctx), CPR_RUNSTATE_RUNNING);
    cpr_channels_free(ch);
    mig_vm_free(dst);
    mig_vm_free(src);
}
END_TEST

/* A tcp port nobody listens on right now. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(sa);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

START_TEST(test_live_migration_over_tcp)
{
    struct mig_vm *src = running_vm();
    struct mig_vm *dst = mig_vm_new(RAM, NULL, 0);
    ck_assert_ptr_nonnull(dst);
    g_autofree char *u = g_strdup_printf("tcp:127.0.0.1:%d", free_port());
    ck_assert_int_eq(cpr_incoming_start_uri(dst->ctx, u, CPR_INCOMING_DETACH | CPR_INCOMING_PAUSED, NULL), 0);
    ck_assert_int_eq(cpr_migrate_uri(src->ctx, u, 0, NULL), 0);
    ck_assert_int_eq(cpr_migrate_wait(dst->ctx, NULL), 0);
    ck_assert_uint_eq(query(src->ctx).transferred, query(dst->ctx).transferred);
    g_autofree char *a = mig_vm_ram_digest(src);
    g_autofree char *b = mig_vm_ram_digest(dst);
    ck_assert_str_eq(a, b);
    mig_vm_free(dst);
    mig_vm_free(src);
}
END_TEST

START_TEST(test_cancel_an_incoming_job_that_waits)
{
    struct mig_vm *dst = mig_vm_new(RAM, NULL, 0);
    ck_assert_ptr_nonnull(dst);
    g_autofree char *u = uri("unix", "main.sock");
    g_autofree char *sock = path("main.sock");
    ck_assert_int_eq(cpr_incoming_start_uri(dst->ctx, u, CPR_INCOMING_DETACH, NULL), 0);
    ck_assert_int_eq(access(sock, F_OK), 0); /* listening when the call returns */
    ck_assert_int_eq(cpr_migrate_cancel(dst->ctx, NULL), 0);
    ck_assert_int_eq(cpr_migrate_wait(dst->ctx, NULL), -ECANCELED);
    ck_assert_int_eq(query(dst->ctx).status, CPR_MIGRATION_CANCELLED);
    ck_assert_int_eq(cpr_migrate_runstate(dst->ctx), CPR_RUNSTATE_INMIGRATE);
    ck_assert(!mig_vm_running(dst));
    ck_assert_int_ne(access(sock, F_OK), 0); /* the listener is gone with its socket file */
    mig_vm_free(dst);
}
END_TEST

static Suite *migrate_suite(void)
{
    Suite *s = suite_create("migrate");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_status_and_runstate_names_are_qemus);
    tcase_add_test(tc, test_query_json_is_empty_before_a_job_and_lists_blockers);
    tcase_add_test(tc, test_recover_and_resume_need_a_paused_postcopy);
    tcase_add_test(tc, test_blocked_migration_changes_nothing_and_normal_only_blocker_spares_cpr_reboot);
    tcase_add_test(tc, test_channel_rules_are_checked_before_anything_starts);
    tcase_add_test(tc, test_vm_ops_need_their_size);
    tcase_add_test(tc, test_snapshot_to_file_restores_into_a_new_vm);
    tcase_add_test(tc, test_live_migration_over_unix_socket_converges_and_matches);
    tcase_add_test(tc, test_live_migration_converges_every_progressive_section_not_only_ram);
    tcase_add_test(tc, test_disk_full_fails_and_the_guest_runs_again);
    tcase_add_test(tc, test_refused_connection_fails_without_stopping_the_guest);
    tcase_add_test(tc, test_flush_failure_fails_and_resumes);
    tcase_add_test(tc, test_setup_veto_stops_the_migration);
    tcase_add_test(tc, test_cancel_in_pre_switchover_resumes_and_destination_loads_nothing);
    tcase_add_test(tc, test_continue_from_pre_switchover_completes);
    tcase_add_test(tc, test_cancel_while_active_never_stops_the_guest);
    tcase_add_test(tc, test_context_freed_under_a_running_job_stops_the_job_first);
    tcase_add_test(tc, test_postcopy_refuses_multifd_before_starting);
    tcase_add_test(tc, test_cpr_reboot_with_ignore_shared_writes_no_ram);
    tcase_add_test(tc, test_cpr_reboot_without_ignore_shared_writes_ram);
    tcase_add_test(tc, test_snapshot_carries_the_ram_layout_in_its_ram_section);
    tcase_add_test(tc, test_cpr_transfer_in_process_keeps_ram_in_place);
    tcase_add_test(tc, test_handed_over_guest_is_never_migrated_or_resumed_again);
    tcase_add_test(tc, test_cpr_transfer_sends_other_progressive_sections_live);
    tcase_add_test(tc, test_cpr_transfer_with_private_ram_stops_first);
    tcase_add_test(tc, test_cpr_transfer_judges_the_link_by_100_ms_not_by_a_first_part);
    tcase_add_test(tc, test_exec_and_fd_transports_carry_a_snapshot);
    tcase_add_test(tc, test_cancel_while_waiting_for_the_hangup);
    tcase_add_test(tc, test_live_migration_over_tcp);
    tcase_add_test(tc, test_cancel_an_incoming_job_that_waits);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(migrate_suite)
