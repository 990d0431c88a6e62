/* SPDX-License-Identifier: MIT */
/*
 * TLS (cpr/tls.h, lib/channel/tls.c): the credentials object and its registry, the parameters,
 * and sessions over a socketpair: a good handshake carrying a stream (and nothing readable on
 * the wire), a server from another CA, a wrong hostname, a client without a certificate, and
 * plaintext on either side. Certificates are made by tests/tls/certgen.c at suite start.
 */
#include <errno.h>
#include <sys/socket.h>
#include <glib/gstdio.h>
#include <unistd.h>

#include "channel/tls.h"
#include "format/stream.h"
#include "testutil.h"

#ifdef CPR_HAVE_GNUTLS
#include "certgen.h"

static char *dir_a, *dir_b, *dir_a_noclient; /* CA A; CA B; CA A without client files */

static void make_certs(void)
{
    char *root = g_dir_make_tmp("cpr-tls-XXXXXX", NULL);
    g_assert_nonnull(root);
    dir_a = g_build_filename(root, "a", NULL);
    dir_b = g_build_filename(root, "b", NULL);
    dir_a_noclient = g_build_filename(root, "a-noclient", NULL);
    g_mkdir(dir_a, 0700);
    g_mkdir(dir_b, 0700);
    g_assert_cmpint(certgen_dir(dir_a, "CA A", "dest.example,127.0.0.1"), ==, 0);
    g_assert_cmpint(certgen_dir(dir_b, "CA B", "dest.example,127.0.0.1"), ==, 0);
    /* Outside any test: glib's asserts. A client that has the CA but no certificate of its own. */
    g_mkdir(dir_a_noclient, 0700);
    char *data;
    gsize len;
    g_autofree char *ca = g_build_filename(dir_a, "ca-cert.pem", NULL);
    g_autofree char *ca2 = g_build_filename(dir_a_noclient, "ca-cert.pem", NULL);
    g_assert_true(g_file_get_contents(ca, &data, &len, NULL));
    g_assert_true(g_file_set_contents(ca2, data, (gssize)len, NULL));
    g_free(data);
    g_free(root);
}

static cpr_tls_creds *creds(const char *dir, cpr_tls_endpoint ep, unsigned int flags)
{
    cpr_tls_creds *c = NULL;
    cpr_error *err = NULL;
    int r = cpr_tls_creds_new_x509(dir, ep, flags, &c, &err);
    ck_assert_msg(r == 0, "creds from %s: %s", dir, err ? cpr_error_message(err) : "?");
    return c;
}

START_TEST(test_creds_files)
{
    cpr_tls_creds *c = NULL;
    ck_assert_int_eq(cpr_tls_available(), 1);
    ck_assert_cpr_fails(cpr_tls_creds_new_x509("/nonexistent-cpr", CPR_TLS_ENDPOINT_SERVER, 0, &c, errp_), -ENOENT,
                        "cannot read ca-cert.pem");
    /* A server needs its own certificate; a client without one is fine. */
    ck_assert_cpr_fails(cpr_tls_creds_new_x509(dir_a_noclient, CPR_TLS_ENDPOINT_SERVER, 0, &c, errp_), -ENOENT,
                        "server-cert.pem");
    ck_assert_ptr_null(c);
    c = creds(dir_a_noclient, CPR_TLS_ENDPOINT_CLIENT, CPR_TLS_VERIFY_PEER);
    cpr_tls_creds_free(c);
    ck_assert_cpr_fails(cpr_tls_creds_new_x509(dir_a, 7, 0, &c, errp_), -EINVAL, "unknown endpoint");
    ck_assert_cpr_fails(cpr_tls_creds_new_x509(dir_a, CPR_TLS_ENDPOINT_CLIENT, 0x10, &c, errp_), -EINVAL,
                        "unknown flags");
    cpr_tls_creds_free(NULL);
}
END_TEST

