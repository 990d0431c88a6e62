/* SPDX-License-Identifier: MIT */
/* QMP over a UNIX socket: JSON commands in, responses and events out, several clients at once. */
#ifndef VMM_QMP_H
#define VMM_QMP_H

#include <json-c/json.h>

#include "vmm.h"

/* Listens on path (an old socket file there is replaced). Returns NULL with *err on failure. */
qmp_server *qmp_server_new(vmm *v, const char *path, char **err);
void qmp_server_free(qmp_server *s);

/* Sends {"event": name, "data": data, "timestamp": ...} to negotiated clients; borrows data. */
void qmp_server_event(qmp_server *s, const char *name, json_object *data);
/* The same, stamped with `when` (g_get_real_time() microseconds) instead of now. */
void qmp_server_event_at(qmp_server *s, const char *name, json_object *data, int64_t when);

#endif
