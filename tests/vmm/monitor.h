/* SPDX-License-Identifier: MIT */
/*
 * The monitor command table, shared by QMP and HMP so that each command's logic exists once.
 *
 * A command takes its arguments as a JSON object (what QMP sends; HMP builds the same object
 * from the words typed) and returns a JSON result or a QMP error (class + description). HMP
 * then prints the result in the human format of the command.
 */
#ifndef VMM_MONITOR_H
#define VMM_MONITOR_H

#include <glib.h>
#include <json-c/json.h>

#include <cpr/error.h>

typedef struct vmm vmm;

/* A QMP error: class as QMP spells it ("GenericError", "CommandNotFound", ...) and a message. */
typedef struct mon_error {
    const char *cls;
    char *desc;
} mon_error;

/* Fills *err (when its desc is still NULL) and returns -1, for `return mon_fail(...)`. */
int mon_fail(mon_error *err, const char *cls, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void mon_error_clear(mon_error *err);
/* Turns a libcpr error into a QMP GenericError (freeing it) and returns -1. */
int mon_fail_cpr(mon_error *err, cpr_error *cerr);

/*
 * A command handler. args is never NULL (an empty object when none were given). On success it
 * returns 0 and may set *ret (a new reference; NULL means `{}`); on failure it returns -1 and
 * fills err.
 */
typedef int (*mon_cmd_fn)(vmm *v, json_object *args, json_object **ret, mon_error *err);

/*
 * HMP: turns the words after the command name into the QMP argument object. Returns NULL with
 * err filled for bad input. *detach is set by `migrate -d`.
 */
typedef json_object *(*hmp_args_fn)(char **words, int *detach, mon_error *err);

/* HMP: prints a command's result for a person. */
typedef void (*hmp_print_fn)(json_object *ret, GString *out);

/* What HMP does after a command that started something asynchronous. */
typedef enum mon_wait {
    MON_WAIT_NONE,
    MON_WAIT_MIGRATION, /* until the outgoing migration ends, unless -d */
    MON_WAIT_INCOMING,  /* until the incoming migration has loaded (or failed) */
} mon_wait;

typedef struct mon_cmd {
    const char *qmp;        /* QMP name; NULL for HMP-only commands */
    const char *hmp;        /* HMP name ("info status"); NULL for QMP-only commands */
    const char *hmp_usage;  /* for help: "migrate [-d] uri" */
    const char *help;
    mon_cmd_fn fn;
    hmp_args_fn hmp_args;   /* NULL: the command takes no HMP arguments */
    hmp_print_fn hmp_print; /* NULL: print nothing on success */
    mon_wait hmp_wait;
} mon_cmd;

/* The table, ending with a zeroed entry. */
extern const mon_cmd mon_commands[];

const mon_cmd *mon_find_qmp(const char *name);
/* Finds the HMP command whose name is a prefix of words (one word, or "info X"); *used is how
 * many words the name took. */
const mon_cmd *mon_find_hmp(char **words, int *used);

/* Runs a command with the table's rules (args NULL means none). */
int mon_dispatch(vmm *v, const mon_cmd *cmd, json_object *args, json_object **ret, mon_error *err);

#endif
