/* SPDX-License-Identifier: MIT */
/*
 * Private: the wire names of the "ram" section (docs/migration.md, "The RAM section"): its
 * name, version and entry kinds. Apart from ram_section.h so that the mapped-ram index
 * (mapped_ram.c), which ram_section.c drives, writes and reads its entries without a circle.
 */
#ifndef CPR_MIGRATION_RAM_ENTRIES_H
#define CPR_MIGRATION_RAM_ENTRIES_H

#define CPR_RAM_SECTION_NAME "ram"
#define CPR_RAM_SECTION_VERSION 1

/* Entry kinds inside the section's records. */
enum {
    CPR_RAM_ENT_BLOCK = 1, /* u16 name length, name: later entries refer to this block */
    CPR_RAM_ENT_ZERO = 2,  /* u64 first page, u32 count: pages that read as zero */
    CPR_RAM_ENT_DATA = 3,  /* u64 first page, u32 count, count * 4096 bytes */
    /* multifd: u32 pass, u32 channels, u64 last packet per channel (lib/migration/multifd.h) */
    CPR_RAM_ENT_MULTIFD_SYNC = 4,
    CPR_RAM_ENT_MAPPED = 5, /* mapped-ram index of a block (lib/migration/mapped_ram.c) */
    /* Postcopy (capability postcopy-ram): u64 first page, u32 count: pages the source sends
     * later on request; the destination must not run on what it holds of them. */
    CPR_RAM_ENT_DISCARD = 6,
    /* Postcopy: no payload; ends the RAM of the stream: the source now serves pages. */
    CPR_RAM_ENT_POSTCOPY = 7,
    /* u32 pass: a single stream's pass ends here; the destination acknowledges it on main.
     * Only after the destination offered (the config key below). */
    CPR_RAM_ENT_PASS_END = 8,
};

/* The config key of a source that reads pass acknowledgements on main (docs/format.md 2.4). */
#define CPR_CONFIG_ACK_PASSES "acknowledge-passes"


#endif
