/* SPDX-License-Identifier: MIT */
/*
 * multifd's wire format (docs/format.md, "multifd channels"): hello and packets round trip,
 * a flipped bit or a wrong magic, version, sequence or migration id is refused naming the
 * channel and packet; and a channel set end to end over a unix listener, with a connection
 * of another migration refused.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cpr/transport.h>

#include "core/compress.h"
#include "core/params.h"
#include "format/stream.h"
#include "migration/multifd.h"
#include "migration/multifd_wire.h"
#include "stream_util.h"
#include "testutil.h"

#define PAGE CPR_MFD_PAGE

static const uint8_t uuid_a[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };

START_TEST(hello_round_trip_and_refusals)
{
    struct cpr_mfd_hello h = { .channel = 2, .count = 4 }, back;
    memcpy(h.uuid, uuid_a, 16);
    uint8_t buf[CPR_MFD_HELLO_SIZE];
    cpr_mfd_hello_encode(&h, buf);
    ck_assert_int_eq(cpr_mfd_hello_decode(buf, &back, NULL), 0);
    ck_assert_uint_eq(back.channel, 2);
    ck_assert_uint_eq(back.count, 4);
    ck_assert_int_eq(memcmp(back.uuid, uuid_a, 16), 0);

    uint8_t bad[CPR_MFD_HELLO_SIZE];
    memcpy(bad, buf, sizeof(bad));
    bad[0] ^= 1;
    ck_assert_cpr_fails(cpr_mfd_hello_decode(bad, &back, errp_), -EPROTO, "not a multifd channel");
    memcpy(bad, buf, sizeof(bad));
    bad[4] = 2;
    ck_assert_cpr_fails(cpr_mfd_hello_decode(bad, &back, errp_), -EPROTO, "version 2");
    memcpy(bad, buf, sizeof(bad));
    bad[10] ^= 0x40; /* inside the id: the checksum catches it */
    ck_assert_cpr_fails(cpr_mfd_hello_decode(bad, &back, errp_), -EBADMSG, "checksum");
    h.channel = 4;
    cpr_mfd_hello_encode(&h, bad);
    ck_assert_cpr_fails(cpr_mfd_hello_decode(bad, &back, errp_), -EPROTO, "channel 4 of 4");
}
END_TEST

/* Two blocks of guest memory, the second left out of the stream. */
struct fake_ram {
    uint8_t *a, *c;
    struct cpr_mfd_block blocks[3];
};

static void fake_ram_init(struct fake_ram *r)
{
    r->a = calloc(64, PAGE);
    r->c = calloc(8, PAGE);
    r->blocks[0] = (struct cpr_mfd_block){ r->a, 64 * PAGE, "pc.ram", NULL };
    r->blocks[1] = (struct cpr_mfd_block){ NULL, 16 * PAGE, "kept", NULL };
    r->blocks[2] = (struct cpr_mfd_block){ r->c, 8 * PAGE - 100, "short", NULL }; /* last page short */
}

static void fake_ram_free(struct fake_ram *r)
{
    free(r->a);
    free(r->c);
}

/* A packet of 3 pages: 2 of block 0 at page 5, 1 of block 2's last (short) page. */
static size_t make_packet(uint8_t *out, uint32_t channel, uint64_t seq, uint8_t *payload)
{
    for (size_t i = 0; i < 3 * PAGE; i++)
        payload[i] = (uint8_t)(i * 7 + seq);
    struct cpr_mfd_run runs[2] = { { .block = 0, .count = 2, .first = 5 }, { .block = 2, .count = 1, .first = 7 } };
    struct cpr_mfd_header h = { .kind = CPR_MFD_KIND_DATA, .channel = channel, .seq = seq, .nruns = 2,
                                .pages = 3, .payload_len = 3 * PAGE };
    return cpr_mfd_packet_encode(&h, runs, payload, out);
}

