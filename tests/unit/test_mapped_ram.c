/* SPDX-License-Identifier: MIT */
/*
 * mapped-ram: RAM at fixed offsets of a file stream, written by multifd-channels threads,
 * checked by chunk checksums on load, direct-io, and the file's size after many passes.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <glob.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/bytes.h"
#include "format/region.h"
#include "migration/mapped_ram.h"
#include "mig_fixture.h"
#include "testutil.h"

#define RAM (8u << 20)

static void mapped(cpr_ctx *ctx, const char *channels)
{
    ck_assert_int_eq(cpr_cap_set(ctx, "mapped-ram", 1, NULL), 0);
    ck_assert_int_eq(cpr_param_set(ctx, "multifd-channels", channels, NULL), 0);
}

/* Saves a running VM with mapped-ram (and capability `cap` on, unless NULL) to `name`;
 * returns its RAM digest at the stop. */
static char *save_with(const char *name, const char *channels, const char *cap, uint64_t *passes)
{
    struct mig_vm *src = mig_running_vm(RAM, NULL);
    /* The guest writes the lower half (mig_vm's dirty_span): the upper half stays zero pages. */
    mig_vm_set_rate(src, 64); /* dirtied while the passes run: written twice */
    mapped(src->ctx, channels);
    if (cap)
        ck_assert_int_eq(cpr_cap_set(src->ctx, cap, 1, NULL), 0);
    g_autofree char *u = uri("file", name);
    ck_assert_int_eq(cpr_migrate_uri(src->ctx, u, 0, NULL), 0);
    cpr_migration_info i = query(src->ctx);
    ck_assert_int_eq(i.status, CPR_MIGRATION_COMPLETED);
    /* transferred counts bytes written: the pages sent with data and the records (the index:
     * a bit and 4 bytes per page), not the region's holes. */
    ck_assert_uint_ge(i.transferred, i.normal_bytes);
    ck_assert_uint_lt(i.transferred, i.normal_bytes + RAM / 4096 * 5 + 64 * 1024);
    if (passes)
        *passes = i.dirty_sync_count;
    char *digest = mig_vm_ram_digest(src);
    mig_vm_free(src);
    return digest;
}

static char *save(const char *name, const char *channels, uint64_t *passes)
{
    return save_with(name, channels, NULL, passes);
}

/* Loads `name` into a new VM (capability `cap` on, unless NULL); returns the load's result
 * (the error in *errp). */
static int load_with(const char *name, const char *channels, const char *cap, char **digest, cpr_error **errp)
{
    struct mig_vm *dst = mig_vm_new(RAM, NULL, 0);
    ck_assert_ptr_nonnull(dst);
    ck_assert_int_eq(cpr_param_set(dst->ctx, "multifd-channels", channels, NULL), 0);
    if (cap)
        ck_assert_int_eq(cpr_cap_set(dst->ctx, cap, 1, NULL), 0);
    g_autofree char *u = uri("file", name);
    ck_assert_int_eq(cpr_incoming_defer(dst->ctx, NULL), 0);
    int ret = cpr_incoming_start_uri(dst->ctx, u, CPR_INCOMING_PAUSED, errp);
    if (ret == 0 && digest)
        *digest = mig_vm_ram_digest(dst);
    mig_vm_free(dst);
    return ret;
}

static int load(const char *name, const char *channels, char **digest, cpr_error **errp)
{
    return load_with(name, channels, NULL, digest, errp);
}

/* The file offset of byte `byte` of page `page` of the snapshot's RAM block (its reader). */
static uint64_t page_offset(const char *file, uint64_t page, uint64_t byte)
{
    cpr_mr_file *f;
    ck_assert_int_eq(cpr_mr_open(file, 0, &f, NULL), 0);
    const struct cpr_mr_block_info *b = cpr_mr_block(f, 0);
    ck_assert(cpr_mr_page_present(b, page));
    uint64_t at = b->pages_offset + page * b->page_size + byte;
    cpr_mr_close(f);
    return at;
}

/* Flips one bit of the byte at `at` in `file`, as a lost write would. */
static void flip(const char *file, uint64_t at)
{
    int fd = open(file, O_RDWR);
    ck_assert_int_ge(fd, 0);
    uint8_t c;
    ck_assert_int_eq(pread(fd, &c, 1, (off_t)at), 1);
    c ^= 0x10;
    ck_assert_int_eq(pwrite(fd, &c, 1, (off_t)at), 1);
    close(fd);
}

