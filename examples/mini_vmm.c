/* SPDX-License-Identifier: MIT */
/*
 * mini_vmm: a whole (tiny) VMM wired to libcpr as docs/integration.md says, step by step.
 *
 *   mini_vmm old DIR       boots with a local disk, shows the disk's blocker refusing normal
 *                          migration, then live-updates itself by cpr-transfer to `new`
 *   mini_vmm new DIR       the new process of that cpr-transfer: takes over RAM, disk fd and
 *                          device state, and runs the guest on
 *   mini_vmm snapshot DIR  boots without a disk and snapshots by normal migration to a file
 *   mini_vmm restore DIR   a new process loads that snapshot and runs the guest on
 *
 * old and new may start in either order (cpr-transfer-connect-timeout and
 * cpr-transfer-accept-timeout bound the waits). The channels are DIR/main.sock and
 * DIR/cpr.sock; the disk is DIR/disk.img; the snapshot DIR/vm.snap.
 *
 * The "guest" is a vCPU thread that counts: each tick it bumps a heartbeat word in guest RAM
 * (a memfd RAM block), writes the tick into one RAM page, and counts it in a device, whose
 * state is a described section. Device and RAM must agree after every switchover: that is
 * what the destination's prepare hook checks before it commits.
 */
#define _POSIX_C_SOURCE 200809L /* strdup, nanosleep, pthreads under -std=c11 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cpr/cpr.h>

#define RAM_SIZE (4u << 20)
#define PAGE 4096u
#define DISK_OFFSET 123 /* where the old process leaves the disk's file offset */

/* A device: counts the guest's ticks; its state crosses as a described section. */
struct counter {
    uint64_t ticks;
    uint64_t ram_size; /* an `equal` field: a machine with other RAM refuses the stream */
    char *label;
};

struct machine {
    cpr_ctx *ctx;
    cpr_ram_block *ram;
    uint64_t *mem; /* guest RAM as words; mem[0] is the heartbeat */
    struct counter dev;
    int disk_fd;
    cpr_blocker *disk_blocker;
    pthread_t vcpu;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int run, quit;
    uint64_t resumed_at, resumed_dev; /* what the start hook found in RAM and in the device */
};

static void die(const char *what, cpr_error *err)
{
    fprintf(stderr, "mini_vmm: %s: %s\n", what, err ? cpr_error_message(err) : strerror(errno));
    cpr_error_free(err);
    exit(1);
}

static void sleep_us(long us)
{
    struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
    nanosleep(&ts, NULL);
}

/* ---- the guest ------------------------------------------------------------------------ */

/* The guest's state changes only under the lock, one tick at a time: once stop() has taken
 * the lock and cleared `run`, no tick is under way and none follows. */
static void *vcpu_thread(void *opaque)
{
    struct machine *m = opaque;
    uint64_t pages = RAM_SIZE / PAGE;
    for (;;) {
        pthread_mutex_lock(&m->lock);
        while (!m->run && !m->quit)
            pthread_cond_wait(&m->cond, &m->lock);
        if (m->quit) {
            pthread_mutex_unlock(&m->lock);
            return NULL;
        }
        /* One tick. The VMM marks what the guest wrote dirty itself, so it needs no
         * dirty_log_* hooks (a KVM VMM would merge KVM_GET_DIRTY_LOG instead). */
        uint64_t t = ++m->mem[0];
        uint64_t page = 1 + t % (pages - 1);
        m->mem[page * (PAGE / 8)] = t;
        cpr_ram_dirty_set(m->ram, 0, 8, NULL);
        cpr_ram_dirty_set(m->ram, page * PAGE, 8, NULL);
        m->dev.ticks = t;
        pthread_mutex_unlock(&m->lock);
        sleep_us(100);
    }
}

static uint64_t guest_tick(struct machine *m)
{
    pthread_mutex_lock(&m->lock);
    uint64_t t = m->mem[0];
    pthread_mutex_unlock(&m->lock);
    return t;
}

/* The device's count: where this process's guest stopped (after a cpr-transfer the shared
 * RAM's heartbeat is the new process's). */
static uint64_t device_tick(struct machine *m)
{
    pthread_mutex_lock(&m->lock);
    uint64_t t = m->dev.ticks;
    pthread_mutex_unlock(&m->lock);
    return t;
}