START_TEST(test_creds_registry)
{
    cpr_ctx *ctx;
    ck_assert_int_eq(cpr_ctx_new(&ctx, 0, NULL), 0);
    cpr_tls_creds *c = creds(dir_a, CPR_TLS_ENDPOINT_SERVER, CPR_TLS_VERIFY_PEER);
    cpr_tls_creds *c2 = creds(dir_a, CPR_TLS_ENDPOINT_SERVER, 0);
    ck_assert_int_eq(cpr_tls_creds_add(ctx, "tls0", c, NULL), 0);
    ck_assert_cpr_fails(cpr_tls_creds_add(ctx, "tls0", c2, errp_), -EEXIST, "'tls0' already exist");
    ck_assert_cpr_fails(cpr_tls_creds_add(ctx, "", c2, errp_), -EINVAL, "id");
    cpr_tls_creds_free(c2); /* refused: still ours */
    /* A lookup holds its own reference: deleting the id does not free what a job uses. */
    cpr_tls_creds *got = NULL;
    ck_assert_int_eq(cpr_tls_creds_lookup(ctx, "tls0", &got, NULL), 0);
    ck_assert_ptr_eq(got, c);
    ck_assert_int_eq(cpr_tls_creds_del(ctx, "tls0", NULL), 0);
    ck_assert_int_eq(cpr_tls_creds_endpoint(got), CPR_TLS_ENDPOINT_SERVER);
    cpr_tls_creds_unref(got);
    ck_assert_cpr_fails(cpr_tls_creds_del(ctx, "tls0", errp_), -ENOENT, "no TLS credentials with id 'tls0'");
    ck_assert_cpr_fails(cpr_tls_creds_lookup(ctx, "tls0", &got, errp_), -ENOENT, "'tls0'");
    /* Freed with the context. */
    ck_assert_int_eq(cpr_tls_creds_add(ctx, "tls1", creds(dir_a, CPR_TLS_ENDPOINT_CLIENT, 0), NULL), 0);
    cpr_ctx_free(ctx);
}
END_TEST

START_TEST(test_params)
{
    cpr_ctx *ctx;
    char *v = NULL;
    ck_assert_int_eq(cpr_ctx_new(&ctx, 0, NULL), 0);
    ck_assert_int_eq(cpr_param_get(ctx, "tls-creds", &v, NULL), 0);
    ck_assert_str_eq(v, "");
    cpr_free(v);
    ck_assert_int_eq(cpr_param_set(ctx, "tls-creds", "tls0", NULL), 0);
    ck_assert_int_eq(cpr_param_set(ctx, "tls-hostname", "dest.example", NULL), 0);
    ck_assert_int_eq(cpr_param_get(ctx, "tls-creds", &v, NULL), 0);
    ck_assert_str_eq(v, "tls0");
    cpr_free(v);
    ck_assert_int_eq(cpr_param_get(ctx, "tls-hostname", &v, NULL), 0);
    ck_assert_str_eq(v, "dest.example");
    cpr_free(v);
    ck_assert_int_eq(cpr_param_set(ctx, "tls-creds", "", NULL), 0); /* QEMU's off */
    ck_assert_int_eq(cpr_param_get(ctx, "tls-creds", &v, NULL), 0);
    ck_assert_str_eq(v, "");
    cpr_free(v);
    ck_assert_int_eq(cpr_param_set(ctx, "tls-authz", "authz0", NULL), 0);
    ck_assert_int_eq(cpr_param_get(ctx, "tls-authz", &v, NULL), 0);
    ck_assert_str_eq(v, "authz0");
    cpr_free(v);
    cpr_ctx_free(ctx);
}
END_TEST

/* ---- sessions over a socketpair: the server's side on a thread ---- */

struct side {
    cpr_tls_creds *creds;
    int fd;
    const char *hostname;
    int plaintext; /* no TLS: write a plain stream's first bytes and close */
    int cut;       /* dies mid-handshake: a client sends part of a handshake record, a server
                    * reads the client's first bytes; then it closes */
    int stall;     /* a client that sends part of a handshake record and then nothing, open */
    int rcvtimeo_ms; /* SO_RCVTIMEO on this side's socket (a caller's bound on its reads) */
    int ret;
    char *msg;
    struct cpr_tls_session *t;
};

