/* SPDX-License-Identifier: MIT */
/* Private: the RAM block table as the cpr state sees it. */
#ifndef CPR_HANDOVER_RAM_H
#define CPR_HANDOVER_RAM_H

#include <cpr/ram.h>

/*
 * Records a block that arrived from the old process (its fd, size and page size), to be
 * re-attached by cpr_ram_block_new*() of the same name. On success the table owns fd.
 * -EEXIST when a block or a pending block of that name exists (fd stays the caller's).
 */
int cpr_ram_incoming_add(cpr_ctx *ctx, const char *name, uint64_t size, uint64_t page_size,
                         int fd, cpr_error **errp);

/* 1 when a block or a received block named `name` exists. */
int cpr_ram_name_taken(cpr_ctx *ctx, const char *name);

/* Closes the fds of received blocks that were never re-attached; returns how many. */
int cpr_ram_incoming_close(cpr_ctx *ctx);

/* The page size of the memory behind fd: the hugetlbfs page size, else the system page size. */
uint64_t cpr_ram_fd_page_size(int fd);

/*
 * Writes len bytes at offset off of the block's memory, as a load does (nothing else may
 * write there meanwhile). Shared memory of small pages is written through its fd: the kernel
 * fills the page cache without mapping a page into this process, which on a host that backs
 * memory lazily costs several times less than a first write through the mapping (the guest
 * maps the page on its own first touch later, a cheaper fault). Other memory (private, huge
 * pages, which pwrite cannot fill) is written through the mapping. 0, or -errno of pwrite
 * (-ENOSPC when the memory's file system is full, where a write through the mapping would
 * raise SIGBUS). Any thread.
 */
int cpr_ram_block_write(const cpr_ram_block *b, uint64_t off, const void *src, size_t len);

/*
 * memory-restore-mode mapped (lib/migration/map_restore.c): replaces the block's memory, at
 * its address, by a private copy-on-write mapping of bytes [offset, offset + size) of fd, the
 * file `file` (named in messages). From then on the block has no fd and is not shared (its
 * own memfd or file stays open, untouched until the commit, until the block is freed), and a
 * blocker naming the block and the file refuses cpr-transfer and cpr-exec, which would hand
 * that fd over as the guest's RAM. The kernel drops the range's madvise(2) advice with the
 * old mapping. -EBUSY when mapped already; mmap's errno naming the block and the file.
 * Called by the incoming job while the guest does not run.
 */
int cpr_ram_block_map_file(cpr_ram_block *b, int fd, uint64_t offset, const char *file, cpr_error **errp);
/* The restore that mapped it committed (the guest runs on the file now): no abort undoes the
 * mapping any more, and a memfd of the library's gives its old pages back (a file the VMM
 * named keeps them: it is the VMM's). Nothing when not mapped or committed already. */
void cpr_ram_block_map_commit(cpr_ram_block *b);
/* 1 when mapped by a restore that has not committed (an abort must undo it), else 0. */
int cpr_ram_block_map_uncommitted(const cpr_ram_block *b);
/* Undoes it (a load that failed before the guest ran): the block's own memory mapped back at
 * the same address (a memfd or file as it was, private memory zeroed), its fd restored, the
 * blocker removed. */
int cpr_ram_block_unmap_file(cpr_ram_block *b, cpr_error **errp);
/* The file the block is mapped from, or NULL. */
const char *cpr_ram_block_mapped_file(const cpr_ram_block *b);

#endif
