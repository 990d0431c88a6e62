/* SPDX-License-Identifier: MIT */
/*
 * Private: the open fds of this process, listed with raw system calls only, for the processes
 * that run on a copy or a share of a multi-threaded process (deferred teardown's holder, the
 * cpr-exec guardian) and so may not use libc beyond syscall().
 */
#ifndef CPR_HANDOVER_RAW_FDS_H
#define CPR_HANDOVER_RAW_FDS_H

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

struct cpr_linux_dirent64 {
    unsigned long long d_ino;
    long long d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

static inline int cpr_raw_fd_number(const char *s)
{
    int v = 0;
    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

/*
 * Calls fn(fd, dir, name, arg) for every fd in /proc/self/fd but the directory's own (dir, for
 * readlinkat on name). fn may close fd: getdents64 goes on from its offset. Returns -1 when
 * /proc/self/fd cannot be opened, else 0.
 */
static inline int cpr_raw_foreach_fd(void (*fn)(int fd, int dir, const char *name, void *arg), void *arg)
{
    int dir = (int)syscall(SYS_openat, AT_FDCWD, "/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return -1;
    char buf[4096] __attribute__((aligned(8)));
    long n;
    while ((n = syscall(SYS_getdents64, dir, buf, sizeof(buf))) > 0) {
        for (long off = 0; off < n;) {
            struct cpr_linux_dirent64 *d = (struct cpr_linux_dirent64 *)(void *)(buf + off);
            off += d->d_reclen;
            int fd = cpr_raw_fd_number(d->d_name);
            if (fd >= 0 && fd != dir)
                fn(fd, dir, d->d_name, arg);
        }
    }
    syscall(SYS_close, dir);
    return 0;
}

#endif
