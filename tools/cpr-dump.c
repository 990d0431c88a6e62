/* SPDX-License-Identifier: MIT */
/*
 * cpr-dump: prints any libcpr stream as JSON, or checks it.
 *
 *   cpr-dump [--check] [--max-record BYTES] [FILE | -]
 *
 * Without --check: one JSON document on stdout with the stream header, every record (index,
 * offset, type, lengths) and, for full sections described by the stream's schema record,
 * their fields by name. A stream it cannot read to the end still prints what came before,
 * plus an "error" member, and exits 1.
 * With --check: verifies every rule that makes a stream valid for any reader (docs/format.md
 * 2.8): checksums, structure, the end record, the config and schema records, every section
 * record against the schema, and that each full section decodes by its schema; prints one line
 * and exits 0, or names the first problem on standard error and exits 1. It does not apply a
 * loader's own checks (identity, section versions a program supports). Exit status 2: bad usage
 * or unreadable input.
 *
 * It needs nothing from the VMM that wrote the stream: the schema record describes the fields.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>
#include <json-c/json.h>

#include <cpr/error.h>

#include "dump.h"

static int usage(void)
{
    fprintf(stderr, "usage: cpr-dump [--check] [--max-record BYTES] [FILE | -]\n");
    return 2;
}

int main(int argc, char **argv)
{
    int check = 0;
    uint64_t max_record = 0;
    static const struct option opts[] = {
        { "check", no_argument, NULL, 'c' },
        { "max-record", required_argument, NULL, 'm' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "cm:h", opts, NULL)) != -1) {
        if (opt == 'c')
            check = 1;
        else if (opt == 'm')
            max_record = strtoull(optarg, NULL, 0);
        else
            return usage();
    }
    if (argc - optind > 1)
        return usage();
    const char *path = optind < argc ? argv[optind] : "-";
    int fd = strcmp(path, "-") == 0 ? 0 : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "cpr-dump: %s: %s\n", path, strerror(errno));
        return 2;
    }
    cpr_stream *s;
    cpr_error *err = NULL;
    if (cpr_stream_new_fd_reader(fd, fd ? CPR_STREAM_OWN_FD : 0, &s, &err) < 0) {
        fprintf(stderr, "cpr-dump: %s\n", cpr_error_message(err));
        cpr_error_free(err);
        return 2;
    }
    /* A dump tool meets large progressive parts: allow up to 1 GiB unless told otherwise. */
    cpr_stream_set_limit(s, CPR_STREAM_LIMIT_RECORD, max_record ? max_record : (1ull << 30), NULL);
    json_object *root;
    char *msg = cpr_dump_stream(s, &root);
    if (check) {
        json_object *end = json_object_object_get(root, "end");
        if (msg)
            fprintf(stderr, "cpr-dump: %s: %s\n", path, msg);
        else
            printf("%s: OK, %s records, %s sections, %s bytes\n", path,
                   json_object_get_string(json_object_object_get(end, "records")),
                   json_object_get_string(json_object_object_get(end, "sections")),
                   json_object_get_string(json_object_object_get(end, "stream_bytes")));
    } else {
        printf("%s\n", json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                               JSON_C_TO_STRING_NOSLASHESCAPE));
    }
    int status = msg ? 1 : 0;
    g_free(msg);
    json_object_put(root);
    cpr_stream_free(s);
    return status;
}
