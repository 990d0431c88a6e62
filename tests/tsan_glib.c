/* SPDX-License-Identifier: MIT */
/*
 * ThreadSanitizer build only (tests/run-tsan): glib's GMutex, GRecMutex and GCond are built on
 * futexes, which TSan cannot see, so every access they protect would look like a race. These
 * wrappers, linked into the test programs, interpose the calls libcpr and the tests make and
 * tell TSan about the happens-before edges (release before unlock, acquire after lock).
 */
#include <dlfcn.h>

#include <glib.h>

void __tsan_acquire(void *addr);
void __tsan_release(void *addr);

/* The real function, looked up once; threads may race to it, so atomically. */
#define REAL(name) \
    static __typeof__(name) *cache_##name; \
    __typeof__(name) *real_##name = __atomic_load_n(&cache_##name, __ATOMIC_ACQUIRE); \
    if (!real_##name) { \
        real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name); \
        __atomic_store_n(&cache_##name, real_##name, __ATOMIC_RELEASE); \
    }

void g_mutex_lock(GMutex *m)
{
    REAL(g_mutex_lock);
    real_g_mutex_lock(m);
    __tsan_acquire(m);
}

gboolean g_mutex_trylock(GMutex *m)
{
    REAL(g_mutex_trylock);
    gboolean ok = real_g_mutex_trylock(m);
    if (ok)
        __tsan_acquire(m);
    return ok;
}

void g_mutex_unlock(GMutex *m)
{
    REAL(g_mutex_unlock);
    __tsan_release(m);
    real_g_mutex_unlock(m);
}

void g_rec_mutex_lock(GRecMutex *m)
{
    REAL(g_rec_mutex_lock);
    real_g_rec_mutex_lock(m);
    __tsan_acquire(m);
}

void g_rec_mutex_unlock(GRecMutex *m)
{
    REAL(g_rec_mutex_unlock);
    __tsan_release(m);
    real_g_rec_mutex_unlock(m);
}

void g_cond_wait(GCond *c, GMutex *m)
{
    REAL(g_cond_wait);
    __tsan_release(m);
    real_g_cond_wait(c, m);
    __tsan_acquire(m);
}

gboolean g_cond_wait_until(GCond *c, GMutex *m, gint64 end_time)
{
    REAL(g_cond_wait_until);
    __tsan_release(m);
    gboolean r = real_g_cond_wait_until(c, m, end_time);
    __tsan_acquire(m);
    return r;
}