static int decode_apply(const uint8_t *pkt, uint32_t channel, uint64_t seq, struct fake_ram *r, cpr_error **errp)
{
    struct cpr_mfd_header h;
    static uint8_t scratch[CPR_MFD_MAX_PAGES * PAGE];
    cpr_zstd *z = NULL;
    int ret = cpr_mfd_header_decode(pkt, channel, seq, &h, errp);
    if (ret == 0)
        ret = cpr_mfd_packet_apply(&h, pkt, pkt + CPR_MFD_HEADER_SIZE, r->blocks, 3, scratch, &z, errp);
    cpr_zstd_free(z);
    return ret;
}

START_TEST(packet_round_trip)
{
    struct fake_ram r;
    fake_ram_init(&r);
    uint8_t *pkt = malloc(CPR_MFD_HEADER_SIZE + 2 * CPR_MFD_RUN_SIZE + 3 * PAGE), *payload = malloc(3 * PAGE);
    size_t len = make_packet(pkt, 1, 3, payload);
    ck_assert_uint_eq(len, CPR_MFD_HEADER_SIZE + 2 * CPR_MFD_RUN_SIZE + 3 * PAGE);
    ck_assert_int_eq(decode_apply(pkt, 1, 3, &r, NULL), 0);
    ck_assert_int_eq(memcmp(r.a + 5 * PAGE, payload, 2 * PAGE), 0);
    ck_assert_int_eq(memcmp(r.c + 7 * PAGE, payload + 2 * PAGE, PAGE - 100), 0);
    ck_assert_uint_eq(r.a[4 * PAGE + 17], 0);
    ck_assert_uint_eq(r.a[7 * PAGE], 0);
    free(pkt);
    free(payload);
    fake_ram_free(&r);
}
END_TEST

START_TEST(packet_refusals_name_channel_and_packet)
{
    struct fake_ram r;
    fake_ram_init(&r);
    size_t size = CPR_MFD_HEADER_SIZE + 2 * CPR_MFD_RUN_SIZE + 3 * PAGE;
    uint8_t *pkt = malloc(size), *bad = malloc(size), *payload = malloc(3 * PAGE);
    make_packet(pkt, 1, 3, payload);

    /* One bit flipped anywhere in the body: refused, guest memory untouched. */
    size_t where[] = { CPR_MFD_HEADER_SIZE + 3, CPR_MFD_HEADER_SIZE + 2 * CPR_MFD_RUN_SIZE + 5000, size - 1 };
    for (size_t i = 0; i < G_N_ELEMENTS(where); i++) {
        memcpy(bad, pkt, size);
        bad[where[i]] ^= 0x10;
        ck_assert_cpr_fails(decode_apply(bad, 1, 3, &r, errp_), -EBADMSG, "multifd channel 1, packet 3: checksum");
        ck_assert_uint_eq(r.a[5 * PAGE], 0);
    }
    memcpy(bad, pkt, size);
    bad[0] ^= 0xff;
    ck_assert_cpr_fails(decode_apply(bad, 1, 3, &r, errp_), -EBADMSG, "multifd channel 1, packet 3: magic");
    memcpy(bad, pkt, size);
    bad[4] = 9;
    ck_assert_cpr_fails(decode_apply(bad, 1, 3, &r, errp_), -EBADMSG, "version 9");
    ck_assert_cpr_fails(decode_apply(pkt, 1, 4, &r, errp_), -EBADMSG, "out of sequence");
    ck_assert_cpr_fails(decode_apply(pkt, 0, 3, &r, errp_), -EBADMSG, "names another channel");

    /* Well sealed but addressed outside the memory the table sends. */
    struct cpr_mfd_run runs[1] = { { .block = 1, .count = 1, .first = 0 } };
    struct cpr_mfd_header h = { .kind = CPR_MFD_KIND_DATA, .channel = 0, .seq = 1, .nruns = 1, .pages = 1,
                                .payload_len = PAGE };
    cpr_mfd_packet_encode(&h, runs, payload, bad);
    ck_assert_cpr_fails(decode_apply(bad, 0, 1, &r, errp_), -EBADMSG, "block 1, which the block table does not send");
    runs[0] = (struct cpr_mfd_run){ .block = 0, .count = 1, .first = 64 };
    cpr_mfd_packet_encode(&h, runs, payload, bad);
    ck_assert_cpr_fails(decode_apply(bad, 0, 1, &r, errp_), -EBADMSG, "outside block 'pc.ram'");
    runs[0] = (struct cpr_mfd_run){ .block = 0, .count = 2, .first = 0 };
    cpr_mfd_packet_encode(&h, runs, payload, bad);
    ck_assert_cpr_fails(decode_apply(bad, 0, 1, &r, errp_), -EBADMSG, "runs add up to 2 pages");
    free(pkt);
    free(bad);
    free(payload);
    fake_ram_free(&r);
}
END_TEST

