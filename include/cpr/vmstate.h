/* SPDX-License-Identifier: MIT */
/*
 * Describing device state: a description (cpr_desc) says how the bytes of a C struct become
 * a section body in the stream (docs/format.md, section 3.2) and back, with versions,
 * subsections and hooks. Descriptions are built at run time by functions, never by static
 * tables whose layout the library would have to interpret, so a VMM compiled against this
 * header keeps its meaning with every later libcpr 1.x (docs/abi.md, "Descriptions").
 *
 *     struct uart { uint8_t lcr, ier; uint32_t fifo_len; uint8_t fifo[64]; char *name; };
 *     cpr_desc *d;
 *     cpr_desc_new("uart", 2, 1, sizeof(struct uart), &d, &err);
 *     cpr_desc_add(d, "lcr", CPR_TYPE_U8, CPR_MEMBER(struct uart, lcr), &err);
 *     cpr_desc_add(d, "ier", CPR_TYPE_U8, CPR_MEMBER(struct uart, ier), &err);
 *     cpr_desc_add(d, "fifo_len", CPR_TYPE_U32, CPR_MEMBER(struct uart, fifo_len), &err);
 *     cpr_desc_add_varray(d, "fifo", CPR_TYPE_BYTES, CPR_MEMBER(struct uart, fifo), "fifo_len", &err);
 *     cpr_desc_add(d, "name", CPR_TYPE_STRING, CPR_MEMBER(struct uart, name), &err);
 *     cpr_desc_field_since(d, "name", 2, &err);          // absent in version-1 streams
 *
 * Then register it with cpr_savevm_register() (cpr/savevm.h). A description is mutable until it
 * is registered or nested in another one; from then on it is sealed and adding to it fails.
 *
 * Ownership of loaded memory: STRING members are `char *` holding malloc(3)ed strings; on load
 * the library free(3)s the old value and stores a new malloc(3)ed one (or NULL). Nothing else
 * is allocated on load: variable arrays and buffers are loaded in place, up to the capacity
 * of the member that holds them.
 *
 * Thread safety: build a description on one thread; once sealed it is read-only and may be
 * used from any thread.
 */
#ifndef CPR_VMSTATE_H
#define CPR_VMSTATE_H

#include <cpr/common.h>
#include <cpr/stream.h>

CPR_BEGIN_DECLS

typedef struct cpr_desc cpr_desc;

/* Element types. Values are stable; new types get new numbers. */
typedef enum cpr_type {
    CPR_TYPE_U8 = 1,
    CPR_TYPE_U16 = 2,
    CPR_TYPE_U32 = 3,
    CPR_TYPE_U64 = 4,
    CPR_TYPE_I8 = 5,
    CPR_TYPE_I16 = 6,
    CPR_TYPE_I32 = 7,
    CPR_TYPE_I64 = 8,
    CPR_TYPE_BOOL = 9,   /* a 1-byte member (C bool, uint8_t): 0 or 1 */
    CPR_TYPE_BYTES = 10, /* raw bytes */
    CPR_TYPE_STRING = 11 /* a `char *` member, malloc(3)ed, may be NULL */
} cpr_type;

/* The offset and size of a struct member, as the cpr_desc_add* functions take them. */
#define CPR_MEMBER(type, member) offsetof(type, member), sizeof(((type *)0)->member)

/*
 * Creates a description of a struct of struct_size bytes. name is the section name in the
 * stream and schema; version is what this program writes; min_version the oldest it can load
 * (1 <= min_version <= version). On success *out holds one reference (cpr_desc_unref()).
 * Errors: -EINVAL (empty name, bad versions, struct_size 0).
 */
CPR_API int cpr_desc_new(const char *name, uint32_t version, uint32_t min_version, size_t struct_size,
                         cpr_desc **out, cpr_error **errp);
/* Takes another reference; returns d. */
CPR_API cpr_desc *cpr_desc_ref(cpr_desc *d);
/* Drops a reference; the description is freed with the last one. NULL is accepted. */
CPR_API void cpr_desc_unref(cpr_desc *d);
/* The name given to cpr_desc_new(); owned by d. */
CPR_API const char *cpr_desc_name(const cpr_desc *d);

/*
 * Adds a field, in stream order. The member at [offset, offset+size) of the struct holds it:
 *  - integer and bool types: size is the element size (a scalar) or a multiple of it (a fixed
 *    array of size/element elements);
 *  - CPR_TYPE_BYTES: a fixed buffer of size bytes;
 *  - CPR_TYPE_STRING: size must be sizeof(char *).
 * Errors: -EINVAL naming the field (size that does not fit the type, member outside the struct),
 * -EEXIST (a field of that name exists), -EPERM (the description is sealed).
 */
CPR_API int cpr_desc_add(cpr_desc *d, const char *name, cpr_type type, size_t offset, size_t size,
                         cpr_error **errp);

