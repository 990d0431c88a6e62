/* SPDX-License-Identifier: MIT */
/* GnuTLS's entry points, resolved from the shared object on first use (gnutls_lib.h). */
#include <dlfcn.h>
#include <errno.h>

#include <glib.h>

#include "channel/gnutls_lib.h"

#ifdef CPR_HAVE_GNUTLS

/* GnuTLS's headers turn gnutls_free(p) into a call and an assignment: the variable itself is
 * looked up by name below. */
#undef gnutls_free

int cpr_gnutls_open(struct cpr_gnutls **out, cpr_error **errp)
{
    /* NODELETE: closing the last handle must not unload it (its destructors and threads). */
    void *dl = dlopen(CPR_GNUTLS_SONAME, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!dl)
        return cpr_error_set(errp, -ENOTSUP, "TLS: cannot load GnuTLS (%s): %s; install libgnutls30",
                             CPR_GNUTLS_SONAME, dlerror());
    struct cpr_gnutls *g = g_new0(struct cpr_gnutls, 1);
    g->dl = dl;
    const char *missing = NULL;
#define CPR_GNUTLS_RESOLVE(prefix, name)                                                             \
    if (!missing && !(*(void **)&g->CPR_GNUTLS_FIELD_##prefix(name) = dlsym(dl, #prefix "_" #name))) \
        missing = #prefix "_" #name;
    CPR_GNUTLS_FUNCS(CPR_GNUTLS_RESOLVE)
#undef CPR_GNUTLS_RESOLVE
    gnutls_free_function *free_var = missing ? NULL : dlsym(dl, "gnutls_free");
    if (!missing && !free_var)
        missing = "gnutls_free";
    if (missing) {
        cpr_gnutls_close(g);
        return cpr_error_set(errp, -ENOTSUP, "TLS: %s has no %s (GnuTLS older than 3.7?)", CPR_GNUTLS_SONAME,
                             missing);
    }
    g->free_ = *free_var;
    *out = g;
    return 0;
}

void cpr_gnutls_close(struct cpr_gnutls *g)
{
    if (!g)
        return;
    dlclose(g->dl);
    g_free(g);
}
#endif