START_TEST(zstd_packets)
{
    cpr_zstd *z = NULL;
    if (!cpr_zstd_available()) {
        ck_assert_cpr_fails(cpr_zstd_new(1, &z, errp_), -ENOTSUP, "libcpr was built without zstd");
        return;
    }
    struct fake_ram r;
    fake_ram_init(&r);
    ck_assert_int_eq(cpr_zstd_new(3, &z, NULL), 0);
    uint8_t *raw = malloc(4 * PAGE), *frame = malloc(cpr_zstd_bound(4 * PAGE));
    for (size_t i = 0; i < 4 * PAGE; i++)
        raw[i] = (uint8_t)("multifd "[i % 8]);
    ssize_t n = cpr_zstd_compress(z, frame, cpr_zstd_bound(4 * PAGE), raw, 4 * PAGE, NULL);
    ck_assert_int_gt(n, 0);
    ck_assert_int_lt(n, PAGE);
    struct cpr_mfd_run runs[1] = { { .block = 0, .count = 4, .first = 10 } };
    struct cpr_mfd_header h = { .kind = CPR_MFD_KIND_DATA, .flags = CPR_MFD_FLAG_ZSTD, .channel = 0, .seq = 1,
                                .nruns = 1, .pages = 4, .payload_len = (uint32_t)n };
    uint8_t *pkt = malloc(CPR_MFD_HEADER_SIZE + CPR_MFD_RUN_SIZE + (size_t)n);
    cpr_mfd_packet_encode(&h, runs, frame, pkt);
    ck_assert_int_eq(decode_apply(pkt, 0, 1, &r, NULL), 0);
    ck_assert_int_eq(memcmp(r.a + 10 * PAGE, raw, 4 * PAGE), 0);
    /* A frame that holds fewer pages than the header says is refused. */
    h.pages = 5;
    runs[0].count = 5;
    cpr_mfd_packet_encode(&h, runs, frame, pkt);
    ck_assert_cpr_fails(decode_apply(pkt, 0, 1, &r, errp_), -EBADMSG, "multifd channel 0, packet 1: zstd");
    cpr_zstd_free(z);
    free(raw);
    free(frame);
    free(pkt);
    fake_ram_free(&r);
}
END_TEST

/* ---- a channel set end to end over a unix listener ---- */

static void no_watch(void *opaque, int fd)
{
}

/* A memory stream with a part record open, as the ram section writes into. */
static cpr_stream *part_writer(void)
{
    cpr_stream *w;
    ck_assert_int_eq(cpr_stream_new_mem_sink(0, &w, NULL), 0);
    uint32_t id = write_ram_start(w);
    ck_assert_int_eq(cpr_rec_begin_part(w, CPR_REC_PART, id, NULL), 0);
    return w;
}

/* Closes w's part and reads it back: a reader inside that part. */
static cpr_stream *reader_of(cpr_stream *w)
{
    const void *data;
    size_t len;
    cpr_stream *r;
    struct cpr_rec rec;
    ck_assert_int_eq(cpr_rec_end(w, NULL), 0);
    ck_assert_int_eq(cpr_stream_mem_data(w, &data, &len, NULL), 0);
    ck_assert_int_eq(cpr_stream_new_mem_source(data, len, &r, NULL), 0);
    ck_assert_int_eq(cpr_rec_read_stream_header(r, NULL, NULL), 0);
    ck_assert_int_eq(next_part(r, &rec), 1);
    return r;
}

/* A unix listener in a scratch directory, and the channel sets on both of its ends. */
struct rig {
    char dir[24];
    char *path;
    cpr_channels *chs;
    cpr_listener *l;
    struct cpr_multifd_send *ms;
    struct cpr_multifd_recv *mr;
};

