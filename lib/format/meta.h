/* SPDX-License-Identifier: MIT */
/*
 * Private: the two JSON records of a stream, config (docs/format.md 2.4) and schema (section 4):
 * what makes them valid, and the schema's word on each section record. The loader and cpr-dump
 * both check through here, so a stream is valid or not whatever reads it (format.md 2.8).
 */
#ifndef CPR_FORMAT_META_H
#define CPR_FORMAT_META_H

#include <json-c/json.h>

#include <cpr/error.h>

#include "format/record.h"

/* Deepest nesting of arrays and objects in a config or schema record (format.md 2.7). */
#define CPR_JSON_MAX_DEPTH 32

typedef struct cpr_schema cpr_schema;

/*
 * Parses a config record and checks it: a JSON object with the string keys producer and mode
 * (one of the four modes), machine a string and identity an object when present. On success
 * *out (may be NULL) receives the object (json_object_put). -EBADMSG names the record and key.
 */
int cpr_meta_config(const struct cpr_rec *r, json_object **out, cpr_error **errp);
/* The same for a config payload already taken out of its record; `where` names it in errors. */
int cpr_meta_config_json(const void *json, size_t len, const char *where, json_object **out, cpr_error **errp);

/*
 * Parses a schema record and checks every entry, description and field of it (format.md 4).
 * string_limit bounds names. On success *out receives it (cpr_schema_free). -EBADMSG naming
 * the record and the entry at fault.
 */
int cpr_meta_schema(const struct cpr_rec *r, uint64_t string_limit, cpr_schema **out, cpr_error **errp);
void cpr_schema_free(cpr_schema *sc);

/* The whole schema object (owned by sc). */
json_object *cpr_schema_root(const cpr_schema *sc);

/* The entry of section `name` (owned by sc), or NULL; sc may be NULL (no schema record). */
json_object *cpr_schema_entry(const cpr_schema *sc, const char *name);

/*
 * A full or start record against the schema (sc NULL: nothing to check): the schema has the
 * section, of the record's kind, and the record's version is in its [min_version, version].
 * -EBADMSG naming the record and the section otherwise.
 */
int cpr_schema_check_record(const cpr_schema *sc, const struct cpr_rec *r, cpr_error **errp);

/* A JSON integer in 0..max: 0 with *v set, -1 otherwise (missing, another type, negative). */
int cpr_json_uint(json_object *o, const char *key, uint64_t max, uint64_t *v);

#endif
