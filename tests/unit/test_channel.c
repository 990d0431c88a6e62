/* SPDX-License-Identifier: MIT */
/* URI and channel-list parsing, and the per-mode channel rules. */
#include <errno.h>

#include "testutil.h"

static cpr_addr *uri(const char *s)
{
    cpr_addr *a = NULL;
    cpr_error *err = NULL;
    int ret = cpr_addr_parse_uri(s, &a, &err);
    ck_assert_msg(ret == 0, "parsing '%s': %s", s, cpr_error_message(err));
    return a;
}

static cpr_channels *channels(const char *json)
{
    cpr_channels *l = NULL;
    cpr_error *err = NULL;
    int ret = cpr_channels_parse_json(json, &l, &err);
    ck_assert_msg(ret == 0, "parsing %s: %s", json, cpr_error_message(err));
    return l;
}

START_TEST(test_uri_file_with_offset)
{
    cpr_addr *a = uri("file:/tmp/vm.state,offset=4096");
    ck_assert_int_eq(cpr_addr_transport(a), CPR_TRANSPORT_FILE);
    ck_assert_str_eq(cpr_addr_path(a), "/tmp/vm.state");
    ck_assert_uint_eq(cpr_addr_offset(a), 4096);
    char *s = cpr_addr_to_uri(a);
    ck_assert_str_eq(s, "file:/tmp/vm.state,offset=4096");
    cpr_free(s);
    cpr_addr_free(a);
    a = uri("file:vm.state");
    ck_assert_str_eq(cpr_addr_path(a), "vm.state");
    ck_assert_uint_eq(cpr_addr_offset(a), 0);
    cpr_addr_free(a);
}
END_TEST

START_TEST(test_uri_unix_tcp_fd_exec)
{
    cpr_addr *a = uri("unix:/run/vm/main.sock");
    ck_assert_int_eq(cpr_addr_transport(a), CPR_TRANSPORT_UNIX);
    ck_assert_str_eq(cpr_addr_path(a), "/run/vm/main.sock");
    ck_assert_int_eq(cpr_addr_port(a), -1);
    cpr_addr_free(a);

    a = uri("tcp:localhost:4444");
    ck_assert_int_eq(cpr_addr_transport(a), CPR_TRANSPORT_TCP);
    ck_assert_str_eq(cpr_addr_host(a), "localhost");
    ck_assert_int_eq(cpr_addr_port(a), 4444);
    cpr_addr_free(a);

    a = uri("tcp:[::1]:0");
    ck_assert_str_eq(cpr_addr_host(a), "::1");
    ck_assert_int_eq(cpr_addr_port(a), 0);
    char *s = cpr_addr_to_uri(a);
    ck_assert_str_eq(s, "tcp:[::1]:0");
    cpr_free(s);
    cpr_addr_free(a);

    a = uri("fd:7");
    ck_assert_int_eq(cpr_addr_fd(a), 7);
    cpr_addr_free(a);

    a = uri("exec:cat > /tmp/x");
    ck_assert_int_eq(cpr_addr_transport(a), CPR_TRANSPORT_EXEC);
    ck_assert_str_eq(cpr_addr_command(a), "cat > /tmp/x");
    cpr_addr_free(a);
}
END_TEST

