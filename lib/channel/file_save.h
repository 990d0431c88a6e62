/* SPDX-License-Identifier: MIT */
/* Private: durable replacement of a state file (lib/channel/file_save.c). */
#ifndef CPR_CHANNEL_FILE_SAVE_H
#define CPR_CHANNEL_FILE_SAVE_H

#include <stdint.h>

#include <cpr/error.h>
#include <cpr/transport.h>

struct cpr_file_save;

/*
 * Opens a new temporary file beside `path` (".<name>.XXXXXX" in the same directory) that a
 * later commit renames over it: the old file stays whole until then. With an offset, the
 * bytes before it are copied from the old file and writing starts there. Returns 0 with *fd
 * (the caller's) and *out, or 1 when path exists and is not a regular file (a FIFO, a device):
 * the caller writes it in place. Errors: the errno of stat/mkstemp/copy naming the path.
 */
int cpr_file_save_begin(const char *path, uint64_t offset, struct cpr_file_save **out, int *fd, cpr_error **errp);
/* fsync(fd), rename over the path, fsync of the directory; on failure the temporary file is
 * removed and the old file left as it was (but for a failing directory sync, reported).
 * Frees fs in every case. */
int cpr_file_save_commit(struct cpr_file_save *fs, int fd, cpr_error **errp);
/*
 * A durable output stream's file is still written under a temporary name and renamed into
 * place whole, but without fsync of the file and its directory: for a state that only this
 * host reads back while it runs (cpr-exec: the new image, or the rollback, loads it from the
 * page cache; a host crash loses the memfd guest RAM it refers to anyway). Other streams: no-op.
 */
void cpr_stream_file_no_sync(cpr_stream *s);
void cpr_file_save_no_sync(struct cpr_file_save *fs);
/* Removes the temporary file and frees fs (a save that failed or was abandoned). NULL ok. */
void cpr_file_save_discard(struct cpr_file_save *fs);

/*
 * cpr_transport_open_output(), but a file: address (a regular file or a new one) is written
 * under a temporary name that cpr_stream_close() syncs and renames over it; a stream freed
 * without a successful close leaves the old file as it was.
 */
int cpr_transport_open_output_durable(const cpr_addr *addr, cpr_stream **out, cpr_error **errp);

#endif
