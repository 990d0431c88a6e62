/* SPDX-License-Identifier: MIT */
/* Private: the library's own trace steps (cpr/trace.h) and their trip across a cpr-exec. */
#ifndef CPR_CORE_TRACE_H
#define CPR_CORE_TRACE_H

#include <stdint.h>

#include <cpr/trace.h>

/* The environment variable that carries the old image's steps to the new one (cpr-exec). */
#define CPR_EXEC_TRACE_ENV "CPR_EXEC_TRACE"

/* A step of this process, now: the engine's one-line marks. Never fails the caller. */
#define cpr_trace_step(ctx, name) ((void)cpr_trace_mark((ctx), (name)))

int cpr_trace_name_ok(const char *name);
int cpr_trace_add(cpr_ctx *ctx, const char *name, uint64_t t_ns, uint32_t pid);
/* "name@t_ns,..." of the kept steps, oldest first, at most 64 KiB (the newest that fit: one
 * environment string carries it across an exec); a new string for g_free. */
char *cpr_trace_export(cpr_ctx *ctx);
/* Appends the steps of an export, as this process's (exec keeps the pid); -EINVAL when
 * malformed (the steps before the fault are kept). */
int cpr_trace_import(cpr_ctx *ctx, const char *text);

#endif