START_TEST(test_uri_refusals_name_the_fault)
{
    cpr_addr *a = NULL;
    ck_assert_cpr_fails(cpr_addr_parse_uri("rdma:host:1", &a, errp_), -EINVAL, "unknown transport");
    ck_assert_cpr_fails(cpr_addr_parse_uri("file:", &a, errp_), -EINVAL, "needs a path");
    ck_assert_cpr_fails(cpr_addr_parse_uri("file:/x,offset=-1", &a, errp_), -EINVAL, "offset '-1'");
    ck_assert_cpr_fails(cpr_addr_parse_uri("file:/x,bogus=1", &a, errp_), -EINVAL, "unknown file option");
    ck_assert_cpr_fails(cpr_addr_parse_uri("tcp:host:65536", &a, errp_), -EINVAL, "port '65536'");
    ck_assert_cpr_fails(cpr_addr_parse_uri("tcp:host", &a, errp_), -EINVAL, "tcp:HOST:PORT");
    ck_assert_cpr_fails(cpr_addr_parse_uri("tcp::80", &a, errp_), -EINVAL, "needs a host");
    /* Brackets only around an IPv6 address: otherwise the URI could not be printed back. */
    ck_assert_cpr_fails(cpr_addr_parse_uri("tcp:K::1]:0", &a, errp_), -EINVAL, "has a bracket");
    ck_assert_cpr_fails(cpr_addr_parse_uri("tcp:a[b:0", &a, errp_), -EINVAL, "has a bracket");
    ck_assert_cpr_fails(cpr_addr_parse_uri("fd:x3", &a, errp_), -EINVAL, "'x3'");
    ck_assert_cpr_fails(cpr_addr_parse_uri("unix:", &a, errp_), -EINVAL, "socket path");
    ck_assert_cpr_fails(cpr_addr_parse_uri("exec:", &a, errp_), -EINVAL, "needs a command");
    ck_assert_ptr_null(a);
}
END_TEST

START_TEST(test_channel_list_main_and_cpr)
{
    cpr_channels *l = channels(
        "[{\"channel-type\":\"main\",\"addr\":{\"transport\":\"socket\",\"type\":\"unix\",\"path\":\"/tmp/m\"}},"
        " {\"channel-type\":\"cpr\",\"addr\":{\"transport\":\"socket\",\"type\":\"unix\",\"path\":\"/tmp/c\"}}]");
    ck_assert_str_eq(cpr_addr_path(cpr_channels_get(l, CPR_CHANNEL_MAIN)), "/tmp/m");
    ck_assert_str_eq(cpr_addr_path(cpr_channels_get(l, CPR_CHANNEL_CPR)), "/tmp/c");
    ck_assert_int_eq(cpr_channels_incoming_mode(l, CPR_MODE_NORMAL), CPR_MODE_CPR_TRANSFER);
    cpr_channels_free(l);
}
END_TEST

