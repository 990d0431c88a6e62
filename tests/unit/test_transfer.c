/* SPDX-License-Identifier: MIT */
/*
 * The cpr channel between real processes: fds and memfds passed with SCM_RIGHTS, the
 * handshake, and every refusal. Every test checks that /proc/self/fd counts the same fds
 * before and after it, failing ones included.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "channel/scm.h"
#include "channel/transfer.h"
#include "handover/cpr_state.h"
#include "fd_fixture.h"
#include "testutil.h"

static char *dir;
static char *sock_path;
static int fds_before;
static cpr_ctx *ctx;

static void setup(void)
{
    dir = proc_tmpdir();
    ck_assert_ptr_nonnull(dir);
    sock_path = g_build_filename(dir, "cpr.sock", NULL);
    proc_fixture_setup(&ctx, &fds_before);
}

static void teardown(void)
{
    proc_rmtree(dir);
    g_free(dir);
    g_free(sock_path);
    proc_fixture_teardown(ctx, fds_before);
}

static cpr_transfer_opts opts_timeout(int64_t ms)
{
    cpr_transfer_opts o;
    cpr_transfer_opts_init(&o);
    o.timeout_ms = ms;
    return o;
}

/* ---- the cpr_peer helper as the old VMM ---- */

typedef struct peer {
    GPid pid;
    FILE *in;  /* its stdin */
    FILE *out; /* its stdout */
} peer;

static peer peer_send_paged(long nfds, uint64_t ram_bytes, uint64_t page_size)
{
    g_autofree char *n = g_strdup_printf("%ld", nfds);
    g_autofree char *r = g_strdup_printf("%" PRIu64, ram_bytes);
    g_autofree char *ps = g_strdup_printf("%" PRIu64, page_size);
    const char *argv[] = { CPR_PEER_PATH, "send", sock_path, n, r, ps, NULL };
    peer p = { 0 };
    int in, out;
    GError *gerr = NULL;
    ck_assert_msg(g_spawn_async_with_pipes(NULL, (char **)argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD, NULL,
                                           NULL, &p.pid, &in, &out, NULL, &gerr),
                  "spawn: %s", gerr ? gerr->message : "");
    p.in = fdopen(in, "w");
    p.out = fdopen(out, "r");
    return p;
}

static peer peer_send(long nfds, uint64_t ram_bytes)
{
    return peer_send_paged(nfds, ram_bytes, 4096);
}

static char *peer_line(peer *p)
{
    char buf[512];
    ck_assert_ptr_nonnull(fgets(buf, sizeof(buf), p->out));
    return g_strdup(g_strchomp(buf));
}

static int peer_end(peer *p)
{
    fclose(p->in);
    fclose(p->out);
    return proc_wait(p->pid);
}

