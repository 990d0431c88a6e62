/* SPDX-License-Identifier: MIT */
/*
 * Sections on a context: what a VMM registers so that libcpr saves and loads its state.
 *
 * A section is identified by (name, instance id). Two kinds:
 *  - described sections (cpr/vmstate.h): saved in one piece, as a full record, while the
 *    guest is stopped;
 *  - progressive ("live") sections: saved in parts while the guest runs (RAM-like state),
 *    through callbacks; parts of several progressive sections interleave in the stream.
 *
 * Loading is strict (docs/format.md): an unknown section, a version outside [min, max], an
 * unexpected or missing subsection, a bad checksum, a truncated stream: each is an error that
 * names the section, versions, record or byte offset. post_load hooks and the load_done
 * callback run only after the whole stream was read and verified.
 *
 * Thread safety: registration, save and load belong to the context's owner thread; a save or
 * load runs on one thread at a time per context.
 */
#ifndef CPR_SAVEVM_H
#define CPR_SAVEVM_H

#include <cpr/common.h>
#include <cpr/stream.h>
#include <cpr/vmstate.h>

CPR_BEGIN_DECLS

/* A registered section; owned by the context. */
typedef struct cpr_section cpr_section;

/* Registration flags. */
/* A loader that has no such section skips it with a warning instead of failing. */
#define CPR_SECTION_OPTIONAL 0x1u

/*
 * Registers a described section: `desc` applied to `obj`. name may be NULL (the description's
 * name is used). Several instances of one description register with different instance ids.
 * desc is sealed and referenced; obj is borrowed and must stay valid until unregistered.
 * On success *out (may be NULL) receives the handle.
 * Errors: -EEXIST naming (name, instance) when taken; -EINVAL (bad flags, a name already used
 * with another description), -EPERM while a save or load of this context runs.
 */
CPR_API int cpr_savevm_register(cpr_ctx *ctx, const char *name, uint32_t instance_id, cpr_desc *desc, void *obj,
                                unsigned int flags, cpr_section **out, cpr_error **errp);

/* Phases of a progressive section's records, as load() sees them. */
#define CPR_LIVE_START 0 /* the start record: body written by setup() */
#define CPR_LIVE_PART 1  /* a part record: body written by one iterate() */
#define CPR_LIVE_END 2   /* the end record: body written by complete() */

/*
 * Callbacks of a progressive section. Initialise with CPR_LIVE_OPS_INIT or cpr_live_ops_init()
 * and set what you use. Members past an older caller's `size` read as NULL; a newer caller's
 * members past what this library knows must be NULL (else -EINVAL), so the struct grows at its
 * end only. opaque is the pointer given at registration. Each write callback writes its
 * record's body with cpr_stream_put_*(). A callback that fails returns a negative errno and
 * may say why through errp (cpr_error_set()); the save or load then fails with an error naming
 * the section, instance and callback, followed by that message (or the errno's description).
 *
 * The contract with the engine (docs/savevm.md, "Progressive sections"):
 *  - while the guest runs, iterate() is called round after round; a round in which no section
 *    sent anything is followed by a 10 ms pause, so "nothing yet" costs no busy loop;
 *  - after the stop, iterate() is called again only while the section makes progress: each
 *    call sends a part and, after the first, reports less pending than the call before. A
 *    section that stops making progress (returns 0 with nothing sent, or with as much pending
 *    as before) is not asked again: complete() writes everything left. One that keeps sending
 *    past twice what it had left at the stop (its first part after the stop plus the pending
 *    it then reported, plus 1 MiB), or past 2^20 parts, fails the save with -EOVERFLOW naming
 *    it; a migration then fails and its guest runs again;
 *  - complete() is called exactly once per save, with the guest stopped, and must write
 *    everything left in one end record (bounded by the stream's CPR_STREAM_LIMIT_RECORD).
 */
typedef struct cpr_live_ops {
    uint32_t size;
    /* Optional: nonzero when the section takes part in this save (e.g. not when RAM stays in
     * place). NULL: always. */
    int (*is_active)(void *opaque);
    /* Save start, guest running: writes the start record's body. */
    int (*setup)(cpr_stream *s, void *opaque, cpr_error **errp);
    /* One part: writes a part body (keep it to a few MiB; nothing when there is nothing to
     * send now), stores the bytes still to send in *pending, returns 1 when nothing is left for
     * now, 0 when more is. A live migration switches over only once RAM's and every section's
     * *pending fit its downtime limit (or after its last pass): what is left then goes with the
     * guest stopped, in parts while they make progress, then through complete() (above). */
    int (*iterate)(cpr_stream *s, uint64_t *pending, void *opaque, cpr_error **errp);
    /* Guest stopped, once per save: writes the end record's body (everything left). */
    int (*complete)(cpr_stream *s, void *opaque, cpr_error **errp);
    /* Load of one record's body (phase CPR_LIVE_*), saved in `version`. */
    int (*load)(cpr_stream *s, uint32_t version, int phase, void *opaque, cpr_error **errp);
    /* After the whole stream is verified (the progressive counterpart of post_load). */
    int (*load_done)(uint32_t version, void *opaque, cpr_error **errp);
    /* After a save ended, successfully or not. */
    void (*cleanup)(void *opaque);
    /* Optional: bytes left to send, for the migration engine's estimate before setup. Asked
     * once, right before setup(); the engine uses it until the first iterate() reports. */
    uint64_t (*pending)(void *opaque);
} cpr_live_ops;

