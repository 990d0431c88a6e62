/* SPDX-License-Identifier: MIT */
/*
 * Guest RAM blocks. A block is a named, mapped range of host memory that the VMM gives its
 * guest, backed by
 *  - a memfd (shared; 4 KiB pages, or huge pages through MFD_HUGETLB): QEMU's
 *    memory-backend-memfd, and anonymous RAM with aux-ram-share=on;
 *  - a file opened with share=on semantics (QEMU's memory-backend-file mem-path=...,
 *    share=on), e.g. on /dev/shm for cpr-reboot, or a DAX device;
 *  - or private anonymous memory (CPR_RAM_PRIVATE), which only normal migration can carry.
 * The library chooses the address; the VMM reads it with cpr_ram_block_host().
 *
 * On the incoming side of cpr-transfer and cpr-exec, the cpr state lists the old process's
 * blocks with their fds. Creating a block of the same name then re-attaches the preserved fd
 * instead of allocating: its size and page size must match what the VMM asks for (else an
 * error naming the block and both values); the memory is the same, at a new address, never
 * copied. CPR_RAM_PREFAULT populates the page tables while mapping, so the new process pays
 * that cost before the switchover, while the guest still runs in the old one.
 *
 * Each block has a dirty bitmap with one bit per CPR_RAM_DIRTY_PAGE_SIZE bytes (the guest page
 * size KVM logs), bit i of 64-bit word w standing for page w*64+i — the layout of
 * KVM_GET_DIRTY_LOG on x86-64, which can be merged as it is.
 *
 * Thread safety: creating, freeing and walking blocks is serialised on the context. The
 * dirty bitmap functions are lock-free and may run on any thread concurrently (a vCPU thread
 * sets bits while the migration thread fetches and clears them). Accessors may be called from
 * any thread while the block exists.
 */
#ifndef CPR_RAM_H
#define CPR_RAM_H

#include <cpr/common.h>

CPR_BEGIN_DECLS

typedef struct cpr_ram_block cpr_ram_block;

/* Longest block name accepted, in bytes (the same limit as fd names). */
#define CPR_RAM_NAME_MAX 255
/* Granularity of the dirty bitmap, in bytes. */
#define CPR_RAM_DIRTY_PAGE_SIZE 4096u

/* Flags for cpr_ram_block_new() and cpr_ram_block_new_file(). */
/* Private anonymous memory instead of a memfd: no fd, not shared, not preservable. */
#define CPR_RAM_PRIVATE 0x1u
/* Populate the page tables while mapping (MAP_POPULATE). */
#define CPR_RAM_PREFAULT 0x2u
/* Fail with -ENOENT instead of allocating when the cpr state has no block of this name. */
#define CPR_RAM_REATTACH_ONLY 0x4u

/*
 * Creates a block of `size` bytes with pages of `page_size` bytes: the system page size
 * (4096), or a huge page size the kernel supports (2 MiB, 1 GiB) which uses MFD_HUGETLB.
 * size must be a non-zero multiple of page_size. When the cpr state received by this context
 * lists a block named `name`, that block is re-attached instead (see above).
 * On success *out is the block; it belongs to the context (freed with it, or earlier with
 * cpr_ram_block_free()).
 * Errors: -EINVAL (bad size, page size, flags, or a re-attach mismatch, naming the block and
 * both values); -ENAMETOOLONG; -EEXIST (a block of that name exists); -ENOMEM (no huge pages:
 * the message names /proc/sys/vm/nr_hugepages); -ENOENT with CPR_RAM_REATTACH_ONLY; the errno
 * of memfd_create/ftruncate/mmap with a message naming the block.
 */
CPR_API int cpr_ram_block_new(cpr_ctx *ctx, const char *name, uint64_t size, uint64_t page_size,
                              uint32_t flags, cpr_ram_block **out, cpr_error **errp);

/*
 * Creates a block backed by the file at `path`, mapped shared. The file is created (mode
 * 0600) when missing and extended to `size` when shorter; its contents are kept (that is the
 * point for cpr-reboot). The page size is the file system's (a hugetlbfs page size, else the
 * system page size). A preserved fd of the same name is re-attached instead, as above.
 * CPR_RAM_PRIVATE is not allowed. Errors as cpr_ram_block_new(), plus the errno of open(2)
 * naming path.
 */
CPR_API int cpr_ram_block_new_file(cpr_ctx *ctx, const char *name, const char *path,
                                   uint64_t size, uint32_t flags, cpr_ram_block **out,
                                   cpr_error **errp);