static int count_dev(const char *name, int id, int fd, void *opaque)
{
    struct stat sb, null_sb;
    stat("/dev/null", &null_sb);
    ck_assert_int_eq(fstat(fd, &sb), 0);
    ck_assert(S_ISCHR(sb.st_mode) && sb.st_rdev == null_sb.st_rdev);
    ck_assert_int_ne(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
    ck_assert_str_eq(name, "dev");
    (*(int *)opaque)++;
    return 0;
}

/* The helper saves n fds and sends them; we receive, check, confirm. */
static void pass_fds(long n)
{
    peer p = peer_send(n, 0);
    g_autofree char *hello = peer_line(&p);
    cpr_transfer_opts o = opts_timeout(60000);
    cpr_error *err = NULL;
    /* NULL options mean the defaults; try them once. */
    int sock = cpr_transfer_incoming(ctx, sock_path, n == 1 ? NULL : &o, &err);
    ck_assert_msg(sock >= 0, "incoming: %s", cpr_error_message(err));
    ck_assert_int_eq(access(sock_path, F_OK), -1); /* the socket file is gone once used */
    ck_assert_uint_eq(cpr_fd_count(ctx), (size_t)n);
    /* n received fds, the cpr socket and the two pipes to the peer, nothing else. */
    ck_assert_int_eq(proc_fd_count(), fds_before + 3 + (int)n);
    int seen = 0;
    ck_assert_int_eq(cpr_fd_foreach(ctx, count_dev, &seen), 0);
    ck_assert_int_eq(seen, n);
    ck_assert_int_eq(cpr_get_mode(ctx), CPR_MODE_CPR_TRANSFER);
    ck_assert_int_eq(cpr_transfer_finish(sock, NULL), 0);
    g_autofree char *sent = peer_line(&p);
    ck_assert_str_eq(sent, "sent");
    ck_assert_int_eq(peer_end(&p), 0);
}

START_TEST(test_transfer_passes_1_fd) { pass_fds(1); }
END_TEST
START_TEST(test_transfer_passes_253_fds_in_one_batch) { pass_fds(253); }
END_TEST
START_TEST(test_transfer_passes_254_fds_in_two_batches) { pass_fds(254); }
END_TEST
START_TEST(test_transfer_passes_10000_fds) { pass_fds(10000); }
END_TEST

START_TEST(test_transfer_shares_multi_gib_memfd_without_copy)
{
    const uint64_t size = 3ull << 30;
    peer p = peer_send(0, size);
    g_autofree char *hello = peer_line(&p);
    unsigned long ino;
    void *their_host;
    ck_assert_int_eq(sscanf(hello, "inode %lu host %p", &ino, &their_host), 2);
    cpr_transfer_opts o = opts_timeout(60000);
    cpr_error *err = NULL;
    int sock = cpr_transfer_incoming(ctx, sock_path, &o, &err);
    ck_assert_msg(sock >= 0, "incoming: %s", cpr_error_message(err));

    cpr_ram_block *b;
    ck_assert_int_eq(cpr_ram_block_new(ctx, "pc.ram", size, 4096, CPR_RAM_REATTACH_ONLY, &b, &err), 0);
    ck_assert_int_eq(cpr_ram_block_reattached(b), 1);
    struct stat sb;
    ck_assert_int_eq(fstat(cpr_ram_block_fd(b), &sb), 0);
    ck_assert_uint_eq(sb.st_ino, ino); /* the same memfd, not a copy */
    const uint8_t *host = cpr_ram_block_host(b);
    for (uint64_t off = 0; off <= size; off += 1ull << 30) {
        uint64_t at = off < size ? off : size - 4096;
        uint64_t v, want = at * 0x9e3779b97f4a7c15ull ^ 0x5a5a5a5a5a5a5a5aull;
        memcpy(&v, host + at, 8);
        ck_assert_uint_eq(v, want);
    }
    ck_assert_int_eq(cpr_transfer_finish(sock, NULL), 0);
    g_autofree char *sent = peer_line(&p);
    ck_assert_str_eq(sent, "sent");

    /* And the other way: what we write, the old process reads in its own mapping. */
    uint64_t mark = 0xc0ffee00d15ea5eull;
    memcpy((uint8_t *)cpr_ram_block_host(b) + 4096, &mark, 8);
    fprintf(p.in, "verify %" PRIx64 "\n", mark);
    fflush(p.in);
    g_autofree char *seen = peer_line(&p);
    ck_assert_str_eq(seen, "seen c0ffee00d15ea5e");
    ck_assert_int_eq(peer_end(&p), 0);
}
END_TEST

START_TEST(test_transfer_shares_hugepage_memfd)
{
    const uint64_t huge = 2ull << 20;
    long added;
    if (proc_hugepages_reserve(4, &added) < 4) {
        proc_hugepages_restore(added);
        fprintf(stderr, "SKIP test_transfer_shares_hugepage_memfd: no free 2 MiB huge pages "
                        "(/proc/sys/vm/nr_hugepages is 0 and cannot be raised)\n");
        return;
    }
    peer p = peer_send_paged(0, 2 * huge, huge);
    g_autofree char *hello = peer_line(&p);
    unsigned long ino;
    ck_assert_int_eq(sscanf(hello, "inode %lu", &ino), 1);
    cpr_transfer_opts o = opts_timeout(60000);
    cpr_error *err = NULL;
    int sock = cpr_transfer_incoming(ctx, sock_path, &o, &err);
    ck_assert_msg(sock >= 0, "incoming: %s", cpr_error_message(err));
    cpr_ram_block *b = NULL;
    /* The table says 2 MiB pages: asking for 4 KiB ones is refused, by name. */
    ck_assert_cpr_fails(cpr_ram_block_new(ctx, "pc.ram", 2 * huge, 4096, 0, &b, errp_), -EINVAL,
                        "ram block 'pc.ram': page size 2097152 in the cpr state, 4096 requested");
    ck_assert_int_eq(cpr_ram_block_new(ctx, "pc.ram", 2 * huge, huge, CPR_RAM_PREFAULT, &b, NULL), 0);
    struct stat sb;
    ck_assert_int_eq(fstat(cpr_ram_block_fd(b), &sb), 0);
    ck_assert_uint_eq(sb.st_ino, ino);
    uint64_t v, last = 2 * huge - huge;
    memcpy(&v, (uint8_t *)cpr_ram_block_host(b) + last, 8);
    ck_assert_uint_eq(v, last * 0x9e3779b97f4a7c15ull ^ 0x5a5a5a5a5a5a5a5aull);
    ck_assert_int_eq(cpr_transfer_finish(sock, NULL), 0);
    g_autofree char *sent = peer_line(&p);
    ck_assert_str_eq(sent, "sent");
    ck_assert_int_eq(peer_end(&p), 0);
    cpr_ram_block_free(b);
    proc_hugepages_restore(added);
}
END_TEST

START_TEST(test_listen_creates_socket_mode_0600)
{
    mode_t old = umask(0);
    int lfd = cpr_transfer_listen(sock_path, NULL);
    umask(old);
    ck_assert_int_ge(lfd, 0);
    struct stat sb;
    ck_assert_int_eq(stat(sock_path, &sb), 0);
    ck_assert(S_ISSOCK(sb.st_mode));
    ck_assert_uint_eq(sb.st_mode & 07777, 0600);
    close(lfd);
    /* A stale socket is replaced; any other file is not. */
    lfd = cpr_transfer_listen(sock_path, NULL);
    ck_assert_int_ge(lfd, 0);
    close(lfd);
    unlink(sock_path);
    close(open(sock_path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
    ck_assert_cpr_fails(cpr_transfer_listen(sock_path, errp_), -EEXIST, "is not a socket");
}
END_TEST

/* A peer that waits for the socket file and connects at once, as scripts do. */
struct eager_peer {
    const char *path;
    int stop;
    int connected, refused;
    int gone; /* how many published paths the peer saw go away again */
};

static gpointer eager_connect(gpointer p)
{
    struct eager_peer *e = p;
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    g_strlcpy(sa.sun_path, e->path, sizeof(sa.sun_path));
    /* Each spin yields the core: under valgrind's big lock a thread that never blocks starves
     * the listener it waits for (the suite hung there for over an hour). */
    while (!__atomic_load_n(&e->stop, __ATOMIC_ACQUIRE)) {
        struct stat st;
        if (lstat(e->path, &st) < 0) {
            sched_yield();
            continue;
        }
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int rc = connect(s, (struct sockaddr *)&sa, sizeof(sa));
        int err = errno;
        close(s);
        if (rc == 0)
            __atomic_add_fetch(&e->connected, 1, __ATOMIC_RELEASE);
        else if (err == ECONNREFUSED)
            __atomic_add_fetch(&e->refused, 1, __ATOMIC_RELEASE);
        /* The main thread unlinks this one before it listens again. */
        while (lstat(e->path, &st) == 0 && !__atomic_load_n(&e->stop, __ATOMIC_ACQUIRE))
            sched_yield();
        __atomic_add_fetch(&e->gone, 1, __ATOMIC_RELEASE);
    }
    return NULL;
}

START_TEST(test_listen_publishes_the_path_only_once_listening)
{
    struct eager_peer e = { .path = sock_path };
    GThread *th = g_thread_new("eager", eager_connect, &e);
    for (int i = 0; i < 300; i++) {
        int lfd = cpr_transfer_listen(sock_path, NULL);
        ck_assert_int_ge(lfd, 0);
        while (__atomic_load_n(&e.connected, __ATOMIC_ACQUIRE) + __atomic_load_n(&e.refused, __ATOMIC_ACQUIRE) <= i)
            g_usleep(10);
        unlink(sock_path);
        close(lfd);
        while (__atomic_load_n(&e.gone, __ATOMIC_ACQUIRE) <= i)
            g_usleep(10);
    }
    __atomic_store_n(&e.stop, 1, __ATOMIC_RELEASE);
    g_thread_join(th);
    ck_assert_int_eq(e.refused, 0);
    ck_assert_int_eq(e.connected, 300);
    /* Nothing but the published socket is left in the directory. */
    int lfd = cpr_transfer_listen(sock_path, NULL);
    ck_assert_int_ge(lfd, 0);
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    int n = 0;
    for (const char *name; (name = g_dir_read_name(d)); n++)
        ck_assert_str_eq(name, "cpr.sock");
    ck_assert_int_eq(n, 1);
    close(lfd);
    /* A path too long for the temporary name beside it is bound in place, and still works. */
    struct sockaddr_un sa;
    size_t room = sizeof(sa.sun_path) - 1 - strlen(dir) - 1;
    g_autofree char *name = g_strnfill(room, 'x');
    g_autofree char *long_path = g_build_filename(dir, name, NULL);
    ck_assert_uint_eq(strlen(long_path), sizeof(sa.sun_path) - 1);
    lfd = cpr_transfer_listen(long_path, NULL);
    ck_assert_int_ge(lfd, 0);
    int c = cpr_transfer_connect(long_path, NULL, NULL);
    ck_assert_int_ge(c, 0);
    close(c);
    close(lfd);
    unlink(long_path);
}
END_TEST

START_TEST(test_accept_refuses_peer_with_other_uid)
{
    if (geteuid() != 0) {
        fprintf(stderr, "SKIP test_accept_refuses_peer_with_other_uid: needs root to setuid()\n");
        return;
    }
    struct passwd *pw = getpwnam("nobody");
    uid_t nobody = pw ? pw->pw_uid : 65534;
    gid_t nogroup = pw ? pw->pw_gid : 65534;
    ck_assert_int_eq(chmod(dir, 0755), 0);
    int lfd = cpr_transfer_listen(sock_path, NULL);
    ck_assert_int_ge(lfd, 0);
    int to_child[2], to_parent[2];
    ck_assert_int_eq(pipe2(to_child, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(to_parent, O_CLOEXEC), 0);
    pid_t pid = fork();
    if (pid == 0) {
        if (setgid(nogroup) < 0 || setuid(nobody) < 0)
            _exit(9);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        strcpy(sa.sun_path, sock_path);
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        /* Mode 0600: another uid cannot even connect. */
        if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0 || errno != EACCES)
            _exit(10);
        char c = 'a';
        if (write(to_parent[1], &c, 1) != 1 || read(to_child[0], &c, 1) != 1)
            _exit(11);
        /* The test opened the mode up: now SO_PEERCRED must stop us. */
        if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
            _exit(12);
        _exit(read(s, &c, 1) == 0 ? 0 : 13); /* refused: closed without a word */
    }
    char c;
    ck_assert_int_eq(read(to_parent[0], &c, 1), 1);
    ck_assert_int_eq(chmod(sock_path, 0666), 0);
    ck_assert_int_eq(write(to_child[1], &c, 1), 1);
    cpr_transfer_opts o = opts_timeout(10000);
    g_autofree char *needle = g_strdup_printf("uid %u: only uid 0 may connect", (unsigned)nobody);
    ck_assert_cpr_fails(cpr_transfer_accept(lfd, &o, errp_), -EPERM, needle);
    ck_assert_int_eq(proc_wait(pid), 0);
    close(lfd);
    close(to_child[0]);
    close(to_child[1]);
    close(to_parent[0]);
    close(to_parent[1]);
}
END_TEST

/* ---- crafted old VMMs, forked, for the refusals ---- */

/* Changes what a crafted sender puts on the wire: its preamble (24 bytes, as docs/cpr-channel.md
 * gives it), the fds it attaches, or how many bytes it sends. */
typedef void (*tamper_fn)(uint8_t *pre, GArray *fds, size_t *len);

/* The channel written by hand from the documented layout, so that `tamper` can lie in it. */
static int send_by_hand(int s, const cpr_state *st, GArray *fds, tamper_fn tamper, const cpr_io_wait *w)
{
    g_autoptr(GByteArray) buf = g_byte_array_new();
    g_byte_array_set_size(buf, 24);
    if (cpr_state_encode(st, buf, NULL) < 0)
        return -1;
    uint32_t nfds = GUINT32_TO_LE(fds->len), flags = 0;
    uint64_t state_len = GUINT64_TO_LE(buf->len - 24);
    memcpy(buf->data, "CPRCHAN1", 8);
    memcpy(buf->data + 8, &nfds, 4);
    memcpy(buf->data + 12, &flags, 4);
    memcpy(buf->data + 16, &state_len, 8);
    size_t len = buf->len;
    tamper(buf->data, fds, &len);
    return cpr_scm_send(s, buf->data, len, (const int *)(void *)fds->data, fds->len, w, NULL);
}

/* Runs `build` in a child that connects to sock_path and sends the state it built (through
 * `tamper` when not NULL); returns its pid. The child exits with 0 when its state was
 * accepted, 1 when refused (-EPROTO), 2 for a hang-up, 3 otherwise. */
static pid_t crafted_sender(void (*build)(cpr_state *st, GArray *fds), tamper_fn tamper)
{
    pid_t pid = fork();
    if (pid)
        return pid;
    int s = cpr_transfer_connect(sock_path, NULL, NULL);
    if (s < 0)
        _exit(4);
    /* Freed by hand before _exit(), which runs no cleanup: valgrind checks this child too. */
    cpr_state *st = cpr_state_new(CPR_MODE_CPR_TRANSFER, 0);
    GArray *fds = g_array_new(FALSE, FALSE, sizeof(int));
    build(st, fds);
    cpr_io_wait w = cpr_io_wait_make(10000, -1);
    int status = 5;
    int sent = tamper ? send_by_hand(s, st, fds, tamper, &w) : cpr_transfer_send_state(s, st, fds, &w, NULL);
    if (sent == 0) {
        shutdown(s, SHUT_WR);
        cpr_transfer_opts o = opts_timeout(10000);
        int ret = cpr_transfer_wait_hangup(s, &o, NULL);
        status = ret == 0 ? 0 : ret == -EPROTO ? 1 : ret == -ECONNRESET ? 2 : 3;
    }
    cpr_state_free(st);
    g_array_free(fds, TRUE);
    _exit(status);
}

static void add(cpr_state *st, GArray *fds, uint32_t kind, const char *name, uint32_t type,
                uint64_t size, int fd)
{
    cpr_state_entry e = { .kind = kind, .name = name, .type = type, .size = size,
                          .page_size = size ? 4096 : 0, .slot = (int32_t)fds->len };
    cpr_state_add(st, &e, strlen(name));
    g_array_append_val(fds, fd);
}

static void build_pipe_as_file(cpr_state *st, GArray *fds)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        _exit(6);
    add(st, fds, CPR_STATE_FD, "disk0", S_IFREG, 0, p[0]);
}

/* Enough fds for the receiver to check their types on two threads; the last is a pipe that
 * the table calls a character device. */
#define MANY_FDS 3000
static void build_many_last_wrong(cpr_state *st, GArray *fds)
{
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC), p[2];
    if (null < 0 || pipe2(p, O_CLOEXEC) < 0)
        _exit(6);
    for (int i = 0; i < MANY_FDS; i++) {
        cpr_state_entry e = { .kind = CPR_STATE_FD, .name = "dev", .id = i, .type = S_IFCHR,
                              .slot = (int32_t)fds->len };
        cpr_state_add(st, &e, 3);
        int fd = i == MANY_FDS - 1 ? p[0] : null;
        g_array_append_val(fds, fd);
    }
}

static void build_small_ram(cpr_state *st, GArray *fds)
{
    int m = memfd_create("small", MFD_CLOEXEC);
    if (m < 0 || ftruncate(m, 4096) < 0)
        _exit(6);
    add(st, fds, CPR_STATE_RAM, "pc.ram", S_IFREG, 1ull << 30, m);
}

static void build_extra_fd(cpr_state *st, GArray *fds)
{
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    add(st, fds, CPR_STATE_FD, "a", S_IFCHR, 0, null);
    add(st, fds, CPR_STATE_FD, "b", S_IFCHR, 0, null);
    int extra = dup(null);
    g_array_append_val(fds, extra); /* sent, but no entry names it */
}

static void build_long_name(cpr_state *st, GArray *fds)
{
    char name[CPR_FD_NAME_MAX + 2];
    memset(name, 'n', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    add(st, fds, CPR_STATE_FD, name, S_IFCHR, 0, open("/dev/null", O_RDONLY | O_CLOEXEC));
}

/* Listens, lets the crafted sender in, and returns the result of receiving its state. */
static int receive_crafted(void (*build)(cpr_state *, GArray *), tamper_fn tamper,
                           const cpr_transfer_opts *o, int code, const char *needle, int sender_exit)
{
    int lfd = cpr_transfer_listen(sock_path, NULL);
    ck_assert_int_ge(lfd, 0);
    pid_t pid = crafted_sender(build, tamper);
    int sock = cpr_transfer_accept(lfd, o, NULL);
    ck_assert_int_ge(sock, 0);
    int before = proc_fd_count();
    size_t had = cpr_fd_count(ctx), had_ram = cpr_ram_block_count(ctx);
    cpr_error *err = NULL;
    int ret = cpr_transfer_receive(ctx, sock, o, &err);
    ck_assert_int_eq(ret, code);
    if (code < 0) {
        ck_assert_msg(strstr(cpr_error_message(err), needle), "'%s' does not say '%s'",
                      cpr_error_message(err), needle);
        /* Every fd that arrived was closed, and nothing was installed. */
        ck_assert_int_eq(proc_fd_count(), before);
        ck_assert_uint_eq(cpr_fd_count(ctx), had);
        ck_assert_uint_eq(cpr_ram_block_count(ctx), had_ram);
        close(sock);
    } else {
        cpr_transfer_finish(sock, NULL);
    }
    cpr_error_free(err);
    ck_assert_int_eq(proc_wait(pid), sender_exit);
    close(lfd);
    return ret;
}

START_TEST(test_receive_refuses_fd_of_wrong_type)
{
    cpr_transfer_opts o = opts_timeout(10000);
    receive_crafted(build_pipe_as_file, NULL, &o, -EPROTO, "fd 'disk0' id 0: expected a regular file", 1);
}
END_TEST

START_TEST(test_receive_checks_every_fd_of_a_large_table)
{
    cpr_transfer_opts o = opts_timeout(30000);
    g_autofree char *needle = g_strdup_printf("fd 'dev' id %d: expected a character device", MANY_FDS - 1);
    receive_crafted(build_many_last_wrong, NULL, &o, -EPROTO, needle, 1);
}
END_TEST

START_TEST(test_receive_refuses_ram_fd_smaller_than_table)
{
    cpr_transfer_opts o = opts_timeout(10000);
    receive_crafted(build_small_ram, NULL, &o, -EPROTO, "ram block 'pc.ram': fd", 1);
    ck_assert_ptr_null(cpr_ram_block_find(ctx, "pc.ram"));
}
END_TEST

START_TEST(test_receive_closes_fd_without_table_entry)
{
    cpr_transfer_opts o = opts_timeout(10000);
    int before = proc_fd_count();
    receive_crafted(build_extra_fd, NULL, &o, 0, NULL, 0);
    /* Two named fds installed; the third, unnamed, closed on arrival. */
    ck_assert_uint_eq(cpr_fd_count(ctx), 2);
    ck_assert_int_eq(proc_fd_count(), before + 2);
}
END_TEST

START_TEST(test_receive_refuses_name_over_limit)
{
    cpr_transfer_opts o = opts_timeout(10000);
    receive_crafted(build_long_name, NULL, &o, -ENAMETOOLONG, "longer than 255", 1);
}
END_TEST

/* ---- crafted old VMMs that lie in the preamble or cut the state short ---- */

static void build_one_fd(cpr_state *st, GArray *fds)
{
    add(st, fds, CPR_STATE_FD, "serial", S_IFCHR, 0, open("/dev/null", O_RDONLY | O_CLOEXEC));
}

static void build_exec_state(cpr_state *st, GArray *fds)
{
    st->mode = CPR_MODE_CPR_EXEC;
    build_one_fd(st, fds);
}

static void put_le32(uint8_t *p, uint32_t v)
{
    v = GUINT32_TO_LE(v);
    memcpy(p, &v, 4);
}

static uint32_t get_le32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return GUINT32_FROM_LE(v);
}

static void tamper_magic(uint8_t *pre, GArray *fds, size_t *len) { pre[7] = '2'; }
static void tamper_flags(uint8_t *pre, GArray *fds, size_t *len) { put_le32(pre + 12, 1); }
static void tamper_two_fds_more(uint8_t *pre, GArray *fds, size_t *len) { put_le32(pre + 8, get_le32(pre + 8) + 2); }
static void tamper_twenty_fds(uint8_t *pre, GArray *fds, size_t *len) { put_le32(pre + 8, 20); }
static void tamper_cut_state(uint8_t *pre, GArray *fds, size_t *len) { *len = 24 + 4; }

/* A 4 KiB-page memfd of `size` bytes, announced with `page_size`-byte pages. */
static void add_ram(cpr_state *st, GArray *fds, uint64_t size, uint64_t page_size)
{
    int m = memfd_create("ram", MFD_CLOEXEC);
    if (m < 0 || ftruncate(m, (off_t)size) < 0)
        _exit(6);
    cpr_state_entry e = { .kind = CPR_STATE_RAM, .name = "pc.ram", .type = S_IFREG, .size = size,
                          .page_size = page_size, .slot = (int32_t)fds->len };
    cpr_state_add(st, &e, 6);
    g_array_append_val(fds, m);
}

static void build_ram_of_other_page_size(cpr_state *st, GArray *fds) { add_ram(st, fds, 2u << 20, 2u << 20); }
static void build_ram_of_partial_page(cpr_state *st, GArray *fds) { add_ram(st, fds, 8192, 2u << 20); }

static void build_socket_as_ram(cpr_state *st, GArray *fds)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        _exit(6);
    add(st, fds, CPR_STATE_RAM, "pc.ram", S_IFSOCK, 4096, sv[0]);
}

