/* SPDX-License-Identifier: MIT */
/* Test certificates made with GnuTLS (tests/tls/certgen.c): no certtool needed. */
#ifndef CPR_TESTS_CERTGEN_H
#define CPR_TESTS_CERTGEN_H

/*
 * Writes QEMU's x509 layout into `dir` (which must exist): ca-cert.pem of a new CA whose
 * common name is `ca_name`, server-cert.pem/server-key.pem issued to `hosts` (a comma-separated
 * list of DNS names and IP addresses, as subject alternative names) and client-cert.pem/
 * client-key.pem, both signed by that CA. ECDSA P-256 keys, valid from an hour ago for ten
 * years. Returns 0, or -1 with a message on stderr.
 */
int certgen_dir(const char *dir, const char *ca_name, const char *hosts);

#endif
