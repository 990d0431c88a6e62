/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for cpr-dump's walker (tools/dump.c): any bytes, as a stream whose schema
 * record is as untrusted as the rest. It must render or refuse, never crash or loop; a
 * refusal must say why. Seeds come from the machine of fuzz_machine.c (every field kind).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include <cpr/cpr.h>

#include "dump.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cpr_stream *s;
    if (cpr_stream_new_mem_source(data, size, &s, NULL) < 0)
        return 0;
    cpr_stream_set_limit(s, CPR_STREAM_LIMIT_RECORD, 1u << 20, NULL);
    cpr_stream_set_limit(s, CPR_STREAM_LIMIT_STRING, 4096, NULL);
    json_object *root = NULL;
    char *problem = cpr_dump_stream(s, &root);
    if (!root || (problem && !problem[0]))
        abort();
    /* Rendering must work on whatever was decoded. */
    if (!json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN))
        abort();
    g_free(problem);
    json_object_put(root);
    cpr_stream_free(s);
    return 0;
}

