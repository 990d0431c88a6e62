/* SPDX-License-Identifier: MIT */
/*
 * GnuTLS, loaded when the first TLS credentials are made rather than linked: a process that
 * never uses TLS (most VMM starts, every cpr-exec image) does not map GnuTLS and the eight
 * libraries it brings, nor pay for their relocations at each exec (docs/architecture.md).
 */
#ifndef CPR_CHANNEL_GNUTLS_LIB_H
#define CPR_CHANNEL_GNUTLS_LIB_H

#ifdef CPR_HAVE_GNUTLS
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "core/error.h"

/* The shared object opened, by its soname (GnuTLS 3.x). */
#define CPR_GNUTLS_SONAME "libgnutls.so.30"

/* Every GnuTLS function libcpr calls, as <prefix>_<name>. */
#define CPR_GNUTLS_FUNCS(X)                                                                          \
    X(gnutls, alert_get) X(gnutls, alert_get_name) X(gnutls, bye)                                    \
    X(gnutls, certificate_allocate_credentials) X(gnutls, certificate_free_credentials)              \
    X(gnutls, certificate_get_peers) X(gnutls, certificate_server_set_request)                       \
    X(gnutls, certificate_set_x509_key_file) X(gnutls, certificate_set_x509_trust_file)              \
    X(gnutls, certificate_type_get) X(gnutls, certificate_verification_status_print)                 \
    X(gnutls, credentials_set) X(gnutls, deinit) X(gnutls, error_is_fatal) X(gnutls, handshake)      \
    X(gnutls, handshake_set_timeout) X(gnutls, init) X(gnutls, record_cork) X(gnutls, record_recv)   \
    X(gnutls, record_send) X(gnutls, record_uncork) X(gnutls, server_name_set)                       \
    X(gnutls, session_get_verify_cert_status) X(gnutls, session_set_verify_cert)                     \
    X(gnutls, set_default_priority) X(gnutls, strerror) X(gnutls, transport_set_ptr)                 \
    X(gnutls, transport_set_pull_function) X(gnutls, transport_set_pull_timeout_function)            \
    X(gnutls, transport_set_push_function) X(gnutls_x509, crt_deinit) X(gnutls_x509, crt_get_dn2)    \
    X(gnutls_x509, crt_import) X(gnutls_x509, crt_init)

/* The entry points, each with its GnuTLS prototype; x509_* for gnutls_x509_*; free_ is
 * GnuTLS's deallocator (the variable gnutls_free). */
struct cpr_gnutls {
    void *dl;
#define CPR_GNUTLS_MEMBER(prefix, name) __typeof__(prefix##_##name) *CPR_GNUTLS_FIELD_##prefix(name);
#define CPR_GNUTLS_FIELD_gnutls(name) name
#define CPR_GNUTLS_FIELD_gnutls_x509(name) x509_##name
    CPR_GNUTLS_FUNCS(CPR_GNUTLS_MEMBER)
#undef CPR_GNUTLS_MEMBER
    gnutls_free_function free_;
};

/*
 * Opens GnuTLS (dlopen of CPR_GNUTLS_SONAME, kept loaded for the process's life: GnuTLS is
 * not built to be unloaded) and resolves every entry point: 0 with *out (release it with
 * cpr_gnutls_close()), or -ENOTSUP naming the library and what the loader said. Any thread;
 * each call has its own table, so nothing is shared but the loader's own reference count.
 */
int cpr_gnutls_open(struct cpr_gnutls **out, cpr_error **errp);
void cpr_gnutls_close(struct cpr_gnutls *g);
#endif

#endif
