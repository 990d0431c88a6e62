/* SPDX-License-Identifier: MIT */
/* Transports with real files, pipes, sockets and child processes: a savevm stream goes out
 * through each and comes back intact; failures name the address or command. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

struct blob {
    uint32_t a;
    uint64_t b;
};

/* No check macros here: the "save" role runs this outside any test. Returns 0 or -1. */
static cpr_ctx *make_ctx(struct blob *obj)
{
    cpr_ctx *ctx;
    cpr_desc *d;
    if (cpr_ctx_new(&ctx, 0, NULL) < 0)
        return NULL;
    if (cpr_desc_new("blob", 1, 1, sizeof(*obj), &d, NULL) < 0) {
        cpr_ctx_free(ctx);
        return NULL;
    }
    int ok = cpr_desc_add(d, "a", CPR_TYPE_U32, CPR_MEMBER(struct blob, a), NULL) == 0 &&
             cpr_desc_add(d, "b", CPR_TYPE_U64, CPR_MEMBER(struct blob, b), NULL) == 0 &&
             cpr_savevm_register(ctx, NULL, 0, d, obj, 0, NULL, NULL) == 0;
    cpr_desc_unref(d);
    if (!ok) {
        cpr_ctx_free(ctx);
        return NULL;
    }
    return ctx;
}

static int do_save(const char *uri)
{
    struct blob src = { 0xabcd, 0x1122334455667788ull };
    cpr_ctx *ctx = make_ctx(&src);
    cpr_addr *addr = NULL;
    cpr_stream *w;
    int ret = ctx ? cpr_addr_parse_uri(uri, &addr, NULL) : -1;
    if (ret == 0 && (ret = cpr_transport_open_output(addr, &w, NULL)) == 0) {
        ret = cpr_savevm_save(ctx, w, NULL);
        int r2 = cpr_stream_close(w, NULL);
        ret = ret < 0 ? ret : r2;
    }
    cpr_addr_free(addr);
    cpr_ctx_free(ctx);
    return ret < 0 ? -1 : 0;
}

static void save_to(const char *uri)
{
    ck_assert_int_eq(do_save(uri), 0);
}

static void load_from_listener(cpr_listener *l)
{
    struct blob dst = { 0, 0 };
    cpr_ctx *ctx = make_ctx(&dst);
    ck_assert_ptr_nonnull(ctx);
    cpr_stream *r;
    ck_assert_int_eq(cpr_listener_accept(l, 10000, &r, NULL), 0);
    ck_assert_int_eq(cpr_savevm_load(ctx, r, NULL), 0);
    ck_assert_int_eq(cpr_stream_close(r, NULL), 0);
    ck_assert_uint_eq(dst.a, 0xabcd);
    ck_assert_uint_eq(dst.b, 0x1122334455667788ull);
    cpr_ctx_free(ctx);
}

/* The other side runs as a fresh process (this program re-executed with a role), so it owns
 * only what it allocates itself: clean under Valgrind and sanitizers. */
static const char *self_path;

static pid_t spawn_self(const char *role, const char *uri)
{
    pid_t pid = fork();
    if (pid == 0) {
        execl(self_path, self_path, role, uri, (char *)NULL);
        _exit(127);
    }
    ck_assert_int_gt(pid, 0);
    return pid;
}

/* Role "connect-as-nobody": connect as uid 65534 and expect the listener to hang up. */
static int connect_as_nobody(const char *uri)
{
    cpr_addr *addr;
    int fd = -1, ret = 1;
    if (cpr_addr_parse_uri(uri, &addr, NULL) < 0)
        return 1;
    if (setuid(65534) == 0 && cpr_transport_connect(addr, &fd, NULL) == 0) {
        char c;
        ret = read(fd, &c, 1) == 0 ? 0 : 2; /* refused: the listener closed us */
        close(fd);
    }
    cpr_addr_free(addr);
    return ret;
}

/* A child process saves to uri while this one accepts on l and loads. */
static void save_in_child_load_here(const char *uri, cpr_listener *l)
{
    pid_t pid = spawn_self("save", uri);
    load_from_listener(l);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void load_from(const char *uri)
{
    cpr_addr *addr;
    cpr_listener *l;
    ck_assert_int_eq(cpr_addr_parse_uri(uri, &addr, NULL), 0);
    ck_assert_int_eq(cpr_listener_new(addr, 0, &l, NULL), 0);
    load_from_listener(l);
    cpr_listener_free(l);
    cpr_addr_free(addr);
}

START_TEST(test_file_with_offset_keeps_the_prefix)
{
    char path[] = "/tmp/cpr-transport-XXXXXX";
    int fd = mkostemp(path, O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "PREFIX--", 8), 8);
    ck_assert_int_eq(write(fd, "stale tail that must go away", 28), 28);
    close(fd);
    g_autofree char *out = g_strdup_printf("file:%s,offset=8", path);
    save_to(out);
    char head[8];
    fd = open(path, O_RDONLY | O_CLOEXEC);
    ck_assert_int_eq(read(fd, head, 8), 8);
    ck_assert_int_eq(memcmp(head, "PREFIX--", 8), 0);
    close(fd);
    load_from(out);
    unlink(path);
}
END_TEST