/* What a lying or broken old VMM sends, and the refusal that must name it. Limits of 0 are
 * the defaults. */
struct refusal {
    void (*build)(cpr_state *st, GArray *fds);
    tamper_fn tamper;
    uint32_t max_fds;
    uint64_t max_state_bytes;
    int code;
    const char *needle;
};

static const struct refusal refusals[] = {
    { build_one_fd, tamper_magic, 0, 0, -EPROTO, "does not speak the cpr channel protocol" },
    { build_one_fd, tamper_flags, 0, 0, -EPROTO, "does not speak the cpr channel protocol" },
    { build_one_fd, tamper_two_fds_more, 0, 0, -EPROTO, "the peer announced 3 fds, 1 arrived" },
    { build_one_fd, tamper_twenty_fds, 10, 0, -E2BIG, "the peer announces 20 fds, the limit is 10" },
    { build_one_fd, NULL, 0, 16, -E2BIG, "bytes of cpr state, the limit is 16" },
    { build_one_fd, tamper_cut_state, 0, 0, -ECONNRESET, "peer closed at byte 4 of" },
    { build_exec_state, NULL, 0, 0, -EPROTO, "the cpr state is for mode cpr-exec, not cpr-transfer" },
    { build_socket_as_ram, NULL, 0, 0, -EPROTO, "is a socket, not a memfd or file" },
    { build_ram_of_other_page_size, NULL, 0, 0, -EPROTO, "has 4096-byte pages, the table says 2097152" },
    { build_ram_of_partial_page, NULL, 0, 0, -EBADMSG, "size 8192 is not a non-zero multiple of page size 2097152" },
};

