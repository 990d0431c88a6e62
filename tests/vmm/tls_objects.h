/* SPDX-License-Identifier: MIT */
/* TLS objects of cpr-vmm (-object tls-creds-x509 and authz-simple, QMP object-add/object-del). */
#ifndef VMM_TLS_OBJECTS_H
#define VMM_TLS_OBJECTS_H

#include <json-c/json.h>

#include "cmdline.h"
#include "monitor.h"

/* Loads the credentials and registers them on the context under their id; -1 with *err. */
int vmm_tls_obj_add(vmm *v, const vmm_tls_obj *o, char **err);
/* Every -object tls-creds-x509 and authz-simple of the command line, before -global and -incoming. */
int vmm_tls_objs_create(vmm *v, char **err);
/* QMP object-add {"qom-type":"tls-creds-x509","id":...,"dir":...,"endpoint":...,
 * "verify-peer":bool} or {"qom-type":"authz-simple","id":...,"identity":...}, and object-del
 * {"id":...}. */
int vmm_cmd_object_add(vmm *v, json_object *args, json_object **ret, mon_error *err);
int vmm_cmd_object_del(vmm *v, json_object *args, json_object **ret, mon_error *err);

#endif