START_TEST(test_exec_output_and_input_run_the_command)
{
    char path[] = "/tmp/cpr-exec-XXXXXX";
    int fd = mkostemp(path, O_CLOEXEC);
    close(fd);
    g_autofree char *out = g_strdup_printf("exec:cat > %s", path);
    g_autofree char *in = g_strdup_printf("exec:cat %s", path);
    save_to(out);
    load_from(in);
    unlink(path);
}
END_TEST

START_TEST(test_exec_command_failure_is_reported)
{
    struct blob src = { 1, 2 };
    cpr_ctx *ctx = make_ctx(&src);
    ck_assert_ptr_nonnull(ctx);
    cpr_addr *addr;
    cpr_stream *w;
    ck_assert_int_eq(cpr_addr_parse_uri("exec:cat >/dev/null; exit 3", &addr, NULL), 0);
    ck_assert_int_eq(cpr_transport_open_output(addr, &w, NULL), 0);
    ck_assert_int_eq(cpr_savevm_save(ctx, w, NULL), 0);
    ck_assert_cpr_fails(cpr_stream_close(w, errp_), -EIO, "exited with status 3");
    cpr_addr_free(addr);
    /* A command that reads nothing: the writer gets EPIPE, not a fatal SIGPIPE. */
    ck_assert_int_eq(cpr_addr_parse_uri("exec:exit 0", &addr, NULL), 0);
    ck_assert_int_eq(cpr_transport_open_output(addr, &w, NULL), 0);
    usleep(200000); /* let it exit: its stdin pipe has no reader any more */
    ck_assert_cpr_fails(cpr_savevm_save(ctx, w, errp_), -EPIPE, "write to fd");
    cpr_stream_free(w);
    cpr_addr_free(addr);
    cpr_ctx_free(ctx);
}
END_TEST

START_TEST(test_unix_listener_accepts_a_writer_in_another_process)
{
    char dir[] = "/tmp/cpr-sock-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    g_autofree char *uri = g_strdup_printf("unix:%s/main.sock", dir);
    cpr_addr *addr;
    cpr_listener *l;
    ck_assert_int_eq(cpr_addr_parse_uri(uri, &addr, NULL), 0);
    ck_assert_int_eq(cpr_listener_new(addr, CPR_LISTEN_SAME_UID, &l, NULL), 0);
    ck_assert_int_ge(cpr_listener_fd(l), 0);
    save_in_child_load_here(uri, l);
    cpr_listener_free(l);
    ck_assert_int_eq(access(cpr_addr_path(addr), F_OK), -1); /* socket file removed */
    cpr_addr_free(addr);
    rmdir(dir);
}
END_TEST

START_TEST(test_unix_listener_refuses_a_peer_of_another_uid)
{
    if (geteuid() != 0)
        return; /* only root can become another uid: nothing to test as a normal user */
    char dir[] = "/tmp/cpr-sock-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    chmod(dir, 0777);
    g_autofree char *uri = g_strdup_printf("unix:%s/cpr.sock", dir);
    cpr_addr *addr;
    cpr_listener *l;
    ck_assert_int_eq(cpr_addr_parse_uri(uri, &addr, NULL), 0);
    ck_assert_int_eq(cpr_listener_new(addr, CPR_LISTEN_SAME_UID, &l, NULL), 0);
    chmod(cpr_addr_path(addr), 0777);
    pid_t pid = spawn_self("connect-as-nobody", uri);
    int fd = -1;
    ck_assert_cpr_fails(cpr_listener_accept_fd(l, 10000, &fd, errp_), -EPERM, "refused a peer of uid 65534");
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    cpr_listener_free(l);
    cpr_addr_free(addr);
    rmdir(dir);
}
END_TEST

START_TEST(test_tcp_port_zero_listens_and_accepts)
{
    cpr_addr *addr;
    cpr_listener *l;
    ck_assert_int_eq(cpr_addr_parse_uri("tcp:127.0.0.1:0", &addr, NULL), 0);
    ck_assert_int_eq(cpr_listener_new(addr, 0, &l, NULL), 0);
    int port = cpr_listener_port(l);
    ck_assert_int_gt(port, 0);
    g_autofree char *uri = g_strdup_printf("tcp:127.0.0.1:%d", port);
    save_in_child_load_here(uri, l);
    cpr_listener_free(l);
    cpr_addr_free(addr);
}
END_TEST