/* One refusal per loop index (_i): named, every fd that arrived closed, nothing installed. */
START_TEST(test_receive_refuses_what_the_peer_gets_wrong)
{
    const struct refusal *c = &refusals[_i];
    cpr_transfer_opts o = opts_timeout(10000);
    o.max_fds = c->max_fds;
    o.max_state_bytes = c->max_state_bytes;
    receive_crafted(c->build, c->tamper, &o, c->code, c->needle, 1);
}
END_TEST

START_TEST(test_receive_refuses_an_fd_already_saved_here)
{
    int mine = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ck_assert_int_eq(cpr_fd_save(ctx, "serial", 0, mine, NULL), 0);
    cpr_transfer_opts o = opts_timeout(10000);
    receive_crafted(build_one_fd, NULL, &o, -EEXIST, "fd 'serial' id 0 is already saved here", 1);
    /* Ours is untouched. */
    ck_assert_int_eq(cpr_fd_find(ctx, "serial", 0), mine);
    ck_assert_int_ge(fcntl(mine, F_GETFD), 0);
    cpr_fd_delete(ctx, "serial", 0);
    close(mine);
}
END_TEST

START_TEST(test_receive_refuses_more_fds_than_limit)
{
    peer p = peer_send(11, 0);
    g_autofree char *hello = peer_line(&p);
    cpr_transfer_opts o = opts_timeout(60000);
    o.max_fds = 10;
    ck_assert_cpr_fails(cpr_transfer_incoming(ctx, sock_path, &o, errp_), -EPROTO, "the limit is 10");
    ck_assert_uint_eq(cpr_fd_count(ctx), 0);
    g_autofree char *res = peer_line(&p);
    ck_assert_msg(g_str_has_prefix(res, "error -71 transfer: cpr channel: the new process refused"),
                  "peer said: %s", res);
    ck_assert_int_eq(peer_end(&p), 2);
}
END_TEST