/* ---- the VM hooks (cpr/migrate.h) ----------------------------------------------------- */

static int vm_stop(cpr_ctx *ctx, void *opaque)
{
    struct machine *m = opaque;
    (void)ctx;
    pthread_mutex_lock(&m->lock);
    m->run = 0;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

/* Must not fail after a destination's prepare succeeded: nothing here can. */
static int vm_start(cpr_ctx *ctx, void *opaque)
{
    struct machine *m = opaque;
    (void)ctx;
    pthread_mutex_lock(&m->lock);
    m->resumed_at = m->mem[0];
    m->resumed_dev = m->dev.ticks;
    m->run = 1;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    return 0;
}

static int vm_is_running(cpr_ctx *ctx, void *opaque)
{
    struct machine *m = opaque;
    (void)ctx;
    pthread_mutex_lock(&m->lock);
    int run = m->run;
    pthread_mutex_unlock(&m->lock);
    return run;
}

/* Destination only, after the whole stream loaded and before it commits: everything that can
 * fail. A refusal here leaves the source able to resume its guest. */
static int vm_prepare(cpr_ctx *ctx, void *opaque, cpr_error **errp)
{
    struct machine *m = opaque;
    (void)ctx;
    (void)errp;
    if (m->dev.ticks != m->mem[0]) {
        fprintf(stderr, "mini_vmm: prepare: device says tick %" PRIu64 ", RAM says %" PRIu64 "\n",
                m->dev.ticks, m->mem[0]);
        return -EIO;
    }
    return 0;
}

static void machine_set_hooks(struct machine *m)
{
    cpr_error *err = NULL;
    cpr_vm_ops ops;
    memset(&ops, 0, sizeof(ops));
    ops.size = sizeof(ops);
    ops.stop = vm_stop;
    ops.start = vm_start;
    ops.is_running = vm_is_running;
    ops.prepare = vm_prepare;
    if (cpr_migrate_set_vm_ops(m->ctx, &ops, m, &err) < 0)
        die("vm ops", err);
}

/* ---- start-up, in the order docs/integration.md gives -------------------------------- */

static void machine_init(struct machine *m)
{
    cpr_error *err = NULL;
    memset(m, 0, sizeof(*m));
    m->disk_fd = -1;
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->cond, NULL);
    if (cpr_ctx_new(&m->ctx, 0, &err) < 0)
        die("context", err);
}

/* RAM: a memfd block. In a process started for cpr-transfer it re-attaches the old memfd. */
static void machine_create_ram(struct machine *m)
{
    cpr_error *err = NULL;
    if (cpr_ram_block_new(m->ctx, "pc.ram", RAM_SIZE, PAGE, 0, &m->ram, &err) < 0)
        die("RAM block pc.ram", err);
    m->mem = cpr_ram_block_host(m->ram);
}

static cpr_desc *counter_desc(void)
{
    cpr_error *err = NULL;
    cpr_desc *d;
    if (cpr_desc_new("counter", 1, 1, sizeof(struct counter), &d, &err) < 0 ||
        cpr_desc_add(d, "ticks", CPR_TYPE_U64, CPR_MEMBER(struct counter, ticks), &err) < 0 ||
        cpr_desc_add(d, "ram_size", CPR_TYPE_U64, CPR_MEMBER(struct counter, ram_size), &err) < 0 ||
        cpr_desc_field_equal(d, "ram_size", RAM_SIZE, &err) < 0 ||
        cpr_desc_add(d, "label", CPR_TYPE_STRING, CPR_MEMBER(struct counter, label), &err) < 0)
        die("counter description", err);
    return d;
}

/* Devices, after RAM. The disk's fd is named so that cpr-transfer carries it: cpr_fd_open()
 * returns the preserved fd in a new process, else opens the file. The disk is local storage,
 * which normal migration cannot copy: a blocker for normal mode only. */