static int nodelay(int fd)
{
    int on = 0;
    socklen_t len = sizeof(on);
    ck_assert_int_eq(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, &len), 0);
    return on;
}

/* Both ends turn Nagle off: a small acknowledgement never waits for the peer's delayed ACK
 * (seen as 40 ms more pause with TLS, whose records go out in pieces). */
START_TEST(test_tcp_connections_have_nagle_off_at_both_ends)
{
    cpr_addr *addr;
    cpr_listener *l;
    ck_assert_int_eq(cpr_addr_parse_uri("tcp:127.0.0.1:0", &addr, NULL), 0);
    ck_assert_int_eq(cpr_listener_new(addr, 0, &l, NULL), 0);
    g_autofree char *uri = g_strdup_printf("tcp:127.0.0.1:%d", cpr_listener_port(l));
    cpr_addr *to;
    ck_assert_int_eq(cpr_addr_parse_uri(uri, &to, NULL), 0);
    int client = -1, server = -1;
    ck_assert_int_eq(cpr_transport_connect(to, &client, NULL), 0);
    ck_assert_int_eq(cpr_listener_accept_fd(l, 10000, &server, NULL), 0);
    ck_assert_int_eq(nodelay(client), 1);
    ck_assert_int_eq(nodelay(server), 1);
    close(client);
    close(server);
    cpr_addr_free(to);
    cpr_listener_free(l);
    cpr_addr_free(addr);
}
END_TEST

START_TEST(test_fd_transport_borrows_a_pipe)
{
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    g_autofree char *out = g_strdup_printf("fd:%d", p[1]);
    g_autofree char *in = g_strdup_printf("fd:%d", p[0]);
    save_to(out);
    ck_assert_int_eq(fcntl(p[1], F_GETFD), FD_CLOEXEC); /* still open: borrowed */
    close(p[1]);
    load_from(in);
    close(p[0]);
}
END_TEST

START_TEST(test_refused_connection_and_timeout_name_the_address)
{
    cpr_addr *addr;
    cpr_stream *w;
    ck_assert_int_eq(cpr_addr_parse_uri("unix:/tmp/cpr-no-such-dir/x.sock", &addr, NULL), 0);
    ck_assert_cpr_fails(cpr_transport_open_output(addr, &w, errp_), -ENOENT, "unix:/tmp/cpr-no-such-dir/x.sock");
    cpr_addr_free(addr);
    cpr_listener *l;
    ck_assert_int_eq(cpr_addr_parse_uri("tcp:127.0.0.1:0", &addr, NULL), 0);
    ck_assert_int_eq(cpr_listener_new(addr, 0, &l, NULL), 0);
    int fd;
    ck_assert_cpr_fails(cpr_listener_accept_fd(l, 10, &fd, errp_), -ETIMEDOUT, "within 10 ms");
    g_autofree char *uri = g_strdup_printf("tcp:127.0.0.1:%d", cpr_listener_port(l));
    cpr_listener_free(l);
    cpr_addr_free(addr);
    ck_assert_int_eq(cpr_addr_parse_uri(uri, &addr, NULL), 0);
    ck_assert_cpr_fails(cpr_transport_open_output(addr, &w, errp_), -ECONNREFUSED, uri);
    cpr_addr_free(addr);
}
END_TEST

static Suite *transport_suite(void)
{
    Suite *s = suite_create("transport");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_file_with_offset_keeps_the_prefix);
    tcase_add_test(tc, test_exec_output_and_input_run_the_command);
    tcase_add_test(tc, test_exec_command_failure_is_reported);
    tcase_add_test(tc, test_unix_listener_accepts_a_writer_in_another_process);
    tcase_add_test(tc, test_unix_listener_refuses_a_peer_of_another_uid);
    tcase_add_test(tc, test_tcp_port_zero_listens_and_accepts);
    tcase_add_test(tc, test_tcp_connections_have_nagle_off_at_both_ends);
    tcase_add_test(tc, test_fd_transport_borrows_a_pipe);
    tcase_add_test(tc, test_refused_connection_and_timeout_name_the_address);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv)
{
    self_path = argv[0];
    if (argc == 3 && strcmp(argv[1], "save") == 0)
        return do_save(argv[2]) == 0 ? 0 : 1;
    if (argc == 3 && strcmp(argv[1], "connect-as-nobody") == 0)
        return connect_as_nobody(argv[2]);
    SRunner *sr = srunner_create(transport_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
