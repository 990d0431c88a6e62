/* SPDX-License-Identifier: MIT */
/* Migration statistics: the query struct and its rendering in QMP's query-migrate shape. */
#include <errno.h>
#include <string.h>

#include <glib.h>
#include <json-c/json.h>

#include <cpr/blocker.h>
#include <cpr/params.h>

#include "core/error.h"
#include "core/sized.h"
#include "migration/migrate.h"

CPR_API int cpr_migrate_query(cpr_ctx *ctx, cpr_migration_info *info, cpr_error **errp)
{
    if (!ctx || !info)
        return cpr_error_set(errp, -EINVAL, "cpr_migrate_query: %s is NULL", ctx ? "info" : "ctx");
    cpr_migration_info full;
    cpr_mig_info_snapshot(ctx, &full);
    /* An older caller's struct is shorter: fill what it has, keep its size. */
    return cpr_sized_write(info, &full, sizeof(full), sizeof(info->size), "cpr_migrate_query: cpr_migration_info",
                           errp);
}

static void put_int(json_object *o, const char *key, int64_t v)
{
    json_object_object_add(o, key, json_object_new_int64(v));
}

static json_object *ram_json(const cpr_migration_info *i)
{
    json_object *ram = json_object_new_object();
    put_int(ram, "transferred", (int64_t)i->transferred);
    put_int(ram, "remaining", (int64_t)i->remaining);
    put_int(ram, "total", (int64_t)i->total);
    put_int(ram, "duplicate", (int64_t)i->duplicate);
    put_int(ram, "normal", (int64_t)i->normal);
    put_int(ram, "normal-bytes", (int64_t)i->normal_bytes);
    put_int(ram, "page-size", (int64_t)i->page_size);
    /* QMP reports bandwidth as megabits per second, a float. */
    json_object_object_add(ram, "mbps", json_object_new_double((double)i->bandwidth * 8.0 / 1e6));
    put_int(ram, "dirty-pages-rate", (int64_t)i->dirty_pages_rate);
    put_int(ram, "dirty-sync-count", (int64_t)i->dirty_sync_count);
    put_int(ram, "precopy-bytes", (int64_t)i->precopy_bytes);
    put_int(ram, "downtime-bytes", (int64_t)i->downtime_bytes);
    put_int(ram, "postcopy-requests", (int64_t)i->postcopy_requests);
    if (i->postcopy_fault_pages || i->postcopy_pushed_pages) {
        /* Not QEMU's: how the destination's missing pages came, on a fault or in order. */
        put_int(ram, "x-postcopy-fault-pages", (int64_t)i->postcopy_fault_pages);
        put_int(ram, "x-postcopy-pushed-pages", (int64_t)i->postcopy_pushed_pages);
    }
    return ram;
}

/* The destination's blocktime, at the top level as QEMU has it: postcopy-blocktime in ms,
 * rounded up (a stall is never reported as none); not QEMU's: the longest stall, in us. */
static void put_blocktime(json_object *o, const cpr_migration_info *i)
{
    if (!i->incoming || !(i->postcopy_fault_pages || i->postcopy_pushed_pages))
        return;
    put_int(o, "postcopy-blocktime", (int64_t)((i->postcopy_blocktime_us + 999) / 1000));
    put_int(o, "x-postcopy-worst-stall-us", (int64_t)i->postcopy_max_stall_us);
}

static int add_reason(const char *reason, uint32_t modes, void *opaque)
{
    json_object_array_add(opaque, json_object_new_string(reason));
    return 0;
}

CPR_API int cpr_migrate_query_json(cpr_ctx *ctx, char **out, cpr_error **errp)
{
    if (!ctx || !out)
        return cpr_error_set(errp, -EINVAL, "cpr_migrate_query_json: %s is NULL", ctx ? "out" : "ctx");
    cpr_migration_info i;
    cpr_mig_info_snapshot(ctx, &i);
    json_object *o = json_object_new_object();
    int st = i.status;
    if (st != CPR_MIGRATION_NONE) {
        json_object_object_add(o, "status", json_object_new_string(cpr_migration_status_name(st)));
        if (st != CPR_MIGRATION_FAILED && st != CPR_MIGRATION_CANCELLED)
            put_int(o, "total-time", i.total_time_ms);
        if (i.setup_time_ms >= 0)
            put_int(o, "setup-time", i.setup_time_ms);
    }
    switch (st) {
    case CPR_MIGRATION_ACTIVE:
    case CPR_MIGRATION_PRE_SWITCHOVER:
    case CPR_MIGRATION_DEVICE:
    case CPR_MIGRATION_CANCELLING:
    case CPR_MIGRATION_POSTCOPY_ACTIVE:
    case CPR_MIGRATION_POSTCOPY_PAUSED:
    case CPR_MIGRATION_POSTCOPY_RECOVER:
        if (i.expected_downtime_ms >= 0)
            put_int(o, "expected-downtime", i.expected_downtime_ms);
        json_object_object_add(o, "ram", ram_json(&i));
        put_blocktime(o, &i);
        if (st == CPR_MIGRATION_POSTCOPY_PAUSED) { /* why it paused */
            g_autofree char *desc = cpr_migrate_error_desc(ctx);
            if (desc)
                json_object_object_add(o, "error-desc", json_object_new_string(desc));
        }
        break;
    case CPR_MIGRATION_COMPLETED:
        if (i.downtime_ms >= 0)
            put_int(o, "downtime", i.downtime_ms);
        json_object_object_add(o, "ram", ram_json(&i));
        put_blocktime(o, &i);
        break;
    case CPR_MIGRATION_FAILED: {
        g_autofree char *desc = cpr_migrate_error_desc(ctx);
        if (desc)
            json_object_object_add(o, "error-desc", json_object_new_string(desc));
        break;
    }
    default:
        break;
    }
    json_object *reasons = json_object_new_array();
    cpr_blocker_foreach(ctx, cpr_get_mode(ctx), add_reason, reasons);
    if (json_object_array_length(reasons) > 0)
        json_object_object_add(o, "blocked-reasons", reasons);
    else
        json_object_put(reasons);
    /* Paths in error-desc and blocked-reasons as they are: "/var", not "\/var". */
    *out = g_strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                                          JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    return 0;
}
