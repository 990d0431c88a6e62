/* SPDX-License-Identifier: MIT */
/* QMP input: JSON framing over a byte stream and request validation (see qmp_parse.h). */
#include <glib.h>

#include "qmp_parse.h"

struct qmp_reader {
    json_tokener *tok;
    int partial; /* the tokener holds the start of a value */
};

qmp_reader *qmp_reader_new(void)
{
    qmp_reader *r = g_new0(qmp_reader, 1);
    r->tok = json_tokener_new();
    return r;
}

void qmp_reader_free(qmp_reader *r)
{
    if (!r)
        return;
    json_tokener_free(r->tok);
    g_free(r);
}

int qmp_reader_feed(qmp_reader *r, const char *buf, size_t n, qmp_value_fn fn, void *opaque)
{
    size_t off = 0;
    while (off < n) {
        /* Skip whitespace between values, which the tokener would otherwise count as input. */
        while (!r->partial && off < n && g_ascii_isspace(buf[off]))
            off++;
        if (off >= n)
            break;
        size_t chunk = MIN(n - off, (size_t)G_MAXINT);
        json_object *o = json_tokener_parse_ex(r->tok, buf + off, (int)chunk);
        enum json_tokener_error jerr = json_tokener_get_error(r->tok);
        if (jerr == json_tokener_continue) {
            r->partial = 1;
            off += chunk;
            continue;
        }
        r->partial = 0;
        size_t used = json_tokener_get_parse_end(r->tok);
        json_tokener_reset(r->tok);
        if (jerr != json_tokener_success) {
            json_object_put(o);
            return -1;
        }
        off += used ? used : chunk;
        fn(o, opaque);
        json_object_put(o);
    }
    return 0;
}

int qmp_request_parse(json_object *value, qmp_request *req, const char **desc)
{
    *req = (qmp_request){ 0 };
    if (!json_object_is_type(value, json_type_object)) {
        *desc = "QMP input must be a JSON object";
        return -1;
    }
    req->id = json_object_object_get(value, "id");
    json_object *exec = json_object_object_get(value, "execute");
    if (!json_object_is_type(exec, json_type_string)) {
        *desc = "QMP input lacks member 'execute'";
        return -1;
    }
    req->name = json_object_get_string(exec);
    req->args = json_object_object_get(value, "arguments");
    return 0;
}
