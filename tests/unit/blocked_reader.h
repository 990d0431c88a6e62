/* SPDX-License-Identifier: MIT */
/* A thread that reads one page of guest memory from the kernel's side (write(2) from it into
 * a memfd): it blocks on a missing page like a vCPU does, and once the fault server is gone it
 * fails with EFAULT instead of killing the test with SIGSEGV. For the userfaultfd
 * suites, which define _GNU_SOURCE (memfd_create) first. */
#ifndef CPR_TESTS_BLOCKED_READER_H
#define CPR_TESTS_BLOCKED_READER_H

#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include <glib.h>

#define BLOCKED_READER_PAGE 4096

typedef struct blocked_reader {
    const uint8_t *page;
    int done; /* atomic: the read returned */
    int rc, err;
    int ok;   /* the bytes read back are in copy (when rc is a whole page) */
    uint8_t copy[BLOCKED_READER_PAGE];
} blocked_reader;

static inline gpointer read_page(gpointer opaque)
{
    blocked_reader *r = opaque;
    int fd = memfd_create("sink", MFD_CLOEXEC);
    r->rc = (int)write(fd, r->page, BLOCKED_READER_PAGE);
    r->err = errno;
    if (r->rc == BLOCKED_READER_PAGE)
        r->ok = pread(fd, r->copy, BLOCKED_READER_PAGE, 0) == BLOCKED_READER_PAGE;
    close(fd);
    __atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

#endif