static void rig_listen(struct rig *r)
{
    strcpy(r->dir, "/tmp/cpr-mfd-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(r->dir));
    r->path = g_strdup_printf("%s/mig.sock", r->dir);
    g_autofree char *uri = g_strdup_printf("unix:%s", r->path);
    ck_assert_int_eq(cpr_channels_from_uri(uri, &r->chs, NULL), 0);
    ck_assert_int_eq(cpr_listener_new(cpr_channels_get(r->chs, CPR_CHANNEL_MAIN), 0, &r->l, NULL), 0);
}

/* Opens the source's channels, passes the descriptor to the destination, which accepts them
 * (with pass acknowledgements over ack_src -> ack_dst, the two ends of main, when given);
 * the destination's result. */
static int rig_open_acked(struct rig *r, const struct cpr_params *p, const struct cpr_mfd_block *blocks,
                          struct cpr_main_chan *ack_src, struct cpr_main_chan *ack_dst, cpr_error **errp)
{
    static const struct cpr_chan_cancel job = { -1, no_watch, no_watch, NULL };
    ck_assert_int_eq(cpr_multifd_send_open(&job, cpr_channels_get(r->chs, CPR_CHANNEL_MAIN), p, NULL, &r->ms, NULL), 0);
    ck_assert_int_eq(cpr_multifd_recv_new(&job, r->l, NULL, &r->mr), 0);
    if (ack_src)
        cpr_multifd_send_want_acks(r->ms, ack_src);
    if (ack_dst)
        cpr_multifd_recv_ack_to(r->mr, ack_dst);
    cpr_stream *w = part_writer();
    ck_assert_int_eq(cpr_multifd_send_put_setup(r->ms, w, NULL), 0);
    cpr_stream *rd = reader_of(w);
    int ret = cpr_multifd_recv_setup(r->mr, rd, blocks, 1, errp);
    cpr_stream_free(rd);
    cpr_stream_free(w);
    return ret;
}

static void rig_open(struct rig *r, const struct cpr_params *p, const struct cpr_mfd_block *blocks)
{
    ck_assert_int_eq(rig_open_acked(r, p, blocks, NULL, NULL, NULL), 0);
}

/* The end of a pass: the source's sync entry, read by the destination; its result. */
static int rig_sync(struct rig *r, cpr_error **errp)
{
    cpr_stream *w = part_writer();
    ck_assert_int_eq(cpr_multifd_send_sync(r->ms, w, NULL), 0);
    cpr_stream *rd = reader_of(w);
    int ret = cpr_multifd_recv_sync(r->mr, rd, errp);
    cpr_stream_free(rd);
    cpr_stream_free(w);
    return ret;
}

static void rig_free(struct rig *r)
{
    cpr_multifd_send_free(r->ms);
    cpr_multifd_recv_free(r->mr);
    cpr_listener_free(r->l);
    cpr_channels_free(r->chs);
    unlink(r->path);
    g_free(r->path);
    rmdir(r->dir);
}

/* Another migration's connection to the listener at path, with the first len bytes of its
 * hello (all of it, or a part: a peer that stalls). */
static int stray_connect(const char *path, unsigned channels, size_t len)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    strcpy(sa.sun_path, path);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    struct cpr_mfd_hello h = { .channel = 0, .count = channels };
    memcpy(h.uuid, uuid_a, 16);
    uint8_t buf[CPR_MFD_HELLO_SIZE];
    cpr_mfd_hello_encode(&h, buf);
    ck_assert_int_eq(write(fd, buf, len), (ssize_t)len);
    return fd;
}

