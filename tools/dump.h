/* SPDX-License-Identifier: MIT */
/* The stream walker of cpr-dump (tools/dump.c), also driven by the fuzz harness. */
#ifndef CPR_TOOLS_DUMP_H
#define CPR_TOOLS_DUMP_H

#include <json-c/json.h>

#include <cpr/stream.h>

/*
 * Walks the whole stream (a reader at its first byte). *root receives the JSON document
 * (release with json_object_put()): "header", "records" (each with index, offset, type,
 * lengths, config/schema, section and fields), "end" when the stream is complete and good,
 * "error" when not. Returns NULL for a good stream, else the first problem (g_free).
 */
char *cpr_dump_stream(cpr_stream *s, json_object **root);

#endif
