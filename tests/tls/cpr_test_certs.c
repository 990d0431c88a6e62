/* SPDX-License-Identifier: MIT */
/* cpr-test-certs DIR CA_NAME HOSTS: test certificates in QEMU's layout, for the integration
 * tests (tests/harness/netns.py); see certgen.h. */
#include <stdio.h>

#include <glib.h>

#include "certgen.h"

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s DIR CA_NAME HOST[,HOST...]\n", argv[0]);
        return 2;
    }
    if (g_mkdir_with_parents(argv[1], 0700) < 0) {
        perror(argv[1]);
        return 1;
    }
    return certgen_dir(argv[1], argv[2], argv[3]) < 0 ? 1 : 0;
}
