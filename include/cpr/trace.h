/* SPDX-License-Identifier: MIT */
/*
 * The pause breakdown: timestamped steps of a migration, on one clock for every process.
 *
 * The library records each step it takes (the stop requested, the guest stopped, the state
 * written, the exec, the cpr state adopted, the stream loaded, the commit, the start...); a
 * VMM adds its own (its main(), its VM and vCPUs created, its vCPUs running again). Times are
 * CLOCK_MONOTONIC in nanoseconds: one clock for the whole host, shared by every process on it
 * and never stepped by settimeofday or NTP, so the old and the new process's steps line up
 * (CLOCK_REALTIME would also be shared, but can jump between two steps). docs/migration.md,
 * "Pause breakdown", lists the library's steps and how the two sides are joined: each process
 * reports its own; cpr-exec's new image also reports the old image's, carried across the exec.
 *
 * The trace is a ring on the context: when it is full, each new step overwrites the oldest and
 * the count of dropped steps grows. Every call here may be made from any thread, concurrently.
 * Since 1.2.
 */
#ifndef CPR_TRACE_H
#define CPR_TRACE_H

#include <stddef.h>
#include <stdint.h>

#include <cpr/common.h>
#include <cpr/error.h>

CPR_BEGIN_DECLS

/* Steps a context keeps unless cpr_trace_reset() says otherwise: several migrations' worth. */
#define CPR_TRACE_DEFAULT_CAPACITY 256
/* The longest step name kept; longer names are refused. */
#define CPR_TRACE_NAME_MAX 47

/*
 * One step, size-first (docs/abi.md): set size (cpr_trace_step_init()) before
 * cpr_trace_get(), which fills the members that fit in it. Members are only ever appended.
 */
typedef struct cpr_trace_step {
    uint32_t size;
    uint32_t pid;                        /* the process that recorded it */
    uint64_t t_ns;                       /* CLOCK_MONOTONIC, nanoseconds */
    char name[CPR_TRACE_NAME_MAX + 1];   /* NUL-terminated */
} cpr_trace_step;

/* Sets step->size to sizeof(cpr_trace_step), the rest to 0. NULL is ignored. Any thread. */
CPR_API void cpr_trace_step_init(cpr_trace_step *step);

/* The trace's clock now: CLOCK_MONOTONIC in nanoseconds. For a step taken before a context
 * exists (a VMM's main()), to record later with cpr_trace_mark_at(). Any thread. */
CPR_API uint64_t cpr_trace_now(void);

/*
 * Appends the step `name` at the clock's current time (cpr_trace_mark) or at t_ns, a time read
 * from cpr_trace_now() earlier (cpr_trace_mark_at; a step from before the context existed).
 * The name is copied; it is 1..CPR_TRACE_NAME_MAX characters of [A-Za-z0-9._:-]. Steps are
 * kept in the order of the calls (cpr_trace_mark_at may therefore break time order).
 * Errors: -EINVAL for a NULL ctx or a bad name (nothing is recorded). Any thread.
 */
CPR_API int cpr_trace_mark(cpr_ctx *ctx, const char *name);
CPR_API int cpr_trace_mark_at(cpr_ctx *ctx, const char *name, uint64_t t_ns);

/*
 * How many steps the trace holds now (at most its capacity); *dropped, when not NULL, gets
 * how many were overwritten since the last reset. Returns -EINVAL for a NULL ctx. Any thread.
 */
CPR_API int cpr_trace_count(cpr_ctx *ctx, uint64_t *dropped);

/*
 * Copies step `index` (0 = the oldest kept) into *out, whose size must be set; members past
 * out->size are left alone. Errors: -EINVAL (NULL ctx or out, size too small for pid),
 * -ERANGE for an index at or past the count. Any thread; a step appended meanwhile may
 * overwrite what the index meant (read the whole trace at once with cpr_trace_json()).
 */
CPR_API int cpr_trace_get(cpr_ctx *ctx, size_t index, cpr_trace_step *out, cpr_error **errp);

/*
 * The whole trace, consistent at one instant, as a new JSON string for cpr_free():
 * {"clock": "monotonic", "capacity": N, "dropped": D,
 *  "steps": [{"step": NAME, "t-ns": T, "pid": P}, ...]}, oldest first.
 * Errors: -EINVAL for NULL ctx or out. Any thread.
 */
CPR_API int cpr_trace_json(cpr_ctx *ctx, char **out, cpr_error **errp);

/*
 * Empties the trace and sets its capacity (0: CPR_TRACE_DEFAULT_CAPACITY; at most 65536).
 * Errors: -EINVAL (NULL ctx, capacity too large). Any thread.
 */
CPR_API int cpr_trace_reset(cpr_ctx *ctx, uint32_t capacity, cpr_error **errp);

CPR_END_DECLS

#endif /* CPR_TRACE_H */