/* Sets `size` and zeroes the rest: CPR_LIVE_OPS_INIT in C, cpr_live_ops_init() anywhere
 * (C++ has no designated initialisers). Since 1.2. */
#define CPR_LIVE_OPS_INIT { .size = sizeof(cpr_live_ops) }
/* Sets ops->size to sizeof(cpr_live_ops) and every other member to NULL. NULL is ignored.
 * Thread safety: any thread. */
CPR_API void cpr_live_ops_init(cpr_live_ops *ops);

/*
 * Registers a progressive section. ops is copied (its first `size` bytes); setup, iterate,
 * complete and load are required. Versions as for descriptions (1 <= min_version <= version).
 * Errors: as cpr_savevm_register(), and -EINVAL for missing callbacks, an ops->size smaller
 * than the first version's (through load_done) or a non-zero byte past the members this library
 * knows (the error names its offset).
 */
CPR_API int cpr_savevm_register_live(cpr_ctx *ctx, const char *name, uint32_t instance_id, uint32_t version,
                                     uint32_t min_version, const cpr_live_ops *ops, void *opaque, unsigned int flags,
                                     cpr_section **out, cpr_error **errp);

/* Unregisters and frees a section. NULL is accepted. Not during a save or load. */
CPR_API void cpr_savevm_unregister(cpr_ctx *ctx, cpr_section *section);

/* Finds a section by (name, instance id); NULL when there is none. */
CPR_API cpr_section *cpr_savevm_find(cpr_ctx *ctx, const char *name, uint32_t instance_id);

/*
 * Sets the machine identity written to the config record and checked on load (docs/format.md
 * 2.4): e.g. "pc-q35 smp=2 mem=1G". NULL clears it. Errors: -EINVAL.
 */
CPR_API int cpr_savevm_set_machine(cpr_ctx *ctx, const char *identity, cpr_error **errp);

/* Sets the free-text producer name written to the config record (default "libcpr X.Y.Z"). */
CPR_API int cpr_savevm_set_producer(cpr_ctx *ctx, const char *producer, cpr_error **errp);

/*
 * Where warnings go (an optional section skipped on load, ...). Default: standard error,
 * prefixed "libcpr: warning: ". fn NULL restores the default.
 */
typedef void (*cpr_warning_fn)(const char *message, void *opaque);
CPR_API int cpr_savevm_set_warning_handler(cpr_ctx *ctx, cpr_warning_fn fn, void *opaque, cpr_error **errp);

/*
 * One-shot save of the whole guest to a stream writer: header, config (mode from the
 * context's `mode` parameter), schema, guest RAM when RAM blocks are registered (cpr/ram.h;
 * the "ram" section a migration sends, so a snapshot restores memory too; blocks the mode
 * leaves in place, as x-ignore-shared does for shared blocks, are not sent), progressive
 * sections (parts, then complete(), as after a migration's stop), described sections, end
 * record; then a flush. No migration engine, no guest control: the caller stops its guest
 * first. Errors: the first failure, naming the section (and the callback, with its own
 * message); *errp is always set when errp is given.
 */
CPR_API int cpr_savevm_save(cpr_ctx *ctx, cpr_stream *s, cpr_error **errp);

/*
 * Loads a whole stream into the registered sections, strictly; guest RAM into the registered
 * RAM blocks of the same names and sizes (a block that differs is refused, named). The reader's limits
 * (cpr_stream_set_limit()) bound every length. Errors: -EBADMSG (corrupt, truncated,
 * structure), -EPROTONOSUPPORT (format or section version), -ENOENT (unknown section),
 * -EMSGSIZE (over a limit), -EINVAL (identity mismatch, checked field), or a hook's error.
 */
CPR_API int cpr_savevm_load(cpr_ctx *ctx, cpr_stream *s, cpr_error **errp);

/* As cpr_savevm_save() / cpr_savevm_load() on an fd (file, pipe, socket); the fd stays open. */
CPR_API int cpr_savevm_save_to_fd(cpr_ctx *ctx, int fd, cpr_error **errp);
CPR_API int cpr_savevm_load_from_fd(cpr_ctx *ctx, int fd, cpr_error **errp);

CPR_END_DECLS

#endif /* CPR_SAVEVM_H */