static void machine_create_devices(struct machine *m, const char *disk_path)
{
    cpr_error *err = NULL;
    if (disk_path) {
        m->disk_fd = cpr_fd_open(m->ctx, disk_path, O_RDWR | O_CREAT, 0600, "disk", 0, &err);
        if (m->disk_fd < 0)
            die("disk", err);
        char reason[512];
        snprintf(reason, sizeof(reason), "disk d0 (%s) is local storage", disk_path);
        if (cpr_blocker_add(m->ctx, CPR_MODES_NORMAL_ONLY, reason, &m->disk_blocker, &err) < 0)
            die("blocker", err);
    }
    m->dev.ram_size = RAM_SIZE;
    m->dev.label = strdup("counter0");
    cpr_desc *d = counter_desc();
    if (cpr_savevm_register(m->ctx, NULL, 0, d, &m->dev, 0, NULL, &err) < 0)
        die("register counter", err);
    cpr_desc_unref(d);
    if (cpr_savevm_set_machine(m->ctx, "mini-vmm,ram=4M", &err) < 0)
        die("machine identity", err);
    if (pthread_create(&m->vcpu, NULL, vcpu_thread, m) != 0)
        die("vCPU thread", NULL);
    machine_set_hooks(m);
}

/* A machine that boots (no cpr state to take over): context, RAM, devices. */
static void machine_boot(struct machine *m, const char *disk_path)
{
    machine_init(m);
    machine_create_ram(m);
    machine_create_devices(m, disk_path);
}

static void machine_free(struct machine *m)
{
    pthread_mutex_lock(&m->lock);
    m->quit = 1;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    pthread_join(m->vcpu, NULL);
    if (m->disk_blocker)
        cpr_blocker_del(m->ctx, m->disk_blocker);
    if (m->disk_fd >= 0)
        close(m->disk_fd);
    cpr_ctx_free(m->ctx); /* frees the RAM block and sections too */
    free(m->dev.label);
}

static void boot_and_run(struct machine *m, uint64_t ticks)
{
    vm_start(m->ctx, m);
    while (guest_tick(m) < ticks)
        sleep_us(1000);
}

/* After a switchover: device and RAM agreed when the guest resumed, and it runs on. */
static void run_on(struct machine *m, const char *who)
{
    pthread_mutex_lock(&m->lock);
    uint64_t ram = m->resumed_at, dev = m->resumed_dev;
    pthread_mutex_unlock(&m->lock);
    printf("%s: guest resumed at tick %" PRIu64 " (RAM) / %" PRIu64 " (device)\n", who, ram, dev);
    if (ram != dev || ram == 0)
        die("device and RAM disagree", NULL);
    while (guest_tick(m) < ram + 100)
        sleep_us(1000);
    vm_stop(m->ctx, m);
    printf("%s: guest ran on to tick %" PRIu64 "\n", who, guest_tick(m));
}

static cpr_channels *transfer_channels(const char *dir)
{
    char json[2048];
    snprintf(json, sizeof(json),
             "[{\"channel-type\":\"main\",\"addr\":{\"transport\":\"socket\",\"type\":\"unix\",\"path\":\"%s/main.sock\"}},"
             " {\"channel-type\":\"cpr\",\"addr\":{\"transport\":\"socket\",\"type\":\"unix\",\"path\":\"%s/cpr.sock\"}}]",
             dir, dir);
    cpr_channels *ch;
    cpr_error *err = NULL;
    if (cpr_channels_parse_json(json, &ch, &err) < 0)
        die("channels", err);
    return ch;
}

/* ---- the four commands ------------------------------------------------------------------ */

static int cmd_old(const char *dir, const char *disk)
{
    struct machine m;
    cpr_error *err = NULL;
    machine_boot(&m, disk);
    lseek(m.disk_fd, DISK_OFFSET, SEEK_SET);
    boot_and_run(&m, 500);

    /* Normal migration is blocked by the disk; the error names the blocker's reason. */
    char uri[1100];
    snprintf(uri, sizeof(uri), "file:%s/refused.state", dir);
    if (cpr_migrate_uri(m.ctx, uri, 0, &err) != -EPERM)
        die("normal migration was not refused", err);
    printf("old: normal migration refused: %s\n", cpr_error_message(err));
    cpr_error_free(err);
    err = NULL;

    /* cpr-transfer: RAM and the disk fd go to the new process over the cpr channel, the
     * device state over main. Waits up to 30 s for the new process to listen. */
    cpr_channels *ch = transfer_channels(dir);
    if (cpr_set_mode(m.ctx, CPR_MODE_CPR_TRANSFER, &err) < 0 ||
        cpr_param_set(m.ctx, "cpr-transfer-connect-timeout", "30000", &err) < 0 ||
        cpr_migrate_channels(m.ctx, ch, 0, &err) < 0)
        die("cpr-transfer", err);
    cpr_channels_free(ch);
    printf("old: cpr-transfer completed, guest handed over at tick %" PRIu64 "; run state %s\n", device_tick(&m),
           cpr_runstate_name(cpr_migrate_runstate(m.ctx)));
    machine_free(&m);
    return 0;
}