/* ---- the outgoing side against a new VMM that misbehaves ---- */

/* A forked new VMM: accepts, reads everything, then hangs up (close_early) or waits to be killed. */
static pid_t fake_incoming(int lfd, int hang_up)
{
    pid_t pid = fork();
    if (pid)
        return pid;
    int s = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    char buf[4096];
    while (read(s, buf, sizeof(buf)) > 0)
        ;
    if (hang_up)
        _exit(0);
    pause();
    _exit(0);
}

static int saved_null;

static void save_some_fds(void)
{
    saved_null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ck_assert_int_eq(cpr_fd_save(ctx, "serial", 0, saved_null, NULL), 0);
}

/* After a failed outgoing transfer the old VMM still has everything. */
static void assert_old_side_intact(void)
{
    ck_assert_int_eq(cpr_fd_find(ctx, "serial", 0), saved_null);
    ck_assert_int_ge(fcntl(saved_null, F_GETFD), 0);
    cpr_fd_delete(ctx, "serial", 0);
    close(saved_null);
}

/* Runs the outgoing side against a fake new VMM and checks the error and that nothing was lost. */
static void outgoing_fails(int hang_up, const cpr_transfer_opts *o, int code, const char *needle)
{
    save_some_fds();
    int lfd = cpr_transfer_listen(sock_path, NULL);
    pid_t pid = fake_incoming(lfd, hang_up);
    ck_assert_cpr_fails(cpr_transfer_outgoing(ctx, sock_path, o, errp_), code, needle);
    if (!hang_up)
        kill(pid, SIGKILL);
    proc_wait(pid);
    close(lfd);
    assert_old_side_intact();
}

