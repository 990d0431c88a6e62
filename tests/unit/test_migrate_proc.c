/* SPDX-License-Identifier: MIT */
/*
 * The migration engine between two real processes (tests/unit/mig_peer.c), per mode, over real
 * UNIX sockets and files: the state machine and notifier order on the source, RAM and device
 * state on the destination, bytes on the wire equal on both sides, and the failures —
 * destination death at each phase, exec failure — that must leave the source guest running.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mig_vm.h"
#include "proc_util.h"
#include "testutil.h"

#ifndef MIG_PEER_PATH
#error "MIG_PEER_PATH must name the mig_peer helper"
#endif

struct peer {
    pid_t pid;
    int out; /* its stdout */
    int in;  /* its stdin */
};

/* A peer that prints nothing for this long is stuck: the test fails instead of hanging. */
#define PEER_SILENCE_MS 30000

static char *dir;

static void setup(void)
{
    dir = proc_tmpdir();
}

static void teardown(void)
{
    proc_rmtree(dir);
    g_free(dir);
}

/* Starts mig_peer with role and NULL-terminated key=value arguments. */
static struct peer spawn(const char *role, ...)
{
    GPtrArray *argv = g_ptr_array_new();
    g_ptr_array_add(argv, (char *)MIG_PEER_PATH);
    g_ptr_array_add(argv, (char *)role);
    va_list ap;
    va_start(ap, role);
    for (const char *a; (a = va_arg(ap, const char *));)
        g_ptr_array_add(argv, (char *)a);
    va_end(ap);
    g_ptr_array_add(argv, NULL);
    int out[2], in[2];
    ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(in, O_CLOEXEC), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(out[1], 1);
        dup2(in[0], 0);
        execv(MIG_PEER_PATH, (char **)argv->pdata);
        _exit(127);
    }
    g_ptr_array_free(argv, TRUE);
    close(out[1]);
    close(in[0]);
    struct peer p = { .pid = pid, .out = out[0], .in = in[1] };
    return p;
}