static int cmd_new(const char *dir, const char *disk)
{
    struct machine m;
    cpr_error *err = NULL;
    machine_init(&m);
    /* 1. Before anything else: the cpr state (fds and RAM blocks of the old process). */
    cpr_channels *ch = transfer_channels(dir);
    int mode;
    if (cpr_param_set(m.ctx, "cpr-transfer-accept-timeout", "30000", &err) < 0 ||
        (mode = cpr_incoming_cpr_load(m.ctx, ch, &err)) < 0)
        die("cpr state", err);
    printf("new: cpr_incoming_cpr_load: mode %s\n", cpr_mode_name((cpr_mode)mode));
    /* 2. RAM: the blocks re-attach the old memfds; 3. close those no block claimed. */
    machine_create_ram(&m);
    printf("new: RAM block pc.ram %s\n", cpr_ram_block_reattached(m.ram) ? "re-attached (the old memfd)" : "NEW");
    if (!cpr_ram_block_reattached(m.ram))
        die("RAM was not re-attached", NULL);
    cpr_ram_close_unattached(m.ctx);
    /* 4. Devices: the disk's fd is the old process's open file (its offset shows it); then
     * the fds no device claimed are closed. */
    machine_create_devices(&m, disk);
    off_t at = lseek(m.disk_fd, 0, SEEK_CUR);
    printf("new: disk fd is the old process's open file (offset %lld)\n", (long long)at);
    if (at != DISK_OFFSET)
        die("the disk fd was reopened, not preserved", NULL);
    cpr_fd_close_unclaimed(m.ctx);
    /* 5. The main channel: listen, hang up the cpr channel, load, prepare, commit, start. */
    if (cpr_incoming_start(m.ctx, ch, 0, &err) < 0)
        die("incoming", err);
    cpr_channels_free(ch);
    run_on(&m, "new");
    machine_free(&m);
    return 0;
}

/* A snapshot is a normal migration to a file: RAM goes while the guest runs (precopy), the
 * device state after the stop. A restore is an incoming migration from that file. */
static int cmd_snapshot(const char *uri)
{
    struct machine m;
    cpr_error *err = NULL;
    machine_boot(&m, NULL);
    boot_and_run(&m, 500);
    if (cpr_migrate_uri(m.ctx, uri, 0, &err) < 0)
        die("snapshot", err);
    printf("snapshot: saved at tick %" PRIu64 "; run state %s\n", device_tick(&m),
           cpr_runstate_name(cpr_migrate_runstate(m.ctx)));
    machine_free(&m);
    return 0;
}

static int cmd_restore(const char *uri)
{
    struct machine m;
    cpr_error *err = NULL;
    machine_boot(&m, NULL);
    if (cpr_incoming_start_uri(m.ctx, uri, 0, &err) < 0)
        die("restore", err);
    run_on(&m, "restore");
    machine_free(&m);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: mini_vmm old|new|snapshot|restore DIR\n");
        return 2;
    }
    const char *cmd = argv[1], *dir = argv[2];
    char disk[1100], snap[1100];
    snprintf(disk, sizeof(disk), "%s/disk.img", dir);
    snprintf(snap, sizeof(snap), "file:%s/vm.snap", dir);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(cmd, "old"))
        return cmd_old(dir, disk);
    if (!strcmp(cmd, "new"))
        return cmd_new(dir, disk);
    if (!strcmp(cmd, "snapshot"))
        return cmd_snapshot(snap);
    if (!strcmp(cmd, "restore"))
        return cmd_restore(snap);
    fprintf(stderr, "mini_vmm: unknown command '%s'\n", cmd);
    return 2;
}