/* stray: 0 none, 1 a whole hello of another migration, 2 a part of one, then silence. */
static void end_to_end(unsigned channels, int zstd, int stray)
{
    if (zstd && !cpr_zstd_available())
        return;
    struct rig r;
    rig_listen(&r);
    enum { PAGES = 600 };
    uint8_t *src = malloc(PAGES * PAGE), *dst = calloc(PAGES, PAGE);
    for (size_t i = 0; i < PAGES * PAGE / 8; i++)
        ((uint64_t *)src)[i] = zstd ? i / 64 : i * 0x9E3779B97F4A7C15ull;
    struct cpr_mfd_block blocks[1] = { { dst, PAGES * PAGE, "ram", NULL } };
    /* The stray reaches the listener first. */
    int stray_fd = stray ? stray_connect(r.path, channels, stray == 1 ? CPR_MFD_HELLO_SIZE : 10) : -1;
    struct cpr_params p;
    cpr_params_init(&p);
    p.multifd_channels = channels;
    p.multifd_compression = zstd ? CPR_MULTIFD_COMPRESS_ZSTD : CPR_MULTIFD_COMPRESS_NONE;
    rig_open(&r, &p, blocks);
    ck_assert_uint_eq(cpr_multifd_recv_refused(r.mr), stray ? 1 : 0);

    /* Two passes: every page, then a few again with new contents (sent stopped: no copy). */
    for (uint32_t first = 0; first < PAGES; first += 100)
        ck_assert_int_eq(cpr_multifd_send_pages(r.ms, 0, src, first, 100, 0, NULL), 0);
    ck_assert_int_eq(rig_sync(&r, NULL), 0);
    ck_assert_int_eq(memcmp(src, dst, PAGES * PAGE), 0);
    memset(src + 10 * PAGE, 0xab, 3 * PAGE);
    memset(src + 300 * PAGE, 0xcd, PAGE);
    ck_assert_int_eq(cpr_multifd_send_pages(r.ms, 0, src, 10, 3, 1, NULL), 0);
    ck_assert_int_eq(cpr_multifd_send_pages(r.ms, 0, src, 300, 1, 1, NULL), 0);
    ck_assert_int_eq(rig_sync(&r, NULL), 0);
    ck_assert_int_eq(cpr_multifd_send_finish(r.ms, NULL), 0);
    ck_assert_int_eq(cpr_multifd_recv_finish(r.mr, NULL), 0);
    ck_assert_int_eq(memcmp(src, dst, PAGES * PAGE), 0);
    uint64_t bytes = cpr_multifd_send_bytes(r.ms);
    if (zstd)
        ck_assert_uint_lt(bytes, PAGES * PAGE / 4);
    else
        ck_assert_uint_gt(bytes, (PAGES + 4) * PAGE);
    if (stray) {
        char c;
        ck_assert_int_eq(read(stray_fd, &c, 1), 0); /* refused: closed by the destination */
        close(stray_fd);
    }
    rig_free(&r);
    free(src);
    free(dst);
}

START_TEST(end_to_end_channels)
{
    end_to_end(1, 0, 0);
    end_to_end(3, 0, 0);
}
END_TEST

START_TEST(end_to_end_zstd)
{
    end_to_end(2, 1, 0);
}
END_TEST

START_TEST(end_to_end_refuses_another_migration)
{
    end_to_end(2, 0, 1);
}
END_TEST

/* A connection that sends part of a hello and stalls is refused after a bounded wait; the real
 * channels behind it get in (it once held the destination forever). */
START_TEST(end_to_end_refuses_a_stalled_hello)
{
    end_to_end(2, 0, 2);
}
END_TEST

/* A source that goes away mid-pass: the destination's sync (or its wait for the end packets)
 * fails naming the channel. */
START_TEST(dead_channel_fails_the_sync)
{
    struct rig r;
    rig_listen(&r);
    uint8_t *ram = calloc(64, PAGE);
    struct cpr_mfd_block blocks[1] = { { ram, 64 * PAGE, "ram", NULL } };
    struct cpr_params p;
    cpr_params_init(&p);
    rig_open(&r, &p, blocks);
    ck_assert_int_eq(cpr_multifd_send_pages(r.ms, 0, ram, 0, 64, 1, NULL), 0);
    cpr_stream *w = part_writer();
    ck_assert_int_eq(cpr_multifd_send_sync(r.ms, w, NULL), 0);
    cpr_multifd_send_free(r.ms);
    r.ms = NULL;
    cpr_stream *rd = reader_of(w);
    cpr_error *err = NULL;
    int ret = cpr_multifd_recv_sync(r.mr, rd, &err);
    if (ret == 0) /* every packet had left before the close: then the end packet is missing */
        ret = cpr_multifd_recv_finish(r.mr, &err);
    ck_assert_int_lt(ret, 0);
    ck_assert_ptr_nonnull(strstr(cpr_error_message(err), "multifd channel"));
    cpr_error_free(err);
    cpr_stream_free(rd);
    cpr_stream_free(w);
    rig_free(&r);
    free(ram);
}
END_TEST