START_TEST(test_round_trip_with_1_to_4_channels)
{
    static const char *const n[] = { "1", "2", "4" };
    for (size_t k = 0; k < G_N_ELEMENTS(n); k++) {
        uint64_t passes;
        g_autofree char *want = save("snap", n[k], &passes);
        ck_assert_uint_ge(passes, 2); /* some pages went twice: overwritten in place */
        g_autofree char *got = NULL;
        ck_assert_int_eq(load("snap", n[k], &got, NULL), 0);
        ck_assert_str_eq(got, want);
        /* Written by one count of threads, read by another. */
        g_autofree char *got2 = NULL;
        ck_assert_int_eq(load("snap", n[(k + 1) % 3], &got2, NULL), 0);
        ck_assert_str_eq(got2, want);
    }
}
END_TEST

/*
 * mapped-ram with the multifd capability on as well (QEMU 9's parallel file mode: its multifd
 * threads write the file's regions): on a file: stream the capability asks for no channel
 * connection; the multifd-channels threads write the regions in place, so the file stays the
 * size of RAM, and a destination with multifd on loads it.
 */
START_TEST(test_mapped_ram_with_the_multifd_capability_round_trips)
{
    uint64_t passes;
    g_autofree char *want = save_with("snap", "4", "multifd", &passes);
    ck_assert_uint_ge(passes, 2);
    g_autofree char *p = path("snap");
    struct stat st;
    ck_assert_int_eq(stat(p, &st), 0);
    ck_assert_uint_le((uint64_t)st.st_size, RAM + RAM / 4096 * 5 + 64 * 1024);
    g_autofree char *got = NULL;
    ck_assert_int_eq(load_with("snap", "3", "multifd", &got, NULL), 0);
    ck_assert_str_eq(got, want);
}
END_TEST

START_TEST(test_the_file_stays_the_size_of_ram_after_many_passes)
{
    uint64_t passes;
    g_autofree char *d = save("snap", "2", &passes);
    g_autofree char *p = path("snap");
    struct stat st;
    ck_assert_int_eq(stat(p, &st), 0);
    /* RAM, plus the index (a bit and 4 bytes per page), plus a page of alignment and records. */
    uint64_t bound = RAM + RAM / 4096 * 5 + 64 * 1024;
    ck_assert_msg((uint64_t)st.st_size <= bound, "file %lld bytes after %llu passes, bound %llu",
                  (long long)st.st_size, (unsigned long long)passes, (unsigned long long)bound);
}
END_TEST

/* The reader finds the block's region and names the chunk a flipped byte lands in. */
/* A region record's payload: version 1, page, chunk, a block of 64 pages, no pad, name "b". */
static int parse_region(uint32_t page, uint32_t chunk, cpr_error **errp)
{
    uint8_t p[CPR_REGION_FIXED + 1] = { 0 };
    uint64_t size = 64ull * page;
    cpr_le_put(p, 1, 4);
    cpr_le_put(p + 4, page, 4);
    cpr_le_put(p + 8, chunk, 4);
    cpr_le_put(p + 12, size, 8);
    cpr_le_put(p + 28, cpr_region_pages_len(size, page), 8);
    cpr_le_put(p + 36, 1, 2);
    p[CPR_REGION_FIXED] = 'b';
    cpr_stream *s;
    ck_assert_int_eq(cpr_stream_new_mem_source(p, sizeof(p), &s, NULL), 0);
    int ret = cpr_region_parse(s, p, sizeof(p), 0, "record 3", errp);
    cpr_stream_free(s);
    return ret;
}

/* A reader holds a chunk in memory to check it: a chunk over max(page, 1 MiB) is refused
 * before anything is allocated for it (format.md 7.1). */
START_TEST(test_a_chunk_over_its_bound_is_refused)
{
    ck_assert_int_eq(parse_region(4096, 4096, NULL), 0);
    ck_assert_int_eq(parse_region(4096, 1u << 20, NULL), 0);
    ck_assert_int_eq(parse_region(2u << 20, 2u << 20, NULL), 0); /* a huge page is a chunk */
    ck_assert_cpr_fails(parse_region(4096, 2u << 20, errp_), -EBADMSG, "chunk 2097152");
    ck_assert_cpr_fails(parse_region(2u << 20, 4u << 20, errp_), -EBADMSG, "chunk 4194304");
}
END_TEST