START_TEST(test_outgoing_fails_when_peer_hangs_up_without_confirming)
{
    cpr_transfer_opts o = opts_timeout(10000);
    outgoing_fails(1, &o, -ECONNRESET, "hung up without confirming");
}
END_TEST

START_TEST(test_outgoing_times_out_waiting_for_hangup)
{
    cpr_transfer_opts o = opts_timeout(200);
    outgoing_fails(0, &o, -ETIMEDOUT, "timed out");
}
END_TEST

START_TEST(test_outgoing_is_cancelled_by_cancel_fd)
{
    cpr_transfer_opts o = opts_timeout(-1);
    o.cancel_fd = eventfd(1, EFD_CLOEXEC); /* already signalled: cancel at the first wait */
    outgoing_fails(0, &o, -ECANCELED, "cancelled");
    close(o.cancel_fd);
}
END_TEST

START_TEST(test_connect_names_missing_socket)
{
    ck_assert_cpr_fails(cpr_transfer_connect(sock_path, NULL, errp_), -ENOENT, sock_path);
    cpr_transfer_opts o;
    cpr_transfer_opts_init(&o);
    o.reserved0 = 1;
    ck_assert_cpr_fails(cpr_transfer_connect(sock_path, &o, errp_), -EINVAL, "reserved");
    /* Options from a newer header: accepted while the fields we do not know are zero. */
    struct { cpr_transfer_opts o; uint64_t newer; } big = { .newer = 0 };
    cpr_transfer_opts_init(&big.o);
    big.o.size = sizeof(big);
    ck_assert_cpr_fails(cpr_transfer_connect(sock_path, &big.o, errp_), -ENOENT, sock_path);
    big.newer = 1;
    ck_assert_cpr_fails(cpr_transfer_connect(sock_path, &big.o, errp_), -EINVAL, "is set");
    big.o.size = 8;
    ck_assert_cpr_fails(cpr_transfer_connect(sock_path, &big.o, errp_), -EINVAL, "smaller");
}
END_TEST