/* Rule 2 of the sync entries (docs/format.md, "Multifd channels"): a packet of the next pass waits on
 * its channel until the loader passed the sync entry of the previous one, so that a page sent
 * in two passes lands in pass order whatever the channels' timing. */
START_TEST(next_pass_waits_for_the_sync)
{
    struct rig r;
    rig_listen(&r);
    enum { PAGES = 200 };
    uint8_t *src = calloc(PAGES, PAGE), *dst = calloc(PAGES, PAGE);
    struct cpr_mfd_block blocks[1] = { { dst, PAGES * PAGE, "ram", NULL } };
    struct cpr_params p;
    cpr_params_init(&p);
    p.multifd_channels = 1;
    rig_open(&r, &p, blocks);
    memset(src + 5 * PAGE, 0xaa, PAGE);
    ck_assert_int_eq(cpr_multifd_send_pages(r.ms, 0, src, 5, 1, 1, NULL), 0);
    cpr_stream *w = part_writer();
    ck_assert_int_eq(cpr_multifd_send_sync(r.ms, w, NULL), 0); /* pass 0 ends; not read yet */
    for (int i = 0; i < 3000 && __atomic_load_n(&dst[5 * PAGE], __ATOMIC_ACQUIRE) != 0xaa; i++)
        g_usleep(1000); /* pass 0's packet applied: its pages may change now */
    memset(src + 5 * PAGE, 0xbb, PAGE);
    ck_assert_int_eq(cpr_multifd_send_pages(r.ms, 0, src, 0, CPR_MFD_MAX_PAGES, 1, NULL), 0);
    ck_assert_int_eq(cpr_multifd_send_pages(r.ms, 0, src, 150, 1, 1, NULL), 0); /* sends the full one */
    g_usleep(300 * 1000);
    ck_assert_uint_eq(dst[5 * PAGE], 0xaa); /* pass 1's packet held */
    cpr_stream *rd = reader_of(w);
    ck_assert_int_eq(cpr_multifd_recv_sync(r.mr, rd, NULL), 0);
    ck_assert_int_eq(rig_sync(&r, NULL), 0);
    ck_assert_uint_eq(dst[5 * PAGE], 0xbb);
    ck_assert_int_eq(cpr_multifd_send_finish(r.ms, NULL), 0);
    ck_assert_int_eq(cpr_multifd_recv_finish(r.mr, NULL), 0);
    cpr_stream_free(rd);
    cpr_stream_free(w);
    rig_free(&r);
    free(src);
    free(dst);
}
END_TEST

/* Two ends of a main channel on a socket pair: what the pass acknowledgements travel on. */
static void main_pair(struct cpr_main_chan *src, struct cpr_main_chan *dst, int sv[2])
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    *src = (struct cpr_main_chan){ .fd = sv[0], .is_socket = 1, .commit_signal = -1 };
    *dst = (struct cpr_main_chan){ .fd = sv[1], .is_socket = 1, .commit_signal = -1 };
}

/* multifd parameters for `channels`, and a main channel's two ends for the acknowledgements. */
static void acked_setup(struct cpr_params *p, uint32_t channels, struct cpr_main_chan *ms, struct cpr_main_chan *md,
                        int sv[2])
{
    cpr_params_init(p);
    p->multifd_channels = channels;
    main_pair(ms, md, sv);
}

/* With acknowledgements asked for, the destination acknowledges each pass once applied, the
 * source reads every one (main then holds nothing more); a wrong pass and a NAK fail it. */