START_TEST(test_a_flipped_byte_is_refused_naming_the_chunk)
{
    g_autofree char *d = save("snap", "2", NULL);
    g_autofree char *p = path("snap");
    cpr_mr_file *f;
    ck_assert_int_eq(cpr_mr_open(p, 0, &f, NULL), 0);
    ck_assert_uint_eq(cpr_mr_block_count(f), 1);
    const struct cpr_mr_block_info *b = cpr_mr_block(f, 0);
    ck_assert_str_eq(b->name, MIG_VM_RAM_NAME);
    ck_assert_uint_eq(b->pages_offset % 4096, 0);
    ck_assert_uint_eq(b->chunk_size, b->page_size);
    ck_assert_int_eq(cpr_mr_verify_chunk(f, 0, 5, NULL), 0);
    cpr_mr_close(f);
    flip(p, page_offset(p, 5, 123));
    ck_assert_int_eq(cpr_mr_open(p, 0, &f, NULL), 0);
    ck_assert_cpr_fails(cpr_mr_verify_chunk(f, 0, 5, errp_), -EBADMSG, "chunk 5 ");
    cpr_mr_close(f);
    ck_assert_cpr_fails(load("snap", "3", NULL, errp_), -EBADMSG, "'" MIG_VM_RAM_NAME "' chunk 5 ");
}
END_TEST

/*
 * The loader checks a chunk before it places it: a chunk that fails its checksum never
 * reaches guest RAM, and the chunks of the same step neither (they are placed together).
 * Loading by pread straight into RAM and checksumming it there wrote the bad bytes first
 * (and touched every page twice); this test failed that way.
 */
START_TEST(test_a_chunk_that_fails_its_checksum_never_reaches_guest_ram)
{
    g_autofree char *d = save("snap", "2", NULL);
    g_autofree char *p = path("snap");
    flip(p, page_offset(p, 5, 123));
    static const char *const n[] = { "1", "3" };
    for (size_t k = 0; k < G_N_ELEMENTS(n); k++) {
        struct mig_vm *dst = mig_vm_new(RAM, NULL, 0);
        ck_assert_ptr_nonnull(dst);
        memset(dst->host, 0xa5, RAM);
        ck_assert_int_eq(cpr_param_set(dst->ctx, "multifd-channels", n[k], NULL), 0);
        g_autofree char *u = uri("file", "snap");
        ck_assert_int_eq(cpr_incoming_defer(dst->ctx, NULL), 0);
        ck_assert_cpr_fails(cpr_incoming_start_uri(dst->ctx, u, CPR_INCOMING_PAUSED, errp_), -EBADMSG, "chunk 5 ");
        for (uint64_t pg = 0; pg < 8; pg++)
            for (uint64_t b = 0; b < 4096; b++)
                ck_assert_msg(dst->host[pg * 4096 + b] == 0xa5, "%s threads: page %llu byte %llu was placed",
                              n[k], (unsigned long long)pg, (unsigned long long)b);
        mig_vm_free(dst);
    }
}
END_TEST

START_TEST(test_a_file_cut_short_is_refused_naming_the_chunk)
{
    g_autofree char *d = save("snap", "2", NULL);
    g_autofree char *p = path("snap");
    ck_assert_int_eq(truncate(p, (off_t)page_offset(p, 10, 7)), 0);
    cpr_mr_file *f;
    ck_assert_cpr_fails(load("snap", "2", NULL, errp_), -EBADMSG, "chunk 10 ");
    ck_assert_cpr_fails(cpr_mr_open(p, 0, &f, errp_), -EBADMSG, "chunk 10 ");
}
END_TEST

/* cachestat(2) (Linux 6.5): the page cache state of a file range; not in every libc's headers. */
struct mr_cachestat_range {
    uint64_t off, len;
};
struct mr_cachestat {
    uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};
#ifndef __NR_cachestat
#define __NR_cachestat 451
#endif

/*
 * What is flushed when: the live passes' pages reach the disk while the guest runs (an
 * fdatasync at each pass end), so at the stop (pause-before-switchover holds it there) the
 * file under its temporary name has no dirty page in the page cache; what the pause still
 * flushes is what the stopped pass and the records write after it.
 */
