/* SPDX-License-Identifier: MIT */
/*
 * QMP input, apart from the server so a fuzz harness can reach it: a reader that cuts a byte
 * stream into JSON values (any split across reads), and the check that a value is a request.
 */
#ifndef VMM_QMP_PARSE_H
#define VMM_QMP_PARSE_H

#include <stddef.h>

#include <json-c/json.h>

typedef struct qmp_reader qmp_reader;

qmp_reader *qmp_reader_new(void);
void qmp_reader_free(qmp_reader *r);

/* Called for each complete JSON value; the value is freed after the call returns. */
typedef void (*qmp_value_fn)(json_object *value, void *opaque);

/* Feeds n bytes. Returns 0, or -1 on a JSON syntax error: the rest of these bytes is dropped
 * (the stream is out of step) and the reader starts afresh with the next call. */
int qmp_reader_feed(qmp_reader *r, const char *buf, size_t n, qmp_value_fn fn, void *opaque);

/* A request: pointers borrowed from the value it was parsed from. */
typedef struct qmp_request {
    const char *name;  /* "execute" */
    json_object *args; /* "arguments", NULL when absent */
    json_object *id;   /* "id", NULL when absent */
} qmp_request;

/* Checks that value is a QMP request. Returns 0, or -1 with *desc a QMP GenericError text
 * (static). req->id is set whenever value is an object, so even an error can echo it. */
int qmp_request_parse(json_object *value, qmp_request *req, const char **desc);

#endif
