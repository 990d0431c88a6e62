/* SPDX-License-Identifier: MIT */
/* QMP server: greeting, capabilities negotiation, then commands from the shared table. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <glib-unix.h>

#include "qmp.h"
#include "qmp_parse.h"

typedef struct qmp_client {
    qmp_server *srv;
    int fd;
    guint watch;
    int negotiated;
    qmp_reader *reader;
} qmp_client;

struct qmp_server {
    vmm *v;
    char *path;
    int fd;
    guint watch;
    GList *clients; /* qmp_client * */
};

static void send_json(qmp_client *c, json_object *o)
{
    const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    /* A client that cannot take it is dropped by its read side later. */
    vmm_write_all(c->fd, s, strlen(s));
    vmm_write_all(c->fd, "\r\n", 2);
}

static void client_free(qmp_client *c)
{
    if (c->watch)
        g_source_remove(c->watch);
    close(c->fd);
    qmp_reader_free(c->reader);
    c->srv->clients = g_list_remove(c->srv->clients, c);
    g_free(c);
}

static json_object *error_obj(const char *cls, const char *desc)
{
    json_object *e = json_object_new_object();
    json_object_object_add(e, "class", json_object_new_string(cls));
    json_object_object_add(e, "desc", json_object_new_string(desc));
    json_object *r = json_object_new_object();
    json_object_object_add(r, "error", e);
    return r;
}

static void handle_request(json_object *value, void *opaque)
{
    qmp_client *c = opaque;
    json_object *resp = NULL;
    qmp_request req;
    const char *desc;
    if (qmp_request_parse(value, &req, &desc) < 0) {
        resp = error_obj("GenericError", desc);
        goto send;
    }
    const char *name = req.name;
    json_object *args = req.args;
    if (!c->negotiated) {
        if (strcmp(name, "qmp_capabilities")) {
            resp = error_obj("CommandNotFound",
                             "Expecting capabilities negotiation with 'qmp_capabilities'");
        } else {
            c->negotiated = 1;
            resp = json_object_new_object();
            json_object_object_add(resp, "return", json_object_new_object());
        }
        goto send;
    }
    if (!strcmp(name, "qmp_capabilities")) {
        resp = error_obj("CommandNotFound", "Capabilities negotiation is already complete, command ignored");
        goto send;
    }
    const mon_cmd *cmd = mon_find_qmp(name);
    if (!cmd) {
        g_autofree char *d = g_strdup_printf("The command %s has not been found", name);
        resp = error_obj("CommandNotFound", d);
        goto send;
    }
    json_object *ret = NULL;
    mon_error err = {0};
    if (mon_dispatch(c->srv->v, cmd, args, &ret, &err) < 0) {
        resp = error_obj(err.cls ? err.cls : "GenericError", err.desc);
        mon_error_clear(&err);
    } else {
        resp = json_object_new_object();
        json_object_object_add(resp, "return", ret ? ret : json_object_new_object());
    }
send:
    if (req.id)
        json_object_object_add(resp, "id", json_object_get(req.id));
    send_json(c, resp);
    json_object_put(resp);
}

static gboolean client_readable(gint fd, GIOCondition cond, gpointer opaque)
{
    qmp_client *c = opaque;
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return G_SOURCE_CONTINUE;
    if (n <= 0) {
        c->watch = 0;
        client_free(c);
        return G_SOURCE_REMOVE;
    }
    /* The reader may hold several requests or half of one. A command may quit the VMM, but
     * the client stays until its read side sees the end: it outlives handle_request. */
    if (qmp_reader_feed(c->reader, buf, (size_t)n, handle_request, c) < 0) {
        json_object *resp = error_obj("GenericError", "JSON parse error");
        send_json(c, resp);
        json_object_put(resp);
    }
    return G_SOURCE_CONTINUE;
}

static gboolean server_accept(gint fd, GIOCondition cond, gpointer opaque)
{
    qmp_server *s = opaque;
    int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
    if (cfd < 0)
        return G_SOURCE_CONTINUE;
    qmp_client *c = g_new0(qmp_client, 1);
    c->srv = s;
    c->fd = cfd;
    c->reader = qmp_reader_new();
    s->clients = g_list_append(s->clients, c);
    json_object *greet = json_tokener_parse(
        "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 0, \"major\": 1},"
        " \"package\": \"cpr-vmm\"}, \"capabilities\": []}}");
    send_json(c, greet);
    json_object_put(greet);
    c->watch = g_unix_fd_add(cfd, G_IO_IN | G_IO_HUP | G_IO_ERR, client_readable, c);
    return G_SOURCE_CONTINUE;
}

qmp_server *qmp_server_new(vmm *v, const char *path, char **err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        *err = g_strdup_printf("-qmp unix:%s: path too long", path);
        return NULL;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = g_strdup_printf("-qmp unix:%s: socket: %s", path, g_strerror(errno));
        return NULL;
    }
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4) < 0) {
        *err = g_strdup_printf("-qmp unix:%s: %s", path, g_strerror(errno));
        close(fd);
        return NULL;
    }
    qmp_server *s = g_new0(qmp_server, 1);
    s->v = v;
    s->fd = fd;
    s->path = g_strdup(path);
    s->watch = g_unix_fd_add(fd, G_IO_IN, server_accept, s);
    return s;
}

void qmp_server_free(qmp_server *s)
{
    if (!s)
        return;
    while (s->clients)
        client_free(s->clients->data);
    g_source_remove(s->watch);
    close(s->fd);
    unlink(s->path);
    g_free(s->path);
    g_free(s);
}

void qmp_server_event(qmp_server *s, const char *name, json_object *data)
{
    qmp_server_event_at(s, name, data, g_get_real_time());
}

void qmp_server_event_at(qmp_server *s, const char *name, json_object *data, int64_t now)
{
    if (!s)
        return;
    json_object *ts = json_object_new_object();
    json_object_object_add(ts, "seconds", json_object_new_int64(now / G_USEC_PER_SEC));
    json_object_object_add(ts, "microseconds", json_object_new_int64(now % G_USEC_PER_SEC));
    json_object *ev = json_object_new_object();
    json_object_object_add(ev, "event", json_object_new_string(name));
    json_object_object_add(ev, "data", data ? json_object_get(data) : json_object_new_object());
    json_object_object_add(ev, "timestamp", ts);
    for (GList *l = s->clients; l; l = l->next) {
        qmp_client *c = l->data;
        if (c->negotiated)
            send_json(c, ev);
    }
    json_object_put(ev);
}