START_TEST(test_the_live_passes_are_on_disk_before_the_guest_stops)
{
    struct mig_vm *src = mig_running_vm(RAM, NULL);
    mig_vm_set_rate(src, 64);
    mapped(src->ctx, "2");
    ck_assert_int_eq(cpr_cap_set(src->ctx, "pause-before-switchover", 1, NULL), 0);
    g_autofree char *u = uri("file", "snap");
    ck_assert_int_eq(cpr_migrate_uri(src->ctx, u, CPR_MIGRATE_DETACH, NULL), 0);
    ck_assert(wait_status(src->ctx, CPR_MIGRATION_PRE_SWITCHOVER));
    ck_assert(!mig_vm_running(src));
    g_autofree char *pattern = path(".snap.*");
    glob_t g;
    ck_assert_int_eq(glob(pattern, 0, NULL, &g), 0);
    ck_assert_uint_eq(g.gl_pathc, 1);
    int fd = open(g.gl_pathv[0], O_RDONLY);
    globfree(&g);
    ck_assert_int_ge(fd, 0);
    struct mr_cachestat_range range = { 0, 0 }; /* the whole file */
    struct mr_cachestat cs = { 0 };
    long r = syscall(__NR_cachestat, fd, &range, &cs, 0);
    int e = errno;
    close(fd);
    ck_assert_int_eq(cpr_migrate_continue(src->ctx, NULL), 0);
    ck_assert_int_eq(cpr_migrate_wait(src->ctx, NULL), 0);
    mig_vm_free(src);
    if (r < 0) {
        ck_assert_int_eq(e, ENOSYS);
        fprintf(stderr, "mapped_ram: no cachestat(2) here: the flush before the stop not tested\n");
        return;
    }
    /* The lower half of RAM was written (unless the kernel already dropped it); none dirty. */
    ck_assert_msg(cs.nr_dirty == 0 && cs.nr_writeback == 0,
                  "at the stop: %llu pages cached, %llu dirty, %llu under writeback",
                  (unsigned long long)cs.nr_cache, (unsigned long long)cs.nr_dirty,
                  (unsigned long long)cs.nr_writeback);
    ck_assert_uint_ge(cs.nr_cache + cs.nr_evicted, RAM / 4096 / 2);
}
END_TEST

