/* SPDX-License-Identifier: MIT */
/* TLS objects: libcpr's cpr/tls.h behind QEMU's tls-creds-x509 and authz-simple objects. */
#include <string.h>

#include <cpr/cpr.h>

#include "tls_objects.h"
#include "vmm.h"

int vmm_tls_obj_add(vmm *v, const vmm_tls_obj *o, char **err)
{
    cpr_tls_creds *creds = NULL;
    cpr_error *cerr = NULL;
    g_autofree char *what = g_strdup_printf("%s '%s'", o->authz ? "authz-simple" : "tls-creds-x509", o->id);
    if (o->authz)
        return cpr_tls_authz_add(v->ctx, o->id, o->identity, &cerr) < 0 ? vmm_fail_cpr(err, what, cerr) : 0;
    int r = cpr_tls_creds_new_x509(o->dir, o->server ? CPR_TLS_ENDPOINT_SERVER : CPR_TLS_ENDPOINT_CLIENT,
                                   o->verify_peer ? CPR_TLS_VERIFY_PEER : 0, &creds, &cerr);
    if (r == 0 && (r = cpr_tls_creds_add(v->ctx, o->id, creds, &cerr)) < 0)
        cpr_tls_creds_free(creds);
    return r < 0 ? vmm_fail_cpr(err, what, cerr) : 0;
}

int vmm_tls_objs_create(vmm *v, char **err)
{
    GPtrArray *objs = v->cfg->tls_objs;
    for (guint i = 0; objs && i < objs->len; i++)
        if (vmm_tls_obj_add(v, objs->pdata[i], err) < 0)
            return -1;
    return 0;
}

int vmm_cmd_object_add(vmm *v, json_object *args, json_object **ret, mon_error *err)
{
    json_object *type = NULL;
    vmm_tls_obj *o = json_object_object_get_ex(args, "qom-type", &type) && json_object_is_type(type, json_type_string)
                         ? vmm_tls_obj_new(json_object_get_string(type)) : NULL;
    if (!o)
        return mon_fail(err, "GenericError", "object-add: only qom-types tls-creds-x509 and authz-simple are "
                        "supported");
    char *e = NULL;
    int r = 0;
    json_object_object_foreach(args, key, val) {
        if (r < 0 || !strcmp(key, "qom-type"))
            continue;
        if (json_object_is_type(val, json_type_boolean))
            r = vmm_tls_obj_set(o, key, json_object_get_boolean(val) ? "on" : "off", &e);
        else if (json_object_is_type(val, json_type_string))
            r = vmm_tls_obj_set(o, key, json_object_get_string(val), &e);
        else { /* null, a number, an object: QEMU's words */
            e = g_strdup_printf("Invalid parameter type for '%s', expected: string", key);
            r = -1;
        }
    }
    if (r == 0)
        r = vmm_tls_obj_check(o, &e);
    if (r == 0)
        r = vmm_tls_obj_add(v, o, &e);
    vmm_tls_obj_free(o);
    if (r < 0) {
        mon_fail(err, "GenericError", "%s", e);
        g_free(e);
    }
    return r;
}

int vmm_cmd_object_del(vmm *v, json_object *args, json_object **ret, mon_error *err)
{
    json_object *id = NULL;
    if (!json_object_object_get_ex(args, "id", &id))
        return mon_fail(err, "GenericError", "Parameter 'id' is missing");
    const char *name = json_object_get_string(id);
    if (cpr_tls_creds_del(v->ctx, name, NULL) == 0 || cpr_tls_authz_del(v->ctx, name, NULL) == 0)
        return 0;
    return mon_fail(err, "GenericError", "object-del: no object with id '%s' (tls-creds-x509 or authz-simple)",
                    name);
}
