/* SPDX-License-Identifier: MIT */
/* Private: descriptions as savevm sees them, and the body encoder/decoder (docs/format.md 3.2). */
#ifndef CPR_FORMAT_VMSTATE_H
#define CPR_FORMAT_VMSTATE_H

#include <glib.h>
#include <json-c/json.h>

#include <cpr/vmstate.h>

/* A post_load hook collected during a load, run once the whole stream is verified. */
struct cpr_post_load {
    cpr_post_load_fn fn;
    void *obj;
    uint32_t version;
    char *where; /* the section (and nested field) it belongs to, for its errors; g_free */
};

/* Drops the post_load hooks past the first len (their `where` freed). */
void cpr_post_loads_truncate(GArray *post_loads, guint len);

uint32_t cpr_desc_version(const cpr_desc *d);
uint32_t cpr_desc_min_version(const cpr_desc *d);
/* Makes d immutable (registration, nesting). */
void cpr_desc_seal(cpr_desc *d);

/*
 * Appends the body of obj (fields, then subsection list) to the record open on s, running
 * pre_save/post_save hooks. `where` names the section in errors.
 */
int cpr_vmstate_save(cpr_stream *s, const cpr_desc *d, void *obj, const char *where, cpr_error **errp);

/*
 * Decodes a body saved in `version` from the current record view of s into obj, runs pre_load
 * hooks and appends post_load hooks to `post_loads` (struct cpr_post_load) instead of running
 * them. The caller checks version against the description beforehand. Fails unless the body
 * is consumed exactly.
 */
int cpr_vmstate_load(cpr_stream *s, const cpr_desc *d, void *obj, uint32_t version, const char *where,
                     GArray *post_loads, cpr_error **errp);

/* The schema object of a description (docs/format.md section 4); caller owns it. */
json_object *cpr_desc_schema(const cpr_desc *d);

/* "u8", "struct", ... as the schema spells types. */
const char *cpr_type_schema_name(cpr_type t);

#endif
