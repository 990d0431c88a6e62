/* SPDX-License-Identifier: MIT */
/*
 * Migration blockers, per mode.
 *
 * A device or backend that cannot be migrated in some modes registers a blocker with a reason
 * a user can read ("local disk /var/lib/vm/disk.img is not shared") and the set of modes it
 * blocks. A disk on local storage, for example, blocks normal migration but not cpr-reboot,
 * where the file stays where it is (CPR_MODES_NORMAL_ONLY).
 *
 * Thread safety: every function here may be called from any thread.
 */
#ifndef CPR_BLOCKER_H
#define CPR_BLOCKER_H

#include <cpr/common.h>
#include <cpr/mode.h>

CPR_BEGIN_DECLS

typedef struct cpr_blocker cpr_blocker;

/*
 * Registers a blocker for the modes in `modes` (a mask of CPR_MODE_BIT(); CPR_MODES_ALL and
 * CPR_MODES_NORMAL_ONLY are shorthands). The reason is copied. On success *out is a handle
 * for cpr_blocker_del(); the context owns the blocker.
 * Errors:
 *   -EINVAL  NULL or empty reason, or an empty mode set;
 *   -EACCES  the context is only-migratable (cpr_ctx_set_only_migratable());
 *   -EBUSY   a migration is under way in a mode this blocker would block.
 * On error nothing is registered.
 */
CPR_API int cpr_blocker_add(cpr_ctx *ctx, uint32_t modes, const char *reason,
                            cpr_blocker **out, cpr_error **errp);

/* Removes and frees a blocker. NULL is accepted; the handle is invalid afterwards. */
CPR_API void cpr_blocker_del(cpr_ctx *ctx, cpr_blocker *blocker);

/* The blocker's reason (owned by the blocker) and its mode mask. */
CPR_API const char *cpr_blocker_reason(const cpr_blocker *blocker);
CPR_API uint32_t cpr_blocker_modes(const cpr_blocker *blocker);

/*
 * Checks whether anything blocks `mode`. Returns 0 when nothing does; otherwise -EPERM with
 * one error whose message lists every reason, in registration order, e.g.
 *   "migration in mode normal is blocked: local disk d0 is not shared; vfio device 0000:01:00.0"
 */
CPR_API int cpr_blockers_check(cpr_ctx *ctx, cpr_mode mode, cpr_error **errp);

/*
 * Calls fn(reason, modes, opaque) for every blocker that blocks `mode`, in registration order,
 * until fn returns non-zero (which is then returned). Returns 0 after the last.
 * The callback must not add or delete blockers.
 */
typedef int (*cpr_blocker_fn)(const char *reason, uint32_t modes, void *opaque);
CPR_API int cpr_blocker_foreach(cpr_ctx *ctx, cpr_mode mode, cpr_blocker_fn fn, void *opaque);

/* Number of blockers that block `mode`. */
CPR_API size_t cpr_blocker_count(cpr_ctx *ctx, cpr_mode mode);

CPR_END_DECLS

#endif /* CPR_BLOCKER_H */
