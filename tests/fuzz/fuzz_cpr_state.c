/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for the cpr-state loader: what the old process sends on the cpr channel
 * (or leaves in the cpr-exec memfd) goes to cpr_state_decode() as the new process would take
 * it. The first byte picks the receiver's bounds (slots for passed fds, or fd numbers as
 * cpr-exec uses them); the rest is the state. It must fail cleanly, with a message, on
 * everything but a valid state, and a decoded state must respect the bounds it was given.
 */
#include <stdlib.h>
#include <string.h>

#include <cpr/cpr.h>

#include "fuzz.h"
#include "internal/cpr_state.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t nslots = data[0] & 0x7f;
    int by_number = data[0] >> 7;
    uint32_t max_entries = 64;
    cpr_state *st = NULL;
    cpr_error *err = NULL;
    if (cpr_state_decode(data + 1, size - 1, max_entries, nslots, by_number, &st, &err) < 0) {
        if (!err || !cpr_error_message(err)[0] || st)
            abort(); /* a failure says why and hands out nothing */
        cpr_error_free(err);
        return 0;
    }
    if (st->entries->len > max_entries)
        abort();
    for (guint i = 0; i < st->entries->len; i++) {
        const cpr_state_entry *e = &g_array_index(st->entries, cpr_state_entry, i);
        if (!e->name || (!by_number && (e->slot < 0 || (size_t)e->slot >= nslots)))
            abort();
    }
    cpr_state_free(st);
    return 0;
}

/* A state with a named fd and a RAM block, for 2 passed fds. */
int fuzz_make_seed(void **data, size_t *len)
{
    g_autoptr(cpr_state) st = cpr_state_new(CPR_MODE_CPR_TRANSFER);
    cpr_state_entry fd = { .kind = CPR_STATE_FD, .name = g_strdup("serial"), .id = 0, .type = 0100000, .slot = 0 };
    cpr_state_entry ram = { .kind = CPR_STATE_RAM, .name = g_strdup("ram0"), .type = 0100000,
                            .size = 16 << 20, .page_size = 4096, .slot = 1 };
    g_array_append_val(st->entries, fd);
    g_array_append_val(st->entries, ram);
    g_autoptr(GByteArray) buf = g_byte_array_new();
    const uint8_t bounds = 2; /* two slots, not by number */
    g_byte_array_append(buf, &bounds, 1);
    int ret = cpr_state_encode(st, buf, NULL);
    if (ret < 0)
        return ret;
    *len = buf->len;
    *data = malloc(buf->len);
    memcpy(*data, buf->data, buf->len);
    return 0;
}