/*
 * On the incoming side: closes the preserved fds of blocks in the received cpr state that no
 * cpr_ram_block_new*() re-attached (a block the new configuration no longer has). Call it
 * once the VMM has created its RAM. Returns how many were closed. cpr_ctx_free() does it too.
 */
CPR_API int cpr_ram_close_unattached(cpr_ctx *ctx);

/* Unmaps the block, closes its fd and removes it from the context. NULL is accepted. */
CPR_API void cpr_ram_block_free(cpr_ram_block *block);

/* The block named `name`, or NULL. */
CPR_API cpr_ram_block *cpr_ram_block_find(cpr_ctx *ctx, const char *name);

/* Number of blocks on the context. */
CPR_API size_t cpr_ram_block_count(cpr_ctx *ctx);

/* Called once per block, in creation order; a non-zero return stops the walk. */
typedef int (*cpr_ram_block_fn)(cpr_ram_block *block, void *opaque);

/*
 * Calls fn for every block until it returns non-zero, which is returned; 0 after a full walk.
 * fn must not create or free blocks.
 */
CPR_API int cpr_ram_block_foreach(cpr_ctx *ctx, cpr_ram_block_fn fn, void *opaque);

/* Accessors. Strings and pointers belong to the block. */
CPR_API const char *cpr_ram_block_name(const cpr_ram_block *block);
CPR_API void *cpr_ram_block_host(const cpr_ram_block *block);
CPR_API uint64_t cpr_ram_block_size(const cpr_ram_block *block);
CPR_API uint64_t cpr_ram_block_page_size(const cpr_ram_block *block);
/* The backing fd, owned by the block; -1 for private memory, and for a block whose memory a
 * restore with memory-restore-mode mapped replaced by a private mapping of a file
 * (cpr/lazy_restore.h): that fd no longer holds the guest's RAM. */
CPR_API int cpr_ram_block_fd(const cpr_ram_block *block);
/* 1 when the memory is shared (memfd or file): another process can map the same pages. 0
 * after a mapped restore (above). */
CPR_API int cpr_ram_block_shared(const cpr_ram_block *block);
/* 1 when the block was re-attached from a preserved fd rather than allocated. */
CPR_API int cpr_ram_block_reattached(const cpr_ram_block *block);

/*
 * Populates the page tables of the whole block for writing (MADV_POPULATE_WRITE; on kernels
 * without it, by touching each page). Call it on the incoming side before the switchover.
 * Errors: the errno of madvise naming the block (-ENOMEM, -EFAULT).
 */
CPR_API int cpr_ram_block_prefault(cpr_ram_block *block, cpr_error **errp);

/* Number of pages in the dirty bitmap: size / CPR_RAM_DIRTY_PAGE_SIZE, rounded up. */
CPR_API uint64_t cpr_ram_dirty_pages(const cpr_ram_block *block);

/*
 * Marks the bytes [offset, offset + len) dirty (every page they touch). -EINVAL naming the
 * block when the range is outside it.
 */
CPR_API int cpr_ram_dirty_set(cpr_ram_block *block, uint64_t offset, uint64_t len,
                              cpr_error **errp);

/* Marks the whole block dirty (the start of a precopy). */
CPR_API void cpr_ram_dirty_set_all(cpr_ram_block *block);

/*
 * ORs `npages` bits of `bitmap` into the dirty bitmap, starting at page `first_page`; bit i of
 * bitmap[w] is page first_page + w*64 + i. Feed it what KVM_GET_DIRTY_LOG returns for the
 * memory slot covering the block. -EINVAL when the pages are outside the block.
 */
CPR_API int cpr_ram_dirty_merge(cpr_ram_block *block, uint64_t first_page,
                                const uint64_t *bitmap, uint64_t npages, cpr_error **errp);

/*
 * Atomically moves the dirty bitmap into `out` and clears it: a bit set concurrently is either
 * in `out` or still set afterwards, never lost. out needs (cpr_ram_dirty_pages() + 63) / 64
 * words; -EINVAL when out_words is smaller. Returns the number of dirty pages fetched.
 */
CPR_API int64_t cpr_ram_dirty_fetch_clear(cpr_ram_block *block, uint64_t *out,
                                          uint64_t out_words, cpr_error **errp);

/* 1 when the page is dirty, 0 when clean or out of range. */
CPR_API int cpr_ram_dirty_test(const cpr_ram_block *block, uint64_t page);

/* Number of dirty pages now (a snapshot when other threads are setting bits). */
CPR_API uint64_t cpr_ram_dirty_count(const cpr_ram_block *block);

CPR_END_DECLS

#endif /* CPR_RAM_H */
