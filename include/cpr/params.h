/* SPDX-License-Identifier: MIT */
/*
 * Migration parameters and capabilities, addressed by their QMP names so that a VMM's
 * monitor can pass user input straight through (migrate-set-parameters,
 * migrate_set_capability).
 *
 * Parameters:
 *   mode               cpr_mode name, default "normal"
 *   downtime-limit     milliseconds, default 300
 *   max-bandwidth      bytes per second, 0 = unlimited (default)
 *   cpr-exec-command   the command line cpr-exec runs, words separated by spaces
 *   cpr-transfer-connect-timeout  (1.2) milliseconds the outgoing side of cpr-transfer
 *                      waits for the new process to listen on the cpr channel (no socket
 *                      file yet, or a stale one), retrying while the guest runs; 0 = one
 *                      attempt; default 10000, at most 86400000. On timeout the job fails
 *                      naming this parameter, and the guest runs on.
 *   cpr-transfer-accept-timeout   (1.2) milliseconds cpr_incoming_cpr_load() waits for the old
 *                      process to connect to the cpr channel and send its state; 0 = forever
 *                      (the default); at most 86400000. Set it before that call.
 *   max-postcopy-bandwidth  (1.2) bytes per second the source sends after the switch to
 *                      postcopy (its page server), 0 = unlimited (the default)
 *   tls-creds          (1.2) the id of TLS credentials (cpr_tls_creds_add()), "" = none (the
 *                      default): every channel of a socket migration (main, multifd) is TLS,
 *                      on both sides
 *   tls-hostname       (1.2) the name the destination's certificate must carry, on the source;
 *                      "" (the default) = the host of the migration URI
 *   multifd-channels   (1.2) threads that write (save) and read (load) RAM pages in parallel,
 *                      1 to 255, default 2: the file's writers with mapped-ram, the extra
 *                      connections with the capability multifd (set it on the source)
 *   multifd-compression  (1.2) none (the default) or zstd: multifd packets compressed by the
 *                      source; the destination reads what the stream says
 *   multifd-zstd-level (1.2) 1 to 20, default 1
 *   direct-io          (1.2) true/false (on/off): mapped-ram regions written and read with
 *                      O_DIRECT; a file system that refuses it fails the job naming the file
 *   memory-restore-mode  (1.2) copy (the default), ondemand or mapped, on the destination:
 *                      with ondemand a mapped-ram file's guest runs before its RAM is read,
 *                      pages filled on first touch; with mapped its RAM becomes a private
 *                      copy-on-write mapping of the file, verified once, before the guest
 *                      runs, and never again: the file must stay read-only while it is
 *                      mapped, as Firecracker's snapshot files, and the VMM gives its
 *                      madvise(2) advice again in its prepare hook
 *                      (include/cpr/lazy_restore.h)
 * Capabilities:
 *   x-ignore-shared    do not write RAM blocks that are shared (memfd or share=on), default off
 *   pause-before-switchover  after stopping the guest, wait in status pre-switchover until
 *                      cpr_migrate_continue() (QMP migrate-continue), default off
 *   multifd            (1.2) RAM pages go over multifd-channels extra connections of a unix: or
 *                      tcp: migration, one thread each per side; both sides set it
 *   mapped-ram         (1.2) a save to a file keeps each RAM block at fixed offsets of the
 *                      file, written in place by multifd-channels threads (docs/format.md
 *                      section 7); other channels are refused. Loading needs no capability.
 *   postcopy-ram       (1.2) allows cpr_migrate_start_postcopy(): the destination runs the
 *                      guest and fetches missing pages on demand (userfaultfd); both sides
 *                      set it (docs/migration.md, "Postcopy")
 *
 * Unknown names are errors (-ENOENT) that name the parameter. Values are validated (-EINVAL
 * naming the parameter and value). Setting a parameter while a migration is under way fails
 * with -EBUSY.
 *
 * Thread safety: any thread; the context serialises access.
 */
#ifndef CPR_PARAMS_H
#define CPR_PARAMS_H

#include <cpr/common.h>
#include <cpr/mode.h>

CPR_BEGIN_DECLS

/* Sets a parameter from its string form ("cpr-reboot", "300", "0", "/usr/bin/vmm -incoming ..."). */
CPR_API int cpr_param_set(cpr_ctx *ctx, const char *name, const char *value, cpr_error **errp);

/* Reads a parameter as a string; on success *out is a new string to release with cpr_free(). */
CPR_API int cpr_param_get(cpr_ctx *ctx, const char *name, char **out, cpr_error **errp);

/*
 * Calls fn for every parameter name known to this library, in a stable order, until fn
 * returns non-zero (which is then returned). Lets a monitor print query-migrate-parameters.
 */
typedef int (*cpr_name_fn)(const char *name, void *opaque);
CPR_API int cpr_param_foreach(cpr_name_fn fn, void *opaque);

/* Sets a capability on (non-zero) or off. */
CPR_API int cpr_cap_set(cpr_ctx *ctx, const char *name, int on, cpr_error **errp);

/* Returns 1 or 0 for a known capability, or a negative errno (-ENOENT for an unknown name). */
CPR_API int cpr_cap_get(cpr_ctx *ctx, const char *name, cpr_error **errp);

/* Calls fn for every capability name, as cpr_param_foreach() does. */
CPR_API int cpr_cap_foreach(cpr_name_fn fn, void *opaque);

/* Typed shorthands for the `mode` parameter. cpr_get_mode returns CPR_MODE_NORMAL for NULL. */
CPR_API int cpr_set_mode(cpr_ctx *ctx, cpr_mode mode, cpr_error **errp);
CPR_API cpr_mode cpr_get_mode(cpr_ctx *ctx);

CPR_END_DECLS

#endif /* CPR_PARAMS_H */