/* The next line the peer prints, as key=value pairs (words without '=' map to ""). NULL at EOF. */
static GHashTable *next_line(struct peer *p)
{
    char buf[8192];
    size_t len = 0;
    /* Byte by byte, so that nothing is buffered past the line and every wait is bounded. */
    for (;;) {
        struct pollfd pfd = { .fd = p->out, .events = POLLIN };
        int rc = poll(&pfd, 1, PEER_SILENCE_MS);
        if (rc == 0) {
            kill(p->pid, SIGKILL);
            ck_abort_msg("peer %d printed nothing for %d ms", (int)p->pid, PEER_SILENCE_MS);
        }
        char c;
        ssize_t n = read(p->out, &c, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return NULL;
        if (c == '\n')
            break;
        if (len < sizeof(buf) - 1)
            buf[len++] = c;
    }
    buf[len] = '\0';
    GHashTable *kv = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_auto(GStrv) words = g_strsplit(buf, " ", -1);
    for (char **w = words; *w; w++) {
        char *eq = strchr(*w, '=');
        if (eq)
            g_hash_table_insert(kv, g_strndup(*w, (gsize)(eq - *w)), g_strdup(eq + 1));
        else
            g_hash_table_insert(kv, g_strdup(*w), g_strdup(""));
    }
    return kv;
}

/* Reads lines until one has `key`; fails the test at EOF. */
static GHashTable *expect(struct peer *p, const char *key)
{
    GHashTable *kv;
    while ((kv = next_line(p))) {
        if (g_hash_table_contains(kv, key))
            return kv;
        g_hash_table_unref(kv);
    }
    ck_abort_msg("peer %d ended without printing '%s'", (int)p->pid, key);
    return NULL;
}

static int finish(struct peer *p)
{
    close(p->out);
    close(p->in);
    return proc_wait(p->pid);
}

static const char *get(GHashTable *kv, const char *key)
{
    const char *v = g_hash_table_lookup(kv, key);
    ck_assert_msg(v, "no '%s' in report", key);
    return v;
}

static long long num(GHashTable *kv, const char *key)
{
    return g_ascii_strtoll(get(kv, key), NULL, 10);
}

static void assert_in_order(const char *log, const char *order)
{
    g_auto(GStrv) want = g_strsplit(order, ",", -1);
    const char *at = log;
    for (char **w = want; *w; w++) {
        const char *hit = strstr(at, *w);
        ck_assert_msg(hit, "'%s' missing (in order) from log: %s", *w, log);
        at = hit + strlen(*w);
    }
}

static char *arg(const char *key, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static char *arg(const char *key, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *v = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    return g_strdup_printf("%s=%s", key, v);
}

/* Waits until the peer created `name` in the test directory (its listening socket). */
static void wait_path(const char *name)
{
    g_autofree char *p = g_strdup_printf("%s/%s", dir, name);
    ck_assert(mig_wait_listening(p));
}

/* The source's report says it failed and its guest runs on with nothing leaked. */
static void assert_source_survived(GHashTable *s)
{
    ck_assert_int_lt(num(s, "result"), 0);
    ck_assert_str_eq(get(s, "status"), "failed");
    ck_assert_str_eq(get(s, "runstate"), "running");
    ck_assert_int_eq(num(s, "alive"), 1);
    ck_assert_int_eq(num(s, "fds_after"), num(s, "fds_before"));
    assert_in_order(get(s, "log"), "notify:setup,status:setup,status:failed,notify:failed");
    ck_assert_ptr_null(strstr(get(s, "log"), "notify:done"));
}

START_TEST(test_normal_live_migration_between_processes)
{
    g_autofree char *main_ = arg("main", "unix:%s/main.sock", dir);
    struct peer d = spawn("dst", main_, "ramsize=33554432", NULL);
    wait_path("main.sock");
    struct peer s = spawn("src", main_, "rate=64", "ramsize=33554432", NULL);
    g_autoptr(GHashTable) sr = expect(&s, "result");
    g_autoptr(GHashTable) dr = expect(&d, "result");
    ck_assert_int_eq(num(sr, "result"), 0);
    ck_assert_str_eq(get(sr, "status"), "completed");
    ck_assert_str_eq(get(sr, "runstate"), "postmigrate");
    assert_in_order(get(sr, "log"), "notify:setup,status:setup,status:active,vm:stop,status:device,"
                                    "vm:flush,status:completed,notify:done");
    ck_assert_int_eq(num(dr, "result"), 0);
    ck_assert_str_eq(get(dr, "status"), "completed");
    /* Bytes written by one process are bytes read by the other. */
    ck_assert_int_eq(num(sr, "transferred"), num(dr, "transferred"));
    ck_assert_str_eq(get(sr, "digest"), get(dr, "digest"));
    ck_assert_int_eq(num(sr, "heartbeat"), num(dr, "heartbeat"));
    ck_assert_int_eq(num(dr, "corrupt"), 0);
    ck_assert_int_eq(num(dr, "post_loads"), 1);
    ck_assert_int_gt(num(sr, "normal"), 0);
    ck_assert_int_gt(num(sr, "duplicate"), 0);
    g_autoptr(GHashTable) run = expect(&d, "alive");
    ck_assert_int_eq(num(run, "alive"), 1);
    ck_assert_str_eq(get(run, "runstate"), "running");
    ck_assert_int_eq(finish(&s), 0);
    ck_assert_int_eq(finish(&d), 0);
}
END_TEST

/* A cpr-reboot save with x-ignore-shared of a VM whose RAM is the file `ram`, then its quit;
 * returns the source's report. */
static GHashTable *reboot_save(const char *ram, const char *main_)
{
    struct peer s = spawn("src", "mode=cpr-reboot", "ignore-shared=1", ram, main_, NULL);
    GHashTable *sr = expect(&s, "result");
    ck_assert_int_eq(num(sr, "result"), 0);
    ck_assert_int_eq(finish(&s), 0); /* quit */
    return sr;
}

/* A restart of the save `sr` made: it loads, its RAM is the saved RAM, and its guest runs. */
static void reboot_restart_runs(const char *ram, const char *main_, GHashTable *sr)
{
    struct peer d = spawn("dst", "mode=cpr-reboot", "ignore-shared=1", ram, main_, NULL);
    g_autoptr(GHashTable) dr = expect(&d, "result");
    ck_assert_int_eq(num(dr, "result"), 0);
    ck_assert_str_eq(get(sr, "digest"), get(dr, "digest"));
    ck_assert_int_eq(num(sr, "heartbeat"), num(dr, "heartbeat"));
    ck_assert_int_eq(num(sr, "transferred"), num(dr, "transferred"));
    ck_assert_int_eq(num(dr, "corrupt"), 0);
    g_autoptr(GHashTable) run = expect(&d, "alive");
    ck_assert_int_eq(num(run, "alive"), 1);
    ck_assert_int_eq(finish(&d), 0);
}

START_TEST(test_cpr_reboot_between_processes_keeps_ram_in_its_file)
{
    g_autofree char *ram = arg("ram", "%s/ram", dir);
    g_autofree char *main_ = arg("main", "file:%s/vm.state", dir);
    g_autoptr(GHashTable) sr = reboot_save(ram, main_);
    ck_assert_str_eq(get(sr, "runstate"), "postmigrate");
    ck_assert_int_eq(num(sr, "normal"), 0);
    assert_in_order(get(sr, "log"), "notify:setup,status:setup,vm:stop,status:device,vm:flush,"
                                    "status:completed,notify:done");
    reboot_restart_runs(ram, main_, sr);
}
END_TEST

/* Starts a cpr-transfer destination and waits until it listens on its cpr socket. */
static struct peer transfer_dst(const char *main_, const char *cpr, const char *die)
{
    struct peer d = spawn("dst", main_, cpr, die, NULL);
    wait_path("cpr.sock");
    return d;
}

/* The destination's steps came in `order` (its acknowledgement among them), the source
 * completed on that acknowledgement (not on the commit signal alone), and the guest runs. */
static void assert_acknowledged_then_runs(struct peer *d, struct peer *s, GHashTable *sr, GHashTable *dr,
                                          const char *order)
{
    assert_in_order(get(dr, "trace"), order);
    ck_assert_ptr_null(strstr(get(sr, "trace"), "commit-signal-read"));
    g_autoptr(GHashTable) run = expect(d, "alive");
    ck_assert_int_eq(num(run, "alive"), 1);
    ck_assert_int_eq(finish(s), 0);
    ck_assert_int_eq(finish(d), 0);
}

START_TEST(test_cpr_transfer_between_processes_shares_the_memfd)
{
    g_autofree char *main_ = arg("main", "unix:%s/main.sock", dir);
    g_autofree char *cpr = arg("cpr", "%s/cpr.sock", dir);
    struct peer d = transfer_dst(main_, cpr, NULL);
    struct peer s = spawn("src", "mode=cpr-transfer", main_, cpr, NULL);
    g_autoptr(GHashTable) loaded = expect(&d, "cpr-loaded");
    ck_assert_str_eq(get(loaded, "mode"), "cpr-transfer");
    g_autoptr(GHashTable) sr = expect(&s, "result");
    g_autoptr(GHashTable) dr = expect(&d, "result");
    ck_assert_int_eq(num(sr, "result"), 0);
    ck_assert_str_eq(get(sr, "runstate"), "postmigrate");
    assert_in_order(get(sr, "log"), "notify:setup,status:setup,status:active,vm:stop,status:device,"
                                    "vm:flush,status:completed,notify:done");
    ck_assert_int_eq(num(sr, "normal"), 0); /* no RAM page on main */
    ck_assert_int_lt(num(sr, "transferred"), 65536);
    ck_assert_int_ge(num(sr, "cpr_fds"), 1);
    ck_assert_int_eq(num(sr, "transferred"), num(dr, "transferred"));
    ck_assert_int_eq(num(dr, "result"), 0);
    ck_assert_int_eq(num(dr, "reattached"), 1);
    ck_assert_str_eq(get(sr, "ino"), get(dr, "ino")); /* the same memfd */
    ck_assert_str_eq(get(sr, "digest"), get(dr, "digest"));
    ck_assert_int_eq(num(sr, "heartbeat"), num(dr, "heartbeat"));
    ck_assert_int_eq(num(dr, "corrupt"), 0);
    /* The commit signal: committed, then the guest's start, then the acknowledgement. */
    assert_acknowledged_then_runs(&d, &s, sr, dr, "state-loaded,prepared,committed,started,ack-sent");
}
END_TEST

/* The source past its point of no return: completed, postmigrate, its guest never resumed. */
static void assert_source_gave_up_guest(GHashTable *sr)
{
    ck_assert_int_eq(num(sr, "result"), 0);
    ck_assert_str_eq(get(sr, "status"), "completed");
    ck_assert_str_eq(get(sr, "runstate"), "postmigrate");
    ck_assert_ptr_null(strstr(get(sr, "log"), "vm:start"));
}

/* A cpr-transfer whose destination (dst_opt, e.g. "die=in-start") starts the guest itself. */
static void autostart_transfer(const char *dst_opt, struct peer *d, struct peer *s)
{
    g_autofree char *main_ = arg("main", "unix:%s/main.sock", dir);
    g_autofree char *cpr = arg("cpr", "%s/cpr.sock", dir);
    *d = spawn("dst", main_, cpr, dst_opt, "autostart=1", NULL);
    wait_path("cpr.sock");
    *s = spawn("src", "mode=cpr-transfer", main_, cpr, NULL);
}

START_TEST(test_cpr_transfer_destination_without_commit_signal)
{
    /* A destination that drops the commit signal, as 1.0 and 1.1 do: it acknowledges at its
     * commit, before the start, and the source completes on that as before. */
    struct peer d, s;
    autostart_transfer("old-peer=1", &d, &s);
    g_autoptr(GHashTable) sr = expect(&s, "result");
    g_autoptr(GHashTable) dr = expect(&d, "result");
    ck_assert_int_eq(num(sr, "result"), 0);
    ck_assert_str_eq(get(sr, "runstate"), "postmigrate");
    ck_assert_int_eq(num(dr, "result"), 0);
    ck_assert_int_eq(num(dr, "post_loads"), 1);
    assert_acknowledged_then_runs(&d, &s, sr, dr, "prepared,ack-sent,committed,started");
}
END_TEST

START_TEST(test_cpr_transfer_destination_dies_after_commit)
{
    /* The destination committed (its signal set) and dies in its start hook, before its
     * acknowledgement: its guest may have run on the shared RAM, so the source must not
     * resume. It reads the signal when main ends, and completes as on the acknowledgement. */
    struct peer d, s;
    autostart_transfer("die=in-start", &d, &s);
    g_autoptr(GHashTable) sr = expect(&s, "result");
    assert_source_gave_up_guest(sr);
    assert_in_order(get(sr, "trace"), "state-written,commit-signal-read,main-closed");
    ck_assert_int_eq(finish(&s), 0);
    ck_assert_int_eq(finish(&d), 128 + SIGKILL);
}
END_TEST

START_TEST(test_cpr_transfer_new_process_dies_before_hangup)
{
    g_autofree char *main_ = arg("main", "unix:%s/main.sock", dir);
    g_autofree char *cpr = arg("cpr", "%s/cpr.sock", dir);
    struct peer d = transfer_dst(main_, cpr, "die=after-cpr");
    struct peer s = spawn("src", "mode=cpr-transfer", main_, cpr, NULL);
    g_autoptr(GHashTable) sr = expect(&s, "result");
    assert_source_survived(sr);
    ck_assert_ptr_null(strstr(get(sr, "log"), "vm:stop")); /* the guest never even paused */
    ck_assert_int_eq(finish(&s), 0);
    ck_assert_int_eq(finish(&d), 128 + SIGKILL);
}
END_TEST

START_TEST(test_destination_dies_after_load_before_run)
{
    /* The whole stream arrived; the destination dies before it acknowledges: the source must
     * resume, since the destination never ran. */
    g_autofree char *main_ = arg("main", "unix:%s/main.sock", dir);
    g_autofree char *cpr = arg("cpr", "%s/cpr.sock", dir);
    struct peer d = transfer_dst(main_, cpr, "die=post-load");
    struct peer s = spawn("src", "mode=cpr-transfer", main_, cpr, NULL);
    g_autoptr(GHashTable) sr = expect(&s, "result");
    assert_source_survived(sr);
    assert_in_order(get(sr, "log"), "vm:stop,status:device,vm:start,status:failed");
    ck_assert_ptr_nonnull(strstr(get(sr, "error"), "acknowledg"));
    ck_assert_int_eq(finish(&s), 0);
    ck_assert_int_eq(finish(&d), 128 + SIGKILL);
}
END_TEST

/* A destination whose prepare hook failed: it never committed, never started, and says why. */
static void assert_destination_refused(GHashTable *d)
{
    ck_assert_int_lt(num(d, "result"), 0);
    ck_assert_str_eq(get(d, "status"), "failed");
    ck_assert_str_eq(get(d, "runstate"), "inmigrate");
    ck_assert_ptr_nonnull(strstr(get(d, "log"), "vm:prepare"));
    ck_assert_ptr_null(strstr(get(d, "log"), "vm:start"));
    ck_assert_ptr_nonnull(strstr(get(d, "error"), "prepare_hook_failed"));
}

/* The pair (destination with fail=prepare, source) ends with the source resumed on the NAK and
 * the destination refused after the whole stream loaded. */
static void assert_prepare_failure_resumes_source(struct peer *d, struct peer *s)
{
    g_autoptr(GHashTable) sr = expect(s, "result");
    g_autoptr(GHashTable) dr = expect(d, "result");
    assert_source_survived(sr);
    assert_in_order(get(sr, "log"), "vm:stop,status:device,vm:start,status:failed");
    ck_assert_ptr_nonnull(strstr(get(sr, "error"), "negative_acknowledgement"));
    /* ... and says why: the destination's own error came with its NAK. */
    ck_assert_ptr_nonnull(strstr(get(sr, "error"), "prepare_hook_failed"));
    /* No page check here: the source's guest runs again and rewrites pages while one would
     * read them (the fault matrix has the guest verify its own RAM instead). */
    assert_destination_refused(dr);
    ck_assert_int_eq(num(dr, "post_loads"), 1); /* the whole stream had loaded */
    ck_assert_int_eq(finish(s), 0);
    ck_assert_int_eq(finish(d), 0);
}

START_TEST(test_cpr_transfer_prepare_fails_source_resumes)
{
    /* Everything loaded, the VMM's own preparation fails: the destination has not committed,
     * so it tells the source (NAK), which resumes. With the acknowledgement sent before the
     * prepare hook (1.1's order) the source would complete and the guest run nowhere. */
    g_autofree char *main_ = arg("main", "unix:%s/main.sock", dir);
    g_autofree char *cpr = arg("cpr", "%s/cpr.sock", dir);
    struct peer d = transfer_dst(main_, cpr, "fail=prepare");
    struct peer s = spawn("src", "mode=cpr-transfer", main_, cpr, NULL);
    assert_prepare_failure_resumes_source(&d, &s);
}
END_TEST

START_TEST(test_normal_prepare_fails_source_resumes)
{
    g_autofree char *main_ = arg("main", "unix:%s/main.sock", dir);
    struct peer d = spawn("dst", main_, "fail=prepare", NULL);
    wait_path("main.sock");
    struct peer s = spawn("src", main_, NULL);
    assert_prepare_failure_resumes_source(&d, &s);
}
END_TEST

START_TEST(test_start_failure_after_commit_never_resumes_source)
{
    /* Past the commit the guest is the destination's: a start hook that fails there is
     * reported on the destination (paused, not inmigrate) and the source stays postmigrate. */
    struct peer d, s;
    autostart_transfer("fail=start", &d, &s);
    g_autoptr(GHashTable) sr = expect(&s, "result");
    g_autoptr(GHashTable) dr = expect(&d, "result");
    assert_source_gave_up_guest(sr);
    ck_assert_int_eq(num(sr, "alive"), 0);
    ck_assert_int_lt(num(dr, "result"), 0);
    ck_assert_str_eq(get(dr, "status"), "failed");
    ck_assert_str_eq(get(dr, "runstate"), "paused");
    ck_assert_ptr_nonnull(strstr(get(dr, "error"), "after_the_commit"));
    assert_in_order(get(dr, "log"), "vm:prepare,vm:start-failed");
    ck_assert_int_eq(finish(&s), 0);
    ck_assert_int_eq(finish(&d), 0);
}
END_TEST

START_TEST(test_cpr_reboot_failed_load_leaves_file_and_ram_usable)
{
    /* A restart whose load fails (its prepare hook refuses) must leave the state file and the
     * preserved RAM as they were: a second restart loads them and its guest verifies. */
    g_autofree char *ram = arg("ram", "%s/ram", dir);
    g_autofree char *main_ = arg("main", "file:%s/vm.state", dir);
    g_autoptr(GHashTable) sr = reboot_save(ram, main_);
    struct peer bad = spawn("dst", "mode=cpr-reboot", "ignore-shared=1", ram, main_, "fail=prepare", NULL);
    g_autoptr(GHashTable) br = expect(&bad, "result");
    assert_destination_refused(br);
    ck_assert_int_eq(finish(&bad), 0);
    reboot_restart_runs(ram, main_, sr);
}
END_TEST

/* A normal migration over a UNIX socket that is still in precopy 300 ms after it became
 * active: 2 MB/s for 16 MiB of RAM gives seconds to kill one side in. */
static void slow_pair(struct peer *d, struct peer *s)
{
    g_autofree char *main_ = arg("main", "unix:%s/main.sock", dir);
    *d = spawn("dst", main_, "ramsize=16777216", NULL);
    wait_path("main.sock");
    *s = spawn("src", main_, "bw=2000000", "ramsize=16777216", "announce=1", NULL);
    /* On a loaded host the source may take longer than the pause below just to start. */
    g_autoptr(GHashTable) active = expect(s, "active");
    g_usleep(300 * 1000);
}

START_TEST(test_destination_dies_during_precopy)
{
    struct peer d, s;
    slow_pair(&d, &s);
    kill(d.pid, SIGKILL);
    g_autoptr(GHashTable) sr = expect(&s, "result");
    assert_source_survived(sr);
    ck_assert_ptr_null(strstr(get(sr, "log"), "vm:stop"));
    ck_assert_int_eq(finish(&s), 0);
    ck_assert_int_eq(finish(&d), 128 + SIGKILL);
}
END_TEST

START_TEST(test_destination_dies_at_switchover)
{
    g_autofree char *main_ = arg("main", "unix:%s/main.sock", dir);
    struct peer d = spawn("dst", main_, NULL);
    wait_path("main.sock");
    struct peer s = spawn("src", main_, "pre-switchover=1", NULL);
    g_autoptr(GHashTable) pre = expect(&s, "pre-switchover");
    kill(d.pid, SIGKILL);
    ck_assert_int_eq(finish(&d), 128 + SIGKILL);
    ck_assert_int_eq(write(s.in, "\n", 1), 1);
    g_autoptr(GHashTable) sr = expect(&s, "result");
    assert_source_survived(sr);
    assert_in_order(get(sr, "log"), "vm:stop,status:pre-switchover,status:device,vm:start,status:failed");
    ck_assert_int_eq(finish(&s), 0);
}
END_TEST

START_TEST(test_cpr_exec_replaces_the_process_and_runs_on)
{
    g_autofree char *state = g_strdup_printf("%s/vm.state", dir);
    g_autofree char *main_ = arg("main", "file:%s", state);
    g_autofree char *exec = arg("exec", "%s dst exec-dst=1 main=file:%s", MIG_PEER_PATH, state);
    struct peer s = spawn("src", "mode=cpr-exec", main_, exec, NULL);
    /* The same pid prints the new image's lines: the old one never reports. */
    g_autoptr(GHashTable) loaded = expect(&s, "cpr-loaded");
    ck_assert_str_eq(get(loaded, "mode"), "cpr-exec");
    g_autoptr(GHashTable) dr = expect(&s, "result");
    ck_assert_int_eq(num(dr, "result"), 0);
    ck_assert_int_eq(num(dr, "reattached"), 1);
    ck_assert_int_eq(num(dr, "corrupt"), 0);
    ck_assert_int_eq(num(dr, "post_loads"), 1);
    ck_assert_int_gt(num(dr, "heartbeat"), 0);
    ck_assert_int_eq(num(dr, "normal"), 0);
    g_autoptr(GHashTable) run = expect(&s, "alive");
    ck_assert_int_eq(num(run, "alive"), 1);
    ck_assert_int_eq(finish(&s), 0);
}
END_TEST

START_TEST(test_cpr_exec_failure_resumes_the_old_image)
{
    g_autofree char *main_ = arg("main", "file:%s/vm.state", dir);
    struct peer s = spawn("src", "mode=cpr-exec", main_, "exec=/nonexistent/vmm -incoming defer", NULL);
    g_autoptr(GHashTable) sr = expect(&s, "result");
    assert_source_survived(sr);
    assert_in_order(get(sr, "log"), "vm:stop,status:device,vm:flush,vm:start,status:failed");
    ck_assert_ptr_nonnull(strstr(get(sr, "error"), "nonexistent"));
    ck_assert_int_eq(finish(&s), 0);
}
END_TEST


START_TEST(test_source_dies_mid_stream_destination_loads_nothing)
{
    struct peer d, s;
    slow_pair(&d, &s);
    kill(s.pid, SIGKILL);
    ck_assert_int_eq(finish(&s), 128 + SIGKILL);
    g_autoptr(GHashTable) dr = expect(&d, "result");
    ck_assert_int_lt(num(dr, "result"), 0);
    ck_assert_str_eq(get(dr, "status"), "failed");
    ck_assert_str_eq(get(dr, "runstate"), "inmigrate"); /* never started */
    ck_assert_int_eq(num(dr, "post_loads"), 0);          /* no post_load on a partial stream */
    ck_assert_int_gt(num(dr, "transferred"), 0);
    ck_assert_int_eq(finish(&d), 0);
}
END_TEST

static Suite *migrate_proc_suite(void)
{
    Suite *s = suite_create("migrate_proc");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_normal_live_migration_between_processes);
    tcase_add_test(tc, test_cpr_reboot_between_processes_keeps_ram_in_its_file);
    tcase_add_test(tc, test_cpr_transfer_between_processes_shares_the_memfd);
    tcase_add_test(tc, test_cpr_transfer_destination_without_commit_signal);
    tcase_add_test(tc, test_cpr_transfer_destination_dies_after_commit);
    tcase_add_test(tc, test_cpr_transfer_new_process_dies_before_hangup);
    tcase_add_test(tc, test_destination_dies_after_load_before_run);
    tcase_add_test(tc, test_cpr_transfer_prepare_fails_source_resumes);
    tcase_add_test(tc, test_normal_prepare_fails_source_resumes);
    tcase_add_test(tc, test_start_failure_after_commit_never_resumes_source);
    tcase_add_test(tc, test_cpr_reboot_failed_load_leaves_file_and_ram_usable);
    tcase_add_test(tc, test_destination_dies_during_precopy);
    tcase_add_test(tc, test_destination_dies_at_switchover);
    tcase_add_test(tc, test_source_dies_mid_stream_destination_loads_nothing);
    tcase_add_test(tc, test_cpr_exec_replaces_the_process_and_runs_on);
    tcase_add_test(tc, test_cpr_exec_failure_resumes_the_old_image);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(migrate_proc_suite)