START_TEST(passes_are_acknowledged_on_main)
{
    struct rig r;
    rig_listen(&r);
    enum { PAGES = 64 };
    uint8_t *src = malloc(PAGES * PAGE), *dst = calloc(PAGES, PAGE);
    memset(src, 0x5a, PAGES * PAGE);
    struct cpr_mfd_block blocks[1] = { { dst, PAGES * PAGE, "ram", NULL } };
    struct cpr_params p;
    struct cpr_main_chan ms, md;
    int sv[2];
    acked_setup(&p, 2, &ms, &md, sv);
    ck_assert_int_eq(rig_open_acked(&r, &p, blocks, &ms, &md, NULL), 0);
    ck_assert_int_eq(cpr_multifd_send_take_acks(r.ms, NULL), 0); /* none owed yet */
    for (int pass = 0; pass < 2; pass++) {
        ck_assert_int_eq(cpr_multifd_send_pages(r.ms, 0, src, 0, PAGES, 0, NULL), 0);
        ck_assert_int_eq(rig_sync(&r, NULL), 0);
    }
    ck_assert_int_eq(cpr_multifd_send_take_acks(r.ms, NULL), 0);
    ck_assert_int_eq(memcmp(src, dst, PAGES * PAGE), 0);
    char c;
    ck_assert_int_eq(recv(sv[0], &c, 1, MSG_DONTWAIT), -1); /* both read, nothing else */
    ck_assert_int_eq(errno, EAGAIN);
    /* A third pass acknowledged as the wrong one. */
    ck_assert_int_eq(cpr_multifd_send_pages(r.ms, 0, src, 0, 1, 0, NULL), 0);
    cpr_stream *w = part_writer();
    ck_assert_int_eq(cpr_multifd_send_sync(r.ms, w, NULL), 0);
    cpr_stream_free(w);
    ck_assert_int_eq(cpr_main_chan_send_pass_ack(&md, 7, NULL), 0);
    ck_assert_cpr_fails(cpr_multifd_send_take_acks(r.ms, errp_), -EPROTO, "acknowledged pass 7 where pass 2 was due");
    /* A destination that failed instead says why. */
    static const uint8_t nak[] = { 0x15, 4, 0, 'o', 'o', 'p', 's' };
    ck_assert_int_eq(write(sv[1], nak, sizeof(nak)), (ssize_t)sizeof(nak));
    ck_assert_cpr_fails(cpr_multifd_send_take_acks(r.ms, errp_), -ECONNABORTED, "negative acknowledgement: oops");
    close(sv[0]);
    close(sv[1]);
    rig_free(&r);
    free(src);
    free(dst);
}
END_TEST

/* A source that asks for acknowledgements, to a destination with nowhere to send them. */
START_TEST(acks_asked_without_a_return_path_refused)
{
    struct rig r;
    rig_listen(&r);
    uint8_t dst[PAGE];
    struct cpr_mfd_block blocks[1] = { { dst, PAGE, "ram", NULL } };
    struct cpr_params p;
    struct cpr_main_chan ms, md;
    int sv[2];
    acked_setup(&p, 1, &ms, &md, sv);
    ck_assert_cpr_fails(rig_open_acked(&r, &p, blocks, &ms, NULL, errp_), -EPROTO, "no return path");
    close(sv[0]);
    close(sv[1]);
    rig_free(&r);
}
END_TEST

static Suite *multifd_suite(void)
{
    Suite *s = suite_create("multifd");
    TCase *tc = tcase_create("wire");
    tcase_add_test(tc, hello_round_trip_and_refusals);
    tcase_add_test(tc, packet_round_trip);
    tcase_add_test(tc, packet_refusals_name_channel_and_packet);
    tcase_add_test(tc, zstd_packets);
    suite_add_tcase(s, tc);
    TCase *e2e = tcase_create("channels");
    tcase_set_timeout(e2e, 60);
    tcase_add_test(e2e, end_to_end_channels);
    tcase_add_test(e2e, end_to_end_zstd);
    tcase_add_test(e2e, end_to_end_refuses_another_migration);
    tcase_add_test(e2e, end_to_end_refuses_a_stalled_hello);
    tcase_add_test(e2e, dead_channel_fails_the_sync);
    tcase_add_test(e2e, next_pass_waits_for_the_sync);
    tcase_add_test(e2e, passes_are_acknowledged_on_main);
    tcase_add_test(e2e, acks_asked_without_a_return_path_refused);
    suite_add_tcase(s, e2e);
    return s;
}

CPR_TEST_MAIN(multifd_suite)
