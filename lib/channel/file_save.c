/* SPDX-License-Identifier: MIT */
/*
 * Durable state files: a save writes a temporary file in the target's directory and renames
 * it over the target only once it is complete and synced, then syncs the directory, so that
 * a failed save leaves the previous snapshot whole and a completed one survives a crash or a
 * reboot right after (docs/migration.md, "State files").
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "channel/file_save.h"
#include "core/error.h"

struct cpr_file_save {
    char *path; /* the target (symlinks resolved: the link stays a link) */
    char *tmp;  /* the temporary file beside it */
    int no_sync; /* renamed into place without fsync (cpr_file_save_no_sync) */
};

static void fs_free(struct cpr_file_save *fs)
{
    g_free(fs->path);
    g_free(fs->tmp);
    g_free(fs);
}

/* Copies the first `offset` bytes of the old file (fewer when it is shorter: the rest reads
 * as zero) and leaves fd positioned at offset. */
static int copy_prefix(const char *path, int exists, int fd, uint64_t offset, cpr_error **errp)
{
    if (exists && offset) {
        int in = open(path, O_RDONLY | O_CLOEXEC);
        if (in < 0)
            return cpr_error_set_errno(errp, -errno, "file:%s: cannot open it to keep its first %" G_GUINT64_FORMAT
                                       " bytes", path, (guint64)offset);
        off_t in_off = 0, out_off = 0;
        ssize_t n = 1;
        while ((uint64_t)in_off < offset && n > 0)
            n = copy_file_range(in, &in_off, fd, &out_off, (size_t)(offset - (uint64_t)in_off), 0);
        int code = n < 0 ? -errno : 0;
        close(in);
        if (code < 0)
            return cpr_error_set_errno(errp, code, "file:%s: copying its first %" G_GUINT64_FORMAT " bytes", path,
                                       (guint64)offset);
    }
    if ((offset && ftruncate(fd, (off_t)offset) < 0) || lseek(fd, (off_t)offset, SEEK_SET) < 0)
        return cpr_error_set_errno(errp, -errno, "file:%s: cannot start writing at offset %" G_GUINT64_FORMAT, path,
                                   (guint64)offset);
    return 0;
}

int cpr_file_save_begin(const char *path, uint64_t offset, struct cpr_file_save **out, int *fd, cpr_error **errp)
{
    struct stat st;
    int exists = stat(path, &st) == 0;
    if (!exists && errno != ENOENT)
        return cpr_error_set_errno(errp, -errno, "cannot stat file:%s", path);
    if (exists && !S_ISREG(st.st_mode))
        return 1;
    char *real = exists ? realpath(path, NULL) : NULL;
    struct cpr_file_save *fs = g_new0(struct cpr_file_save, 1);
    fs->path = g_strdup(real ? real : path);
    free(real);
    g_autofree char *dir = g_path_get_dirname(fs->path);
    g_autofree char *base = g_path_get_basename(fs->path);
    fs->tmp = g_strdup_printf("%s/.%s.XXXXXX", dir, base);
    int f = g_mkstemp_full(fs->tmp, O_WRONLY | O_CLOEXEC, 0600);
    if (f < 0) {
        int code = -errno;
        fs_free(fs);
        return cpr_error_set_errno(errp, code, "cannot create a temporary file in %s for file:%s", dir, path);
    }
    /* The new file replaces the old one: it keeps its permissions (as far as we may). */
    if (exists)
        (void)fchmod(f, st.st_mode & 07777);
    int ret = copy_prefix(path, exists, f, offset, errp);
    if (ret < 0) {
        close(f);
        cpr_file_save_discard(fs);
        return ret;
    }
    *out = fs;
    *fd = f;
    return 0;
}

int cpr_file_save_commit(struct cpr_file_save *fs, int fd, cpr_error **errp)
{
    int ret = 0;
    if (!fs->no_sync && fsync(fd) < 0)
        ret = cpr_error_set_errno(errp, -errno, "file:%s: fsync", fs->path);
    else if (rename(fs->tmp, fs->path) < 0)
        ret = cpr_error_set_errno(errp, -errno, "file:%s: cannot rename %s over it", fs->path, fs->tmp);
    if (ret < 0) {
        cpr_file_save_discard(fs);
        return ret;
    }
    if (fs->no_sync) {
        fs_free(fs);
        return 0;
    }
    /* The rename is durable only once the directory entry is. */
    g_autofree char *dir = g_path_get_dirname(fs->path);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) < 0)
        ret = cpr_error_set_errno(errp, -errno, "file:%s: syncing its directory %s", fs->path, dir);
    if (dfd >= 0)
        close(dfd);
    fs_free(fs);
    return ret;
}

void cpr_file_save_no_sync(struct cpr_file_save *fs)
{
    fs->no_sync = 1;
}

void cpr_file_save_discard(struct cpr_file_save *fs)
{
    if (!fs)
        return;
    g_unlink(fs->tmp);
    fs_free(fs);
}
