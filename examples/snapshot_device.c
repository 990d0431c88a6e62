/* SPDX-License-Identifier: MIT */
/*
 * Describe a device once, snapshot it to a file, load it in another process.
 *
 *   snapshot_device save file:/tmp/dev.state     writes the state
 *   snapshot_device load file:/tmp/dev.state     reads it back and prints it
 *
 * Uses only the public API: a description (cpr/vmstate.h), a section on a context
 * (cpr/savevm.h) and a transport from a URI (cpr/transport.h). `cpr-dump FILE` prints the
 * same file by field name.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cpr/cpr.h>

/* The device: a UART with a receive FIFO, a name (added in version 2) and an interrupt line
 * saved in a subsection only while it is raised. */
struct uart {
    uint8_t lcr;
    uint8_t ier;
    uint32_t fifo_len;
    uint8_t fifo[16];
    char *name;
    uint32_t irq_level;
};

static int irq_raised(const void *obj)
{
    return ((const struct uart *)obj)->irq_level != 0;
}

static int uart_post_load(void *obj, uint32_t version, cpr_error **errp)
{
    struct uart *u = obj;
    if (version < 2 && !u->name)
        u->name = strdup("ttyS0"); /* a version-1 stream has no name: use the old default */
    return 0;
}

static int check(int ret, cpr_error *err, const char *what)
{
    if (ret < 0) {
        fprintf(stderr, "%s: %s\n", what, cpr_error_message(err));
        cpr_error_free(err);
        exit(1);
    }
    return ret;
}

static cpr_desc *uart_description(void)
{
    cpr_desc *d, *irq;
    cpr_error *err = NULL;
    check(cpr_desc_new("uart", 2, 1, sizeof(struct uart), &d, &err), err, "uart");
    check(cpr_desc_add(d, "lcr", CPR_TYPE_U8, CPR_MEMBER(struct uart, lcr), &err), err, "lcr");
    check(cpr_desc_add(d, "ier", CPR_TYPE_U8, CPR_MEMBER(struct uart, ier), &err), err, "ier");
    check(cpr_desc_add(d, "fifo_len", CPR_TYPE_U32, CPR_MEMBER(struct uart, fifo_len), &err), err, "fifo_len");
    check(cpr_desc_add_varray(d, "fifo", CPR_TYPE_BYTES, CPR_MEMBER(struct uart, fifo), "fifo_len", &err), err, "fifo");
    check(cpr_desc_add(d, "name", CPR_TYPE_STRING, CPR_MEMBER(struct uart, name), &err), err, "name");
    check(cpr_desc_field_since(d, "name", 2, &err), err, "name since");
    check(cpr_desc_set_hooks(d, NULL, NULL, NULL, uart_post_load, &err), err, "hooks");
    check(cpr_desc_new("uart/irq", 1, 1, sizeof(struct uart), &irq, &err), err, "uart/irq");
    check(cpr_desc_add(irq, "level", CPR_TYPE_U32, CPR_MEMBER(struct uart, irq_level), &err), err, "level");
    check(cpr_desc_add_subsection(d, irq, irq_raised, 0, &err), err, "subsection");
    cpr_desc_unref(irq);
    return d;
}

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[1], "save") && strcmp(argv[1], "load"))) {
        fprintf(stderr, "usage: snapshot_device save|load URI\n");
        return 2;
    }
    cpr_error *err = NULL;
    cpr_ctx *ctx;
    cpr_addr *addr;
    cpr_stream *s;
    struct uart uart = { 0 };
    check(cpr_ctx_new(&ctx, 0, &err), err, "context");
    cpr_desc *d = uart_description();
    check(cpr_savevm_register(ctx, NULL, 0, d, &uart, 0, NULL, &err), err, "register");
    cpr_desc_unref(d);
    check(cpr_savevm_set_machine(ctx, "example-board", &err), err, "machine");
    check(cpr_addr_parse_uri(argv[2], &addr, &err), err, argv[2]);

    if (strcmp(argv[1], "save") == 0) {
        uart = (struct uart){ .lcr = 0x03, .ier = 0x01, .fifo_len = 5, .fifo = "hello", .irq_level = 1 };
        uart.name = strdup("ttyS1");
        check(cpr_transport_open_output(addr, &s, &err), err, "open");
        check(cpr_savevm_save(ctx, s, &err), err, "save");
        check(cpr_stream_close(s, &err), err, "close");
        printf("saved uart %s: lcr=0x%02x fifo=%u bytes irq=%u\n", uart.name, uart.lcr, uart.fifo_len, uart.irq_level);
    } else {
        cpr_listener *l;
        check(cpr_listener_new(addr, 0, &l, &err), err, "listen");
        check(cpr_listener_accept(l, -1, &s, &err), err, "open");
        check(cpr_savevm_load(ctx, s, &err), err, "load");
        cpr_stream_free(s);
        cpr_listener_free(l);
        printf("loaded uart %s: lcr=0x%02x fifo=\"%.*s\" irq=%u\n", uart.name, uart.lcr, (int)uart.fifo_len,
               (const char *)uart.fifo, uart.irq_level);
    }
    free(uart.name);
    cpr_addr_free(addr);
    cpr_ctx_free(ctx);
    return 0;
}
