/* SPDX-License-Identifier: MIT */
/* Test certificates: a CA, a server and a client certificate, through GnuTLS's x509 API. */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <glib.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "certgen.h"

struct cert {
    gnutls_x509_privkey_t key;
    gnutls_x509_crt_t crt;
};

static int check(int r, const char *what)
{
    if (r < 0)
        fprintf(stderr, "certgen: %s: %s\n", what, gnutls_strerror(r));
    return r;
}

static void cert_free(struct cert *c)
{
    if (c->crt)
        gnutls_x509_crt_deinit(c->crt);
    if (c->key)
        gnutls_x509_privkey_deinit(c->key);
}

static int add_san(gnutls_x509_crt_t crt, const char *host)
{
    unsigned char ip[16];
    if (inet_pton(AF_INET, host, ip) == 1)
        return gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, ip, 4, GNUTLS_FSAN_APPEND);
    if (inet_pton(AF_INET6, host, ip) == 1)
        return gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, ip, 16, GNUTLS_FSAN_APPEND);
    return gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, host, (unsigned int)strlen(host),
                                                GNUTLS_FSAN_APPEND);
}

/* A key and a certificate for `cn`: a CA when issuer is NULL (self-signed), else a leaf for
 * TLS `purpose` with `hosts` as its names. */
static int make(struct cert *c, const char *cn, const struct cert *issuer, const char *purpose,
                const char *hosts, unsigned int serial)
{
    memset(c, 0, sizeof(*c));
    int r = check(gnutls_x509_privkey_init(&c->key), "key init");
    if (r == 0)
        r = check(gnutls_x509_privkey_generate(c->key, GNUTLS_PK_ECDSA,
                                               GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0), "key");
    if (r == 0)
        r = check(gnutls_x509_crt_init(&c->crt), "crt init");
    if (r < 0)
        return r;
    g_autofree char *dn = g_strdup_printf("O=libcpr tests,CN=%s", cn);
    const char *bad = NULL;
    time_t now = time(NULL);
    unsigned char sn[4] = { 0x10, (unsigned char)(serial >> 16), (unsigned char)(serial >> 8), (unsigned char)serial };
    gnutls_x509_crt_set_version(c->crt, 3);
    gnutls_x509_crt_set_serial(c->crt, sn, sizeof(sn));
    gnutls_x509_crt_set_activation_time(c->crt, now - 3600);
    gnutls_x509_crt_set_expiration_time(c->crt, now + 10L * 365 * 86400);
    if ((r = check(gnutls_x509_crt_set_dn(c->crt, dn, &bad), "dn")) < 0)
        return r;
    gnutls_x509_crt_set_key(c->crt, c->key);
    unsigned char kid[64];
    size_t kid_len = sizeof(kid);
    if (gnutls_x509_crt_get_key_id(c->crt, 0, kid, &kid_len) == 0)
        gnutls_x509_crt_set_subject_key_id(c->crt, kid, kid_len);
    if (!issuer) {
        gnutls_x509_crt_set_basic_constraints(c->crt, 1, -1);
        gnutls_x509_crt_set_key_usage(c->crt, GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_CRL_SIGN);
        return check(gnutls_x509_crt_sign2(c->crt, c->crt, c->key, GNUTLS_DIG_SHA256, 0), "self-sign");
    }
    gnutls_x509_crt_set_basic_constraints(c->crt, 0, -1);
    gnutls_x509_crt_set_key_usage(c->crt, GNUTLS_KEY_DIGITAL_SIGNATURE);
    gnutls_x509_crt_set_key_purpose_oid(c->crt, purpose, 0);
    kid_len = sizeof(kid);
    if (gnutls_x509_crt_get_subject_key_id(issuer->crt, kid, &kid_len, NULL) == 0)
        gnutls_x509_crt_set_authority_key_id(c->crt, kid, kid_len);
    if (hosts) {
        g_auto(GStrv) names = g_strsplit(hosts, ",", -1);
        for (int i = 0; names[i] && r == 0; i++)
            if (*names[i])
                r = check(add_san(c->crt, names[i]), names[i]);
    }
    if (r == 0)
        r = check(gnutls_x509_crt_sign2(c->crt, issuer->crt, issuer->key, GNUTLS_DIG_SHA256, 0), "sign");
    return r;
}

static int write_datum(const char *dir, const char *name, gnutls_datum_t *d)
{
    g_autofree char *path = g_build_filename(dir, name, NULL);
    GError *err = NULL;
    int ok = g_file_set_contents(path, (const char *)d->data, (gssize)d->size, &err);
    gnutls_free(d->data);
    if (!ok) {
        fprintf(stderr, "certgen: %s\n", err->message);
        g_error_free(err);
        return -1;
    }
    return 0;
}

static int save(const struct cert *c, const char *dir, const char *cert_name, const char *key_name)
{
    gnutls_datum_t d;
    if (check(gnutls_x509_crt_export2(c->crt, GNUTLS_X509_FMT_PEM, &d), cert_name) < 0 ||
        write_datum(dir, cert_name, &d) < 0)
        return -1;
    if (!key_name)
        return 0;
    if (check(gnutls_x509_privkey_export2(c->key, GNUTLS_X509_FMT_PEM, &d), key_name) < 0 ||
        write_datum(dir, key_name, &d) < 0)
        return -1;
    return 0;
}

int certgen_dir(const char *dir, const char *ca_name, const char *hosts)
{
    struct cert ca, server, client;
    unsigned int serial = (unsigned int)g_random_int() & 0xffffff;
    int r = make(&ca, ca_name, NULL, NULL, NULL, serial);
    if (r == 0)
        r = make(&server, "migration destination", &ca, GNUTLS_KP_TLS_WWW_SERVER, hosts, serial + 1);
    if (r == 0)
        r = make(&client, "migration source", &ca, GNUTLS_KP_TLS_WWW_CLIENT, NULL, serial + 2);
    if (r == 0)
        r = save(&ca, dir, "ca-cert.pem", NULL);
    if (r == 0)
        r = save(&server, dir, "server-cert.pem", "server-key.pem");
    if (r == 0)
        r = save(&client, dir, "client-cert.pem", "client-key.pem");
    cert_free(&client);
    cert_free(&server);
    cert_free(&ca);
    return r < 0 ? -1 : 0;
}
