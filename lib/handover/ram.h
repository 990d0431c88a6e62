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

#endif