static void side_handshake(struct side *s, cpr_tls_endpoint role)
{
    cpr_error *err = NULL;
    if (s->plaintext) {
        static const char hdr[] = "CPRSTRM\0\0\0\0\1plain migration stream";
        ck_assert_int_eq(send(s->fd, hdr, sizeof(hdr), MSG_NOSIGNAL), (ssize_t)sizeof(hdr));
        shutdown(s->fd, SHUT_WR);
        s->ret = 0;
        return;
    }
    static const uint8_t part[] = { 22, 3, 1, 2, 0, 1, 0, 1, 252, 3, 3 }; /* ClientHello, 512 bytes due */
    if (s->stall) {
        ck_assert_int_eq(send(s->fd, part, sizeof(part), MSG_NOSIGNAL), (ssize_t)sizeof(part));
        s->ret = 0;
        return;
    }
    if (s->rcvtimeo_ms) {
        struct timeval tv = { .tv_sec = s->rcvtimeo_ms / 1000, .tv_usec = s->rcvtimeo_ms % 1000 * 1000 };
        ck_assert_int_eq(setsockopt(s->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
    }
    if (s->cut) {
        char buf[64];
        if (role == CPR_TLS_ENDPOINT_CLIENT)
            ck_assert_int_eq(send(s->fd, part, sizeof(part), MSG_NOSIGNAL), (ssize_t)sizeof(part));
        else
            ck_assert_int_gt(recv(s->fd, buf, sizeof(buf), 0), 0);
        shutdown(s->fd, SHUT_RDWR);
        s->ret = 0;
        return;
    }
    s->ret = cpr_tls_session_start(s->creds, s->fd, role, s->hostname, &s->t, &err);
    if (err) {
        s->msg = g_strdup(cpr_error_message(err));
        cpr_error_free(err);
        /* As the main channel does: a failed side closes, so its peer is not left waiting. */
        shutdown(s->fd, SHUT_RDWR);
    }
}

static gpointer server_thread(gpointer p)
{
    side_handshake(p, CPR_TLS_ENDPOINT_SERVER);
    return NULL;
}

/* Runs both handshakes; each side's result lands in its struct. */
static void handshake(struct side *client, struct side *server)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    client->fd = sv[0];
    server->fd = sv[1];
    GThread *th = g_thread_new("tls-server", server_thread, server);
    side_handshake(client, CPR_TLS_ENDPOINT_CLIENT);
    g_thread_join(th);
}

static void side_done(struct side *s)
{
    cpr_tls_session_free(s->t);
    cpr_tls_creds_free(s->creds);
    g_free(s->msg);
    close(s->fd);
}

#define assert_refused(side, needle)                                                                 \
    do {                                                                                              \
        ck_assert_int_lt((side)->ret, 0);                                                             \
        ck_assert_msg((side)->msg && strstr((side)->msg, (needle)), "message '%s' lacks '%s'",        \
                      (side)->msg ? (side)->msg : "(none)", (needle));                                \
    } while (0)

struct writer {
    cpr_stream *s;
    uint8_t *data;
    size_t len;
    int ret;
};

static gpointer writer_thread(gpointer p)
{
    struct writer *w = p;
    w->ret = cpr_stream_append(w->s, w->data, w->len, NULL);
    if (w->ret == 0)
        w->ret = cpr_stream_maybe_flush(w->s, 1, NULL);
    return NULL;
}

/* In TLS 1.3 the client's handshake ends before the server checks its certificate: a refused
 * client learns it at its first read (an alert, or the end). */
static void peer_saw_refusal(struct side *c)
{
    uint8_t b;
    if (c->ret == 0)
        ck_assert_int_le(cpr_tls_session_read(c->t, &b, 1), 0);
}

START_TEST(test_good_handshake_carries_a_stream)
{
    struct side c = { .creds = creds(dir_a, CPR_TLS_ENDPOINT_CLIENT, CPR_TLS_VERIFY_PEER), .hostname = "dest.example" };
    struct side s = { .creds = creds(dir_a, CPR_TLS_ENDPOINT_SERVER, CPR_TLS_VERIFY_PEER) };
    handshake(&c, &s);
    ck_assert_msg(c.ret == 0 && s.ret == 0, "client: %s; server: %s", c.msg, s.msg);

    /* A stream writer on the client, a reader on the server, both through their sessions;
     * written on a thread of its own, since a megabyte does not fit the socket's buffer. */
    struct writer wr = { .len = 1 << 20 };
    wr.data = g_malloc(wr.len);
    for (size_t i = 0; i < wr.len; i++)
        wr.data[i] = (uint8_t)(i * 7 + (i >> 12));
    cpr_stream *r;
    ck_assert_int_eq(cpr_stream_new_fd_writer(c.fd, 0, &wr.s, NULL), 0);
    ck_assert_int_eq(cpr_stream_new_fd_reader(s.fd, 0, &r, NULL), 0);
    cpr_tls_session_attach(c.t, wr.s);
    cpr_tls_session_attach(s.t, r);
    GThread *th = g_thread_new("writer", writer_thread, &wr);
    ck_assert_int_eq(cpr_stream_need(r, wr.len, NULL), 0);
    g_thread_join(th);
    ck_assert_int_eq(wr.ret, 0);
    ck_assert_int_eq(memcmp(r->rbuf + r->rpos, wr.data, wr.len), 0);
    cpr_stream_consume(r, wr.len);

    /* The other way, one byte (the acknowledgement's path). */
    uint8_t ack = 0x06, got = 0;
    struct iovec iov = { &ack, 1 };
    ck_assert_int_eq(cpr_tls_session_writev(s.t, &iov, 1), 1);
    ck_assert_int_eq(cpr_tls_session_read(c.t, &got, 1), 1);
    ck_assert_int_eq(got, 0x06);

    /* Nothing readable on the wire: the server reads the raw socket this time. */
    static const char secret[] = "guest RAM, page 42: the secret that must not travel in clear";
    struct iovec sv = { (void *)secret, sizeof(secret) };
    ck_assert_int_eq(cpr_tls_session_writev(c.t, &sv, 1), (ssize_t)sizeof(secret));
    char raw[4096];
    ssize_t n = recv(s.fd, raw, sizeof(raw), 0);
    ck_assert_int_gt(n, 0);
    ck_assert_ptr_null(memmem(raw, (size_t)n, "the secret", 10));

    /* The client's end of its half reads as the end on the server (after the raw bytes). */
    ck_assert_int_eq(cpr_tls_session_bye(c.t), 0);
    cpr_stream_free(wr.s);
    cpr_stream_free(r);
    g_free(wr.data);
    side_done(&c);
    side_done(&s);
}
END_TEST

START_TEST(test_server_of_another_ca_refused)
{
    struct side c = { .creds = creds(dir_a, CPR_TLS_ENDPOINT_CLIENT, CPR_TLS_VERIFY_PEER), .hostname = "dest.example" };
    struct side s = { .creds = creds(dir_b, CPR_TLS_ENDPOINT_SERVER, 0) };
    handshake(&c, &s);
    assert_refused(&c, "the server's certificate was refused");
    assert_refused(&c, "issuer is unknown");
    ck_assert_int_lt(s.ret, 0);
    side_done(&c);
    side_done(&s);
}
END_TEST

START_TEST(test_client_of_another_ca_refused)
{
    struct side c = { .creds = creds(dir_b, CPR_TLS_ENDPOINT_CLIENT, 0), .hostname = "dest.example" };
    struct side s = { .creds = creds(dir_a, CPR_TLS_ENDPOINT_SERVER, CPR_TLS_VERIFY_PEER) };
    handshake(&c, &s);
    /* GnuTLS sends no certificate the server's CA list does not name: refused as none. */
    assert_refused(&s, "no certificate from a CA this side trusts");
    peer_saw_refusal(&c);
    side_done(&c);
    side_done(&s);
}
END_TEST

START_TEST(test_wrong_hostname_refused)
{
    struct side c = { .creds = creds(dir_a, CPR_TLS_ENDPOINT_CLIENT, CPR_TLS_VERIFY_PEER), .hostname = "other.example" };
    struct side s = { .creds = creds(dir_a, CPR_TLS_ENDPOINT_SERVER, CPR_TLS_VERIFY_PEER) };
    handshake(&c, &s);
    assert_refused(&c, "does not match");
    ck_assert_int_lt(s.ret, 0);
    side_done(&c);
    side_done(&s);
}
END_TEST

START_TEST(test_client_without_certificate_refused)
{
    struct side c = { .creds = creds(dir_a_noclient, CPR_TLS_ENDPOINT_CLIENT, CPR_TLS_VERIFY_PEER),
                      .hostname = "127.0.0.1" };
    struct side s = { .creds = creds(dir_a, CPR_TLS_ENDPOINT_SERVER, CPR_TLS_VERIFY_PEER) };
    handshake(&c, &s);
    assert_refused(&s, "sent no certificate");
    peer_saw_refusal(&c);
    side_done(&c);
    side_done(&s);
}
END_TEST

START_TEST(test_plaintext_client_refused)
{
    struct side c = { .plaintext = 1 };
    struct side s = { .creds = creds(dir_a, CPR_TLS_ENDPOINT_SERVER, CPR_TLS_VERIFY_PEER) };
    handshake(&c, &s);
    assert_refused(&s, "did not answer in TLS");
    side_done(&c);
    side_done(&s);
}
END_TEST

START_TEST(test_plaintext_server_refused)
{
    struct side c = { .creds = creds(dir_a, CPR_TLS_ENDPOINT_CLIENT, CPR_TLS_VERIFY_PEER), .hostname = "dest.example" };
    struct side s = { .plaintext = 1 };
    handshake(&c, &s);
    assert_refused(&c, "did not answer in TLS");
    side_done(&c);
    side_done(&s);
}
END_TEST

/* The peer dies mid-handshake (or the link under it goes): the error says so, on either side,
 * rather than blaming the peer's TLS. */
START_TEST(test_handshake_cut_by_the_server)
{
    struct side c = { .creds = creds(dir_a, CPR_TLS_ENDPOINT_CLIENT, CPR_TLS_VERIFY_PEER), .hostname = "dest.example" };
    struct side s = { .cut = 1 };
    handshake(&c, &s);
    assert_refused(&c, "the server closed the connection mid-handshake (after 0 bytes from it)");
    side_done(&c);
    side_done(&s);
}
END_TEST

/* A peer that stops mid-handshake and stays connected: the caller's receive timeout ends the
 * wait (GnuTLS's "again" is not retried then), the error says the peer did not go on. */
START_TEST(test_handshake_bounded_by_the_callers_receive_timeout)
{
    struct side c = { .stall = 1 };
    struct side s = { .creds = creds(dir_a, CPR_TLS_ENDPOINT_SERVER, CPR_TLS_VERIFY_PEER), .rcvtimeo_ms = 200 };
    handshake(&c, &s);
    assert_refused(&s, "the client did not go on with it in time");
    side_done(&c);
    side_done(&s);
}
END_TEST

START_TEST(test_handshake_cut_by_the_client)
{
    struct side c = { .cut = 1 };
    struct side s = { .creds = creds(dir_a, CPR_TLS_ENDPOINT_SERVER, CPR_TLS_VERIFY_PEER) };
    handshake(&c, &s);
    assert_refused(&s, "the client closed the connection mid-handshake (after 11 bytes from it)");
    side_done(&c);
    side_done(&s);
}
END_TEST

/* The client's certificate from certgen (tests/tls), as GnuTLS writes a DN (RFC 4514). */
#define CLIENT_DN "CN=migration source,O=libcpr tests"

/* tls-authz: after a good handshake the server admits only the identity its authorization
 * object names; another is refused naming both. */
START_TEST(test_authz_admits_only_its_identity)
{
    cpr_ctx *ctx;
    cpr_error *err = NULL;
    ck_assert_int_eq(cpr_ctx_new(&ctx, 0, NULL), 0);
    ck_assert_int_eq(cpr_tls_authz_add(ctx, "ok", CLIENT_DN, NULL), 0);
    ck_assert_int_eq(cpr_tls_authz_add(ctx, "other", "CN=someone else,O=libcpr tests", NULL), 0);
    ck_assert_cpr_fails(cpr_tls_authz_add(ctx, "ok", "CN=x", errp_), -EEXIST, "id 'ok' already exists");
    ck_assert_cpr_fails(cpr_tls_authz_add(ctx, "empty", "", errp_), -EINVAL, "identity is NULL or empty");
    ck_assert_cpr_fails(cpr_tls_authz_del(ctx, "nope", errp_), -ENOENT, "no authorization object with id 'nope'");

    struct side c = { .creds = creds(dir_a, CPR_TLS_ENDPOINT_CLIENT, CPR_TLS_VERIFY_PEER), .hostname = "dest.example" };
    struct side s = { .creds = creds(dir_a, CPR_TLS_ENDPOINT_SERVER, CPR_TLS_VERIFY_PEER) };
    handshake(&c, &s);
    ck_assert_msg(c.ret == 0 && s.ret == 0, "client: %s; server: %s", c.msg, s.msg);
    g_autofree char *dn = cpr_tls_session_peer_dn(s.t);
    ck_assert_str_eq(dn, CLIENT_DN);
    ck_assert_int_eq(cpr_tls_authz_check(ctx, "ok", s.t, NULL), 0);
    ck_assert_int_eq(cpr_tls_authz_check(ctx, "nope", s.t, &err), -ENOENT);
    ck_assert_ptr_nonnull(strstr(cpr_error_message(err), "-object authz-simple,id=nope"));
    cpr_error_free(err);
    err = NULL;
    ck_assert_int_eq(cpr_tls_authz_check(ctx, "other", s.t, &err), -EACCES);
    ck_assert_msg(strstr(cpr_error_message(err), "the client's certificate '" CLIENT_DN "' is not authorized") &&
                  strstr(cpr_error_message(err), "CN=someone else"), "%s", cpr_error_message(err));
    cpr_error_free(err);
    ck_assert_int_eq(cpr_tls_authz_del(ctx, "other", NULL), 0);
    side_done(&c);
    side_done(&s);
    cpr_ctx_free(ctx);
}
END_TEST

START_TEST(test_endpoint_and_hostname_checked)
{
    struct side c = { .creds = creds(dir_a, CPR_TLS_ENDPOINT_SERVER, 0) };
    cpr_error *err = NULL;
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    ck_assert_int_eq(cpr_tls_session_start(c.creds, sv[0], CPR_TLS_ENDPOINT_CLIENT, "x", &c.t, &err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(cpr_error_message(err), "are for the server endpoint"));
    cpr_error_free(err);
    err = NULL;
    cpr_tls_creds *cl = creds(dir_a, CPR_TLS_ENDPOINT_CLIENT, CPR_TLS_VERIFY_PEER);
    ck_assert_int_eq(cpr_tls_session_start(cl, sv[0], CPR_TLS_ENDPOINT_CLIENT, NULL, &c.t, &err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(cpr_error_message(err), "set tls-hostname"));
    cpr_error_free(err);
    cpr_tls_creds_free(cl);
    close(sv[1]);
    c.fd = sv[0];
    side_done(&c);
}
END_TEST

/* A job with tls-creds set refuses, before it starts, what cannot carry TLS; the messages say
 * why. */
START_TEST(test_job_refusals)
{
    cpr_ctx *ctx;
    ck_assert_int_eq(cpr_ctx_new(&ctx, 0, NULL), 0);
    ck_assert_int_eq(cpr_tls_creds_add(ctx, "cli", creds(dir_a, CPR_TLS_ENDPOINT_CLIENT, 0), NULL), 0);
    ck_assert_int_eq(cpr_tls_creds_add(ctx, "srv", creds(dir_a, CPR_TLS_ENDPOINT_SERVER, 0), NULL), 0);
    ck_assert_int_eq(cpr_param_set(ctx, "tls-creds", "cli", NULL), 0);
    ck_assert_cpr_fails(cpr_migrate_uri(ctx, "file:/nonexistent-cpr/vm.state", 0, errp_), -EINVAL,
                        "cannot carry TLS: only tcp and unix sockets do");
    ck_assert_cpr_fails(cpr_migrate_uri(ctx, "exec:cat >/dev/null", 0, errp_), -EINVAL, "cannot carry TLS");
    ck_assert_int_eq(cpr_param_set(ctx, "tls-creds", "nope", NULL), 0);
    ck_assert_cpr_fails(cpr_migrate_uri(ctx, "unix:/nonexistent-cpr/s", 0, errp_), -ENOENT,
                        "no TLS credentials with id 'nope'");
    ck_assert_int_eq(cpr_param_set(ctx, "tls-creds", "srv", NULL), 0);
    ck_assert_cpr_fails(cpr_migrate_uri(ctx, "tcp:127.0.0.1:1", 0, errp_), -EINVAL,
                        "are for endpoint=server, but the source needs endpoint=client");
    ck_assert_int_eq(cpr_param_set(ctx, "tls-creds", "cli", NULL), 0);
    ck_assert_int_eq(cpr_param_set(ctx, "mode", "cpr-transfer", NULL), 0);
    cpr_channels *ch;
    ck_assert_int_eq(cpr_channels_parse_json("[{\"channel-type\":\"main\",\"addr\":{\"transport\":\"socket\","
                                             "\"type\":\"unix\",\"path\":\"/nonexistent-cpr/m\"}},"
                                             "{\"channel-type\":\"cpr\",\"addr\":{\"transport\":\"socket\","
                                             "\"type\":\"unix\",\"path\":\"/nonexistent-cpr/c\"}}]", &ch, NULL), 0);
    ck_assert_cpr_fails(cpr_migrate_channels(ctx, ch, 0, errp_), -EINVAL,
                        "TLS is for normal mode only, not cpr-transfer: its cpr channel passes fds by SCM_RIGHTS");
    cpr_channels_free(ch);
    ck_assert_int_eq(cpr_param_set(ctx, "mode", "cpr-reboot", NULL), 0);
    ck_assert_cpr_fails(cpr_migrate_uri(ctx, "file:/nonexistent-cpr/vm.state", 0, errp_), -EINVAL,
                        "not cpr-reboot: its state goes to a file");
    /* A destination's tls-authz needs credentials, and an object of that id. */
    ck_assert_int_eq(cpr_param_set(ctx, "mode", "normal", NULL), 0);
    ck_assert_int_eq(cpr_param_set(ctx, "tls-creds", "", NULL), 0);
    ck_assert_int_eq(cpr_param_set(ctx, "tls-authz", "nope", NULL), 0);
    ck_assert_cpr_fails(cpr_incoming_start_uri(ctx, "unix:/nonexistent-cpr/in", 0, errp_), -EINVAL,
                        "tls-authz 'nope' is set, but tls-creds is not");
    ck_assert_int_eq(cpr_param_set(ctx, "tls-creds", "srv", NULL), 0);
    ck_assert_cpr_fails(cpr_incoming_start_uri(ctx, "unix:/nonexistent-cpr/in", 0, errp_), -ENOENT,
                        "no authorization object with id 'nope'");
    cpr_ctx_free(ctx);
}
END_TEST

static Suite *tls_suite(void)
{
    make_certs();
    Suite *s = suite_create("tls");
    TCase *tc = tcase_create("creds");
    tcase_add_test(tc, test_creds_files);
    tcase_add_test(tc, test_creds_registry);
    tcase_add_test(tc, test_params);
    tcase_add_test(tc, test_job_refusals);
    suite_add_tcase(s, tc);
    tc = tcase_create("session");
    tcase_add_test(tc, test_good_handshake_carries_a_stream);
    tcase_add_test(tc, test_server_of_another_ca_refused);
    tcase_add_test(tc, test_client_of_another_ca_refused);
    tcase_add_test(tc, test_wrong_hostname_refused);
    tcase_add_test(tc, test_client_without_certificate_refused);
    tcase_add_test(tc, test_plaintext_client_refused);
    tcase_add_test(tc, test_plaintext_server_refused);
    tcase_add_test(tc, test_handshake_cut_by_the_server);
    tcase_add_test(tc, test_handshake_cut_by_the_client);
    tcase_add_test(tc, test_handshake_bounded_by_the_callers_receive_timeout);
    tcase_add_test(tc, test_endpoint_and_hostname_checked);
    tcase_add_test(tc, test_authz_admits_only_its_identity);
    suite_add_tcase(s, tc);
    return s;
}

#else /* built without GnuTLS: asking for TLS says so */

START_TEST(test_without_gnutls)
{
    cpr_ctx *ctx;
    cpr_tls_creds *c = NULL;
    ck_assert_int_eq(cpr_tls_available(), 0);
    ck_assert_cpr_fails(cpr_tls_creds_new_x509("/tmp", CPR_TLS_ENDPOINT_CLIENT, 0, &c, errp_), -ENOTSUP,
                        "libcpr was built without TLS (GnuTLS)");
    ck_assert_int_eq(cpr_ctx_new(&ctx, 0, NULL), 0);
    ck_assert_cpr_fails(cpr_param_set(ctx, "tls-creds", "tls0", errp_), -ENOTSUP,
                        "libcpr was built without TLS (GnuTLS)");
    ck_assert_int_eq(cpr_param_set(ctx, "tls-creds", "", NULL), 0);
    cpr_ctx_free(ctx);
}
END_TEST

static Suite *tls_suite(void)
{
    Suite *s = suite_create("tls");
    TCase *tc = tcase_create("absent");
    tcase_add_test(tc, test_without_gnutls);
    suite_add_tcase(s, tc);
    return s;
}
#endif

CPR_TEST_MAIN(tls_suite)