static Suite *transfer_suite(void)
{
    Suite *s = suite_create("transfer");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_listen_publishes_the_path_only_once_listening);
    tcase_add_test(tc, test_transfer_passes_1_fd);
    tcase_add_test(tc, test_transfer_passes_253_fds_in_one_batch);
    tcase_add_test(tc, test_transfer_passes_254_fds_in_two_batches);
    tcase_add_test(tc, test_transfer_passes_10000_fds);
    tcase_add_test(tc, test_transfer_shares_multi_gib_memfd_without_copy);
    tcase_add_test(tc, test_transfer_shares_hugepage_memfd);
    tcase_add_test(tc, test_listen_creates_socket_mode_0600);
    tcase_add_test(tc, test_accept_refuses_peer_with_other_uid);
    tcase_add_test(tc, test_receive_refuses_fd_of_wrong_type);
    tcase_add_test(tc, test_receive_refuses_ram_fd_smaller_than_table);
    tcase_add_test(tc, test_receive_checks_every_fd_of_a_large_table);
    tcase_add_test(tc, test_receive_closes_fd_without_table_entry);
    tcase_add_test(tc, test_receive_refuses_name_over_limit);
    tcase_add_test(tc, test_receive_refuses_more_fds_than_limit);
    tcase_add_loop_test(tc, test_receive_refuses_what_the_peer_gets_wrong, 0, (int)G_N_ELEMENTS(refusals));
    tcase_add_test(tc, test_receive_refuses_an_fd_already_saved_here);
    tcase_add_test(tc, test_outgoing_fails_when_peer_hangs_up_without_confirming);
    tcase_add_test(tc, test_outgoing_times_out_waiting_for_hangup);
    tcase_add_test(tc, test_outgoing_is_cancelled_by_cancel_fd);
    tcase_add_test(tc, test_connect_names_missing_socket);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(transfer_suite)