/*
 * Adds a variable array of integers or bools, or (CPR_TYPE_BYTES) a variable buffer, held in
 * place in a member of `size` bytes (its capacity). The element count (bytes for a buffer) is
 * the value of count_field, an integer scalar field added before this one. A load whose count
 * exceeds the capacity is refused. Errors: as cpr_desc_add(), and -ENOENT for count_field.
 */
CPR_API int cpr_desc_add_varray(cpr_desc *d, const char *name, cpr_type type, size_t offset, size_t size,
                                const char *count_field, cpr_error **errp);

/*
 * Adds a nested struct described by `sub` (sealed by this call; d takes a reference). size is
 * sub's struct size (one struct) or a multiple (a fixed array of structs).
 */
CPR_API int cpr_desc_add_struct(cpr_desc *d, const char *name, cpr_desc *sub, size_t offset, size_t size,
                                cpr_error **errp);
/* A variable array of structs: capacity size / sub's struct size, count in count_field. */
CPR_API int cpr_desc_add_struct_varray(cpr_desc *d, const char *name, cpr_desc *sub, size_t offset,
                                       size_t size, const char *count_field, cpr_error **errp);

/*
 * The escape hatch: put writes the field (at `field` = struct + offset) into the record with
 * cpr_stream_put_*(); get reads exactly `len` bytes back with cpr_stream_get_*() (the library
 * frames them with a u64 length and refuses a get that leaves bytes unread). opaque is passed
 * back unchanged. Both return 0 or a negative errno, and may say why with cpr_error_set()
 * (cpr/error.h): the failure then reads "section 'S' instance N field 'F': put: <message>".
 */
typedef int (*cpr_field_put_fn)(cpr_stream *s, const void *field, void *opaque, cpr_error **errp);
typedef int (*cpr_field_get_fn)(cpr_stream *s, void *field, uint64_t len, void *opaque, cpr_error **errp);
CPR_API int cpr_desc_add_custom(cpr_desc *d, const char *name, size_t offset, size_t size, cpr_field_put_fn put,
                                cpr_field_get_fn get, void *opaque, cpr_error **errp);

/*
 * Makes field `name` exist from section version `version` on: streams of an older version lack
 * it and the member keeps its value (post_load receives the version to fix it up).
 * Errors: -ENOENT, -EINVAL (version 0 or above the description's), -EPERM (sealed).
 */
CPR_API int cpr_desc_field_since(cpr_desc *d, const char *name, uint32_t version, cpr_error **errp);

/*
 * Makes the integer scalar field `name` a check: a load whose stream value differs from
 * `value` fails naming the section, the field and both values. For signed fields pass the
 * value converted to uint64_t (two's complement). Errors: -ENOENT, -EINVAL (not an integer
 * scalar), -EPERM (sealed).
 */
CPR_API int cpr_desc_field_equal(cpr_desc *d, const char *name, uint64_t value, cpr_error **errp);

/*
 * Hooks. obj is the object pointer registered with the section. Each returns 0 or a negative
 * errno, and may say why with cpr_error_set() (cpr/error.h); the save or load then fails with
 * "section 'S' instance N: pre_save: <message>" (or the errno's description when the hook set
 * none). post_save also runs after a failed save; its own failure is reported only when the
 * save had not already failed.
 */
typedef int (*cpr_hook_fn)(void *obj, cpr_error **errp);
/* post_load receives the version the section (or subsection) was saved in. */
typedef int (*cpr_post_load_fn)(void *obj, uint32_t version, cpr_error **errp);
/* Whether a subsection is written for this object now: nonzero = yes. */
typedef int (*cpr_needed_fn)(const void *obj);

/*
 * Sets the hooks (each may be NULL): pre_save before the object is written, post_save after
 * (also when writing failed), pre_load before its fields are loaded, post_load after the whole
 * stream was read and verified (never on a partial or failed load). A hook's error fails the
 * save or load. Errors: -EPERM (sealed).
 */
CPR_API int cpr_desc_set_hooks(cpr_desc *d, cpr_hook_fn pre_save, cpr_hook_fn post_save, cpr_hook_fn pre_load,
                               cpr_post_load_fn post_load, cpr_error **errp);

/* Subsection flags. */
#define CPR_SUBSECTION_REQUIRED 0x1u /* a stream of a version that has it must carry it */

/*
 * Adds subsection `sub` (sealed by this call; d takes a reference). Its fields are members of
 * the same object. It is written when needed(obj) is nonzero (NULL: always), with sub's own
 * version, and loaded when present. Errors: -EEXIST (a subsection of that name), -EINVAL,
 * -EPERM (sealed).
 */
CPR_API int cpr_desc_add_subsection(cpr_desc *d, cpr_desc *sub, cpr_needed_fn needed, unsigned int flags,
                                    cpr_error **errp);

CPR_END_DECLS

#endif /* CPR_VMSTATE_H */