START_TEST(test_channel_addr_forms)
{
    cpr_channels *l = channels("{\"channel-type\":\"main\",\"addr\":{\"transport\":\"socket\",\"type\":\"inet\","
                               "\"host\":\"127.0.0.1\",\"port\":\"4000\"}}");
    const cpr_addr *a = cpr_channels_get(l, CPR_CHANNEL_MAIN);
    ck_assert_int_eq(cpr_addr_transport(a), CPR_TRANSPORT_TCP);
    ck_assert_int_eq(cpr_addr_port(a), 4000);
    ck_assert_ptr_null(cpr_channels_get(l, CPR_CHANNEL_CPR));
    ck_assert_int_eq(cpr_channels_incoming_mode(l, CPR_MODE_CPR_REBOOT), CPR_MODE_CPR_REBOOT);
    cpr_channels_free(l);

    l = channels("[{\"channel-type\":\"main\",\"addr\":{\"transport\":\"file\",\"filename\":\"/tmp/f\",\"offset\":512}}]");
    a = cpr_channels_get(l, CPR_CHANNEL_MAIN);
    ck_assert_str_eq(cpr_addr_path(a), "/tmp/f");
    ck_assert_uint_eq(cpr_addr_offset(a), 512);
    cpr_channels_free(l);

    l = channels("[{\"channel-type\":\"main\",\"addr\":{\"transport\":\"exec\",\"args\":[\"cat\",\"-\"]}}]");
    ck_assert_str_eq(cpr_addr_command(cpr_channels_get(l, CPR_CHANNEL_MAIN)), "cat -");
    cpr_channels_free(l);

    /* Each arg stays one word for the shell that runs the command (it once became three). */
    l = channels("[{\"channel-type\":\"main\",\"addr\":{\"transport\":\"exec\",\"args\":[\"sh\",\"-c\",\"cat > /tmp/x\"]}}]");
    ck_assert_str_eq(cpr_addr_command(cpr_channels_get(l, CPR_CHANNEL_MAIN)), "sh -c 'cat > /tmp/x'");
    cpr_channels_free(l);
    cpr_error *err = NULL;
    ck_assert_int_eq(cpr_channels_parse_json("[{\"channel-type\":\"main\",\"addr\":{\"transport\":\"file\","
                                             "\"filename\":\"a,b\"}}]", &l, &err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(cpr_error_message(err), "has a comma"));
    cpr_error_free(err);

    l = channels("[{\"channel-type\":\"main\",\"addr\":{\"transport\":\"socket\",\"type\":\"fd\",\"str\":\"9\"}}]");
    ck_assert_int_eq(cpr_addr_fd(cpr_channels_get(l, CPR_CHANNEL_MAIN)), 9);
    cpr_channels_free(l);
}
END_TEST

START_TEST(test_channel_list_refusals_name_the_fault)
{
    cpr_channels *l = NULL;
    ck_assert_cpr_fails(cpr_channels_parse_json("[", &l, errp_), -EINVAL, "invalid JSON");
    ck_assert_cpr_fails(cpr_channels_parse_json("[] x", &l, errp_), -EINVAL, "unexpected text");
    ck_assert_cpr_fails(cpr_channels_parse_json("[]", &l, errp_), -EINVAL, "empty");
    ck_assert_cpr_fails(cpr_channels_parse_json("[{\"channel-type\":\"side\",\"addr\":{}}]", &l, errp_), -EINVAL,
                        "unknown channel-type 'side'");
    ck_assert_cpr_fails(cpr_channels_parse_json("[{\"channel-type\":\"main\"}]", &l, errp_), -EINVAL,
                        "'addr' is missing");
    ck_assert_cpr_fails(
        cpr_channels_parse_json("[{\"channel-type\":\"main\",\"addr\":{\"transport\":\"socket\",\"type\":\"unix\"}}]",
                                &l, errp_),
        -EINVAL, "channel 0: 'path' must be a string");
    ck_assert_cpr_fails(
        cpr_channels_parse_json("[{\"channel-type\":\"main\",\"addr\":{\"transport\":\"file\",\"filename\":\"/f\"}},"
                                " {\"channel-type\":\"main\",\"addr\":{\"transport\":\"file\",\"filename\":\"/g\"}}]",
                                &l, errp_),
        -EINVAL, "channel 1: a second 'main' channel");
    ck_assert_cpr_fails(
        cpr_channels_parse_json("[{\"channel-type\":\"main\",\"addr\":{\"transport\":\"file\",\"filename\":\"/f\","
                                "\"ofset\":1}}]",
                                &l, errp_),
        -EINVAL, "unexpected member 'ofset'");
    ck_assert_cpr_fails(
        cpr_channels_parse_json("[{\"channel-type\":\"main\",\"addr\":{\"transport\":\"rdma\"}}]", &l, errp_),
        -EINVAL, "unknown transport 'rdma'");
    ck_assert_ptr_null(l);
}
END_TEST

START_TEST(test_add_and_merge)
{
    cpr_channels *a, *b;
    ck_assert_int_eq(cpr_channels_from_uri("unix:/tmp/m", &a, NULL), 0);
    ck_assert_int_eq(cpr_channels_new(&b, NULL), 0);
    ck_assert_int_eq(cpr_channels_add(b, CPR_CHANNEL_CPR, uri("unix:/tmp/c"), NULL), 0);
    cpr_addr *dup = uri("unix:/tmp/c2");
    ck_assert_cpr_fails(cpr_channels_add(b, CPR_CHANNEL_CPR, dup, errp_), -EEXIST, "already a 'cpr' channel");
    cpr_addr_free(dup);
    ck_assert_int_eq(cpr_channels_merge(a, b, NULL), 0);
    ck_assert_ptr_null(cpr_channels_get(b, CPR_CHANNEL_CPR));
    ck_assert_str_eq(cpr_addr_path(cpr_channels_get(a, CPR_CHANNEL_CPR)), "/tmp/c");
    cpr_channels *c;
    ck_assert_int_eq(cpr_channels_from_uri("unix:/tmp/m2", &c, NULL), 0);
    ck_assert_cpr_fails(cpr_channels_merge(a, c, errp_), -EEXIST, "'main' channel given twice");
    ck_assert_ptr_nonnull(cpr_channels_get(c, CPR_CHANNEL_MAIN));
    cpr_channels_free(a);
    cpr_channels_free(b);
    cpr_channels_free(c);
}
END_TEST

static cpr_channels *pair(const char *main_uri, const char *cpr_uri)
{
    cpr_channels *l;
    ck_assert_int_eq(cpr_channels_from_uri(main_uri, &l, NULL), 0);
    if (cpr_uri)
        ck_assert_int_eq(cpr_channels_add(l, CPR_CHANNEL_CPR, uri(cpr_uri), NULL), 0);
    return l;
}

START_TEST(test_mode_rules)
{
    cpr_channels *l = pair("file:/tmp/vm.state", NULL);
    ck_assert_int_eq(cpr_channels_check_mode(l, CPR_MODE_CPR_REBOOT, NULL, NULL), 0);
    ck_assert_int_eq(cpr_channels_check_mode(l, CPR_MODE_NORMAL, NULL, NULL), 0);
    ck_assert_int_eq(cpr_channels_check_mode(l, CPR_MODE_CPR_EXEC, "/usr/bin/vmm -incoming defer", NULL), 0);
    ck_assert_cpr_fails(cpr_channels_check_mode(l, CPR_MODE_CPR_EXEC, NULL, errp_), -EINVAL, "cpr-exec-command");
    ck_assert_cpr_fails(cpr_channels_check_mode(l, CPR_MODE_CPR_TRANSFER, NULL, errp_), -EINVAL,
                        "a cpr channel is required");
    cpr_channels_free(l);

    l = pair("unix:/tmp/m", NULL);
    ck_assert_cpr_fails(cpr_channels_check_mode(l, CPR_MODE_CPR_REBOOT, NULL, errp_), -EINVAL,
                        "must be a file, not unix socket");
    ck_assert_cpr_fails(cpr_channels_check_mode(l, CPR_MODE_CPR_EXEC, "vmm", errp_), -EINVAL,
                        "must be a file");
    cpr_channels_free(l);

    l = pair("unix:/tmp/m", "unix:/tmp/c");
    ck_assert_int_eq(cpr_channels_check_mode(l, CPR_MODE_CPR_TRANSFER, NULL, NULL), 0);
    ck_assert_cpr_fails(cpr_channels_check_mode(l, CPR_MODE_NORMAL, NULL, errp_), -EINVAL,
                        "only used by mode cpr-transfer");
    cpr_channels_free(l);

    l = pair("file:/tmp/f", "unix:/tmp/c");
    ck_assert_cpr_fails(cpr_channels_check_mode(l, CPR_MODE_CPR_TRANSFER, NULL, errp_), -EINVAL,
                        "main channel cannot be a file");
    cpr_channels_free(l);

    l = pair("tcp:127.0.0.1:0", "unix:/tmp/c");
    ck_assert_cpr_fails(cpr_channels_check_mode(l, CPR_MODE_CPR_TRANSFER, NULL, errp_), -EINVAL, "port cannot be 0");
    cpr_channels_free(l);

    l = pair("tcp:127.0.0.1:4000", "tcp:127.0.0.1:4001");
    ck_assert_cpr_fails(cpr_channels_check_mode(l, CPR_MODE_CPR_TRANSFER, NULL, errp_), -EINVAL,
                        "cpr channel must be a unix socket");
    cpr_channels_free(l);

    ck_assert_int_eq(cpr_channels_new(&l, NULL), 0);
    ck_assert_cpr_fails(cpr_channels_check_mode(l, CPR_MODE_NORMAL, NULL, errp_), -EINVAL, "main migration channel");
    cpr_channels_free(l);
}
END_TEST

static Suite *channel_suite(void)
{
    Suite *s = suite_create("channel");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_uri_file_with_offset);
    tcase_add_test(tc, test_uri_unix_tcp_fd_exec);
    tcase_add_test(tc, test_uri_refusals_name_the_fault);
    tcase_add_test(tc, test_channel_list_main_and_cpr);
    tcase_add_test(tc, test_channel_addr_forms);
    tcase_add_test(tc, test_channel_list_refusals_name_the_fault);
    tcase_add_test(tc, test_add_and_merge);
    tcase_add_test(tc, test_mode_rules);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(channel_suite)
