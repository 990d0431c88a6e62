/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for the URI and channel-list parsers: the input, as a string, goes to
 * cpr_channels_parse_json() when it starts with '[' or '{' and to cpr_addr_parse_uri() and
 * cpr_channels_from_uri() otherwise. Whatever parses is printed back as a URI, reparsed (the
 * round trip must hold) and checked against every mode. A failure must say why.
 */
#include <stdlib.h>
#include <string.h>

#include <cpr/cpr.h>

#include "fuzz.h"

static void must_explain(int ret, cpr_error *err)
{
    if (ret < 0 && (!err || !cpr_error_message(err)[0]))
        abort();
    cpr_error_free(err);
}

static void check_modes(const cpr_channels *list)
{
    for (int m = 0; m < CPR_MODE_COUNT; m++) {
        cpr_error *err = NULL;
        int ret = cpr_channels_check_mode(list, (cpr_mode)m, m == CPR_MODE_CPR_EXEC ? "cpr-vmm" : NULL, &err);
        must_explain(ret, err);
    }
    (void)cpr_channels_incoming_mode(list, CPR_MODE_NORMAL);
}

static void round_trip(const cpr_addr *a)
{
    char *uri = cpr_addr_to_uri(a);
    if (!uri)
        return;
    cpr_addr *again = NULL;
    if (cpr_addr_parse_uri(uri, &again, NULL) < 0)
        abort(); /* what the library prints it must read back */
    char *uri2 = cpr_addr_to_uri(again);
    if (!uri2 || strcmp(uri, uri2))
        abort();
    cpr_free(uri2);
    cpr_addr_free(again);
    cpr_free(uri);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    cpr_error *err = NULL;
    cpr_channels *list = NULL;
    if (s[0] == '[' || s[0] == '{') {
        int ret = cpr_channels_parse_json(s, &list, &err);
        must_explain(ret, err);
    } else {
        cpr_addr *a = NULL;
        int ret = cpr_addr_parse_uri(s, &a, &err);
        must_explain(ret, err);
        if (ret == 0)
            round_trip(a);
        cpr_addr_free(a);
        err = NULL;
        ret = cpr_channels_from_uri(s, &list, &err);
        must_explain(ret, err);
    }
    if (list) {
        check_modes(list);
        for (int t = 0; t < 2; t++) {
            const cpr_addr *a = cpr_channels_get(list, (cpr_channel_type)t);
            if (a)
                round_trip(a);
        }
        cpr_channels_free(list);
    }
    free(s);
    return 0;
}