/* cpr-dump (CPR_DUMP, set by ctest) on `file`: exit status, standard output and error. */
static int dump(const char *args, const char *file, char **out, char **err)
{
    const char *tool = getenv("CPR_DUMP");
    ck_assert_ptr_nonnull(tool);
    g_autofree char *cmd = g_strdup_printf("%s %s %s", tool, args, file);
    int status;
    ck_assert(g_spawn_command_line_sync(cmd, out, err, &status, NULL));
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

START_TEST(test_cpr_dump_prints_and_checks_the_regions)
{
    g_autofree char *d = save("snap", "4", NULL);
    g_autofree char *p = path("snap");
    char *out = NULL, *err = NULL;
    ck_assert_int_eq(dump("--check", p, &out, &err), 0);
    ck_assert_ptr_nonnull(strstr(out, ": OK"));
    g_free(out);
    g_free(err);
    ck_assert_int_eq(dump("", p, &out, &err), 0);
    ck_assert_ptr_nonnull(strstr(out, "\"type\": \"region\""));
    ck_assert_ptr_nonnull(strstr(out, "\"chunks_verified\": 2048"));
    /* The guest wrote the lower half: the upper half's pages never reached the file. */
    const char *present = strstr(out, "\"present\": ");
    ck_assert_ptr_nonnull(present);
    uint64_t n = strtoull(present + 11, NULL, 10);
    ck_assert_uint_ge(n, 1024);
    ck_assert_uint_lt(n, 2048);
    g_free(out);
    g_free(err);
    flip(p, page_offset(p, 7, 9));
    ck_assert_int_eq(dump("--check", p, &out, &err), 1);
    ck_assert_msg(strstr(err, "'" MIG_VM_RAM_NAME "' chunk 7 "), "%s", err);
    g_free(out);
    g_free(err);
}
END_TEST

/*
 * A file system that refuses O_DIRECT (ramfs; tmpfs accepts it since Linux 6.6), mounted in
 * this test's own mount namespace (check runs each test in a child): a clear error naming the
 * file, and the old snapshot stays whole. Needs root for the mount.
 */
START_TEST(test_direct_io_where_the_file_system_refuses_it)
{
    g_autofree char *mnt = path("ramfs");
    ck_assert_int_eq(mkdir(mnt, 0700), 0);
    if (unshare(CLONE_NEWNS) < 0 || mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0 ||
        mount("none", mnt, "ramfs", 0, NULL) < 0) {
        fprintf(stderr, "mapped_ram: no ramfs mount here (%s): direct-io refusal not tested\n", strerror(errno));
        return;
    }
    g_autofree char *old = g_strdup_printf("%s/snap", mnt);
    ck_assert(g_file_set_contents(old, "old", 3, NULL));
    struct mig_vm *src = mig_running_vm(RAM, NULL);
    mapped(src->ctx, "2");
    ck_assert_int_eq(cpr_param_set(src->ctx, "direct-io", "true", NULL), 0);
    g_autofree char *u = g_strdup_printf("file:%s", old);
    ck_assert_cpr_fails(cpr_migrate_uri(src->ctx, u, 0, errp_), -EINVAL, "refuses O_DIRECT");
    ck_assert_cpr_fails(cpr_migrate_uri(src->ctx, u, 0, errp_), -EINVAL, "ramfs/.snap");
    ck_assert(mig_vm_running(src));
    gchar *left;
    gsize len;
    ck_assert(g_file_get_contents(old, &left, &len, NULL));
    ck_assert_str_eq(left, "old");
    g_free(left);
    mig_vm_free(src);
    ck_assert_int_eq(umount2(mnt, MNT_DETACH), 0);
}
END_TEST

START_TEST(test_direct_io_round_trip_where_allowed)
{
    /* The test directory is on a disk file system where O_DIRECT usually works; tmpfs not. */
    struct mig_vm *src = mig_running_vm(RAM, NULL);
    mapped(src->ctx, "2");
    ck_assert_int_eq(cpr_param_set(src->ctx, "direct-io", "on", NULL), 0);
    g_autofree char *u = uri("file", "snap");
    cpr_error *err = NULL;
    int ret = cpr_migrate_uri(src->ctx, u, 0, &err);
    if (ret < 0) {
        ck_assert_msg(strstr(cpr_error_message(err), "refuses O_DIRECT"), "%s", cpr_error_message(err));
        cpr_error_free(err);
        mig_vm_free(src);
        return;
    }
    g_autofree char *want = mig_vm_ram_digest(src);
    mig_vm_free(src);
    g_autofree char *got = NULL;
    ck_assert_int_eq(load("snap", "2", &got, NULL), 0);
    ck_assert_str_eq(got, want);
}
END_TEST

START_TEST(test_mapped_ram_refuses_a_stream_that_is_not_a_file)
{
    struct mig_vm *src = mig_running_vm(RAM, NULL);
    mapped(src->ctx, "2");
    ck_assert_cpr_fails(cpr_migrate_uri(src->ctx, "exec:cat >/dev/null", 0, errp_), -ESPIPE, "seekable file");
    ck_assert(mig_vm_running(src));
    mig_vm_free(src);
}
END_TEST

START_TEST(test_parameters_have_qemu_names_and_ranges)
{
    cpr_ctx *ctx;
    ck_assert_int_eq(cpr_ctx_new(&ctx, 0, NULL), 0);
    char *v;
    ck_assert_int_eq(cpr_param_get(ctx, "multifd-channels", &v, NULL), 0);
    ck_assert_str_eq(v, "2");
    g_free(v);
    ck_assert_cpr_fails(cpr_param_set(ctx, "multifd-channels", "0", errp_), -EINVAL, "1 to 255");
    ck_assert_cpr_fails(cpr_param_set(ctx, "multifd-channels", "256", errp_), -EINVAL, "1 to 255");
    ck_assert_cpr_fails(cpr_param_set(ctx, "direct-io", "maybe", errp_), -EINVAL, "true or false");
    ck_assert_int_eq(cpr_cap_get(ctx, "mapped-ram", NULL), 0);
    cpr_ctx_free(ctx);
}
END_TEST

static Suite *mapped_ram_suite(void)
{
    Suite *s = suite_create("mapped_ram");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_round_trip_with_1_to_4_channels);
    tcase_add_test(tc, test_mapped_ram_with_the_multifd_capability_round_trips);
    tcase_add_test(tc, test_the_file_stays_the_size_of_ram_after_many_passes);
    tcase_add_test(tc, test_the_live_passes_are_on_disk_before_the_guest_stops);
    tcase_add_test(tc, test_a_flipped_byte_is_refused_naming_the_chunk);
    tcase_add_test(tc, test_a_chunk_over_its_bound_is_refused);
    tcase_add_test(tc, test_a_chunk_that_fails_its_checksum_never_reaches_guest_ram);
    tcase_add_test(tc, test_a_file_cut_short_is_refused_naming_the_chunk);
    tcase_add_test(tc, test_cpr_dump_prints_and_checks_the_regions);
    tcase_add_test(tc, test_direct_io_where_the_file_system_refuses_it);
    tcase_add_test(tc, test_direct_io_round_trip_where_allowed);
    tcase_add_test(tc, test_mapped_ram_refuses_a_stream_that_is_not_a_file);
    tcase_add_test(tc, test_parameters_have_qemu_names_and_ranges);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(mapped_ram_suite)
