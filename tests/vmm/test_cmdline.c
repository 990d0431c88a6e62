/* SPDX-License-Identifier: MIT */
/* cpr-vmm's command line: QEMU's spellings from the seeds parse, mistakes are named. */
#include <string.h>

#include "cmdline.h"
#include "testutil.h"

/* Parses a NULL-terminated argument list; returns the parse result, *err on failure. */
static int parse(vmm_config *cfg, char **err, const char **args)
{
    int argc = 0;
    while (args[argc])
        argc++;
    int exit_now = 0;
    *err = NULL;
    return vmm_cmdline_parse(argc, (char **)args, cfg, &exit_now, err);
}

/* Asserts that args fail to parse with an error that contains needle. */
static void expect_error(const char **args, const char *needle)
{
    vmm_config cfg;
    char *err;
    ck_assert_int_eq(parse(&cfg, &err, args), -1);
    ck_assert_msg(strstr(err, needle), "error '%s' lacks '%s'", err, needle);
    g_free(err);
    vmm_config_clear(&cfg);
}

/* Machine types (machtype.h): the newest by default, an older one by name or the alias, with
 * other -machine properties; a name no release had is refused with the list. */
START_TEST(test_machine_types)
{
    vmm_config cfg;
    char *err;
    const char *none[] = {"cpr-vmm", NULL};
    ck_assert_int_eq(parse(&cfg, &err, none), 0);
    ck_assert_ptr_eq(cfg.machine_type, vmm_machine_type_newest());
    ck_assert_int_eq(cfg.machine_type_given, 0);
    ck_assert_uint_eq(cfg.hbmon_version, cfg.machine_type->hbmon_version);
    vmm_config_clear(&cfg);

    const char *old[] = {"cpr-vmm", "-machine", "cpr-vmm-1.0,aux-ram-share=on", NULL};
    ck_assert_int_eq(parse(&cfg, &err, old), 0);
    ck_assert_str_eq(cfg.machine_type->name, "cpr-vmm-1.0");
    ck_assert_uint_eq(cfg.machine_type->mailbox_version, 1);
    ck_assert_int_eq(cfg.machine_type_given, 1);
    /* Releases 1.0 and 1.1 read sections vm and cpu in version 1 only; 1.2 writes version 2. */
    ck_assert_uint_eq(cfg.machine_type->cpu_version, 1);
    ck_assert_uint_eq(vmm_machine_type_find("cpr-vmm-1.1")->cpu_version, 1);
    ck_assert_uint_eq(vmm_machine_type_find("cpr-vmm-1.2")->cpu_version, 2);
    ck_assert_int_eq(cfg.aux_ram_share, 1);
    vmm_config_clear(&cfg);

    const char *alias[] = {"cpr-vmm", "-M", "type=cpr-vmm", NULL};
    ck_assert_int_eq(parse(&cfg, &err, alias), 0);
    ck_assert_ptr_eq(cfg.machine_type, vmm_machine_type_newest());
    ck_assert_int_eq(cfg.machine_type_given, 1);
    vmm_config_clear(&cfg);

    /* A guest's mailbox names its type: the preferred one when it has that layout. */
    ck_assert_str_eq(vmm_machine_type_of_guest(1, vmm_machine_type_newest())->name, "cpr-vmm-1.0");
    ck_assert_ptr_eq(vmm_machine_type_of_guest(2, vmm_machine_type_find("cpr-vmm-1.1")),
                     vmm_machine_type_find("cpr-vmm-1.1"));
    ck_assert_ptr_null(vmm_machine_type_of_guest(99, NULL));
    /* Types of one layout differ in the version of sections vm and cpu. */
    ck_assert_str_eq(vmm_machine_type_of_state(2, 1, vmm_machine_type_newest())->name, "cpr-vmm-1.1");
    ck_assert_str_eq(vmm_machine_type_of_state(3, 2, NULL)->name, "cpr-vmm-1.2");
    ck_assert_ptr_null(vmm_machine_type_of_state(2, 2, NULL)); /* 1.2's layout is mailbox 3 */
    ck_assert_str_eq(vmm_machine_type_of_state(1, 1, vmm_machine_type_newest())->name, "cpr-vmm-1.0");
    ck_assert_ptr_null(vmm_machine_type_of_state(1, 2, NULL));

    expect_error((const char *[]){"cpr-vmm", "-machine", "cpr-vmm-1.O", NULL}, "unknown machine type 'cpr-vmm-1.O'");
    expect_error((const char *[]){"cpr-vmm", "-machine", "q35", NULL}, "cpr-vmm-1.0");
}
END_TEST

START_TEST(test_seed_cpr_reboot_command_line_parses)
{
    const char *a[] = {"cpr-vmm", "-monitor", "stdio", "-m", "1G", "-object",
                       "memory-backend-file,id=ram0,size=1G,mem-path=/dev/shm/vm.ram,share=on",
                       "-machine", "memory-backend=ram0", "-incoming", "defer", NULL};
    vmm_config cfg;
    char *err;
    ck_assert_int_eq(parse(&cfg, &err, a), 0);
    ck_assert_uint_eq(cfg.ram_size, 1ull << 30);
    const vmm_memdev *m = vmm_config_ram_memdev(&cfg);
    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(m->is_file, 1);
    ck_assert_int_eq(m->share, 1);
    ck_assert_str_eq(m->mem_path, "/dev/shm/vm.ram");
    ck_assert_int_eq(cfg.monitor_stdio, 1);
    ck_assert_int_eq(cfg.serial, VMM_SERIAL_NONE); /* the monitor owns stdio */
    ck_assert_uint_eq(cfg.incoming->len, 1);
    ck_assert_str_eq(cfg.incoming->pdata[0], "defer");
    vmm_config_clear(&cfg);
}
END_TEST

START_TEST(test_seed_cpr_transfer_command_line_parses)
{
    const char *a[] = {"cpr-vmm", "-m", "512", "-machine", "aux-ram-share=on", "-nodefaults",
                       "-qmp", "unix:/tmp/q.sock,server,nowait", "-incoming", "unix:/tmp/main.sock",
                       "-incoming", "{\"channel-type\":\"cpr\",\"addr\":{\"transport\":\"socket\",\"type\":\"unix\",\"path\":\"/tmp/cpr.sock\"}}",
                       NULL};
    vmm_config cfg;
    char *err;
    ck_assert_int_eq(parse(&cfg, &err, a), 0);
    ck_assert_uint_eq(cfg.ram_size, 512ull << 20); /* bare -m is MiB */
    ck_assert_int_eq(cfg.aux_ram_share, 1);
    ck_assert_str_eq(cfg.qmp_path, "/tmp/q.sock");
    ck_assert_uint_eq(cfg.incoming->len, 2);
    ck_assert_ptr_null(vmm_config_ram_memdev(&cfg));
    vmm_config_clear(&cfg);
}
END_TEST

START_TEST(test_unknown_option_is_named)
{
    const char *a[] = {"cpr-vmm", "-m", "64M", "-frobnicate", "x", NULL};
    expect_error(a, "-frobnicate");
}
END_TEST

START_TEST(test_unknown_object_property_is_named)
{
    const char *a[] = {"cpr-vmm", "-object", "memory-backend-memfd,id=r,size=1G,colour=blue", NULL};
    expect_error(a, "colour");
}
END_TEST

START_TEST(test_missing_memory_backend_is_refused)
{
    const char *a[] = {"cpr-vmm", "-machine", "memory-backend=nope", NULL};
    expect_error(a, "nope");
}
END_TEST

START_TEST(test_ram_size_must_match_backend)
{
    const char *a[] = {"cpr-vmm", "-m", "2G", "-object", "memory-backend-memfd,id=r,size=1G,share=on",
                       "-machine", "memory-backend=r", NULL};
    expect_error(a, "differs");
}
END_TEST

START_TEST(test_option_without_argument_is_refused)
{
    const char *a[] = {"cpr-vmm", "-incoming", NULL};
    expect_error(a, "-incoming");
}
END_TEST

START_TEST(test_private_file_backend_is_refused)
{
    const char *a[] = {"cpr-vmm", "-object", "memory-backend-file,id=r,size=1G,mem-path=/dev/shm/x", NULL};
    expect_error(a, "share=on");
}
END_TEST

START_TEST(test_memfd_backend_is_shared_by_default)
{
    const char *a[] = {"cpr-vmm", "-object", "memory-backend-memfd,id=r,size=64M", "-machine", "memory-backend=r", NULL};
    vmm_config cfg;
    char *err;
    ck_assert_int_eq(parse(&cfg, &err, a), 0);
    ck_assert_int_eq(vmm_config_ram_memdev(&cfg)->share, 1);
    vmm_config_clear(&cfg);
}
END_TEST

START_TEST(test_sizes_parse_with_suffixes)
{
    uint64_t v;
    ck_assert_int_eq(vmm_parse_size("4096", 1, &v), 0);
    ck_assert_uint_eq(v, 4096);
    ck_assert_int_eq(vmm_parse_size("2M", 1, &v), 0);
    ck_assert_uint_eq(v, 2u << 20);
    ck_assert_int_eq(vmm_parse_size("1.5G", 1, &v), 0);
    ck_assert_uint_eq(v, 3ull << 29);
    ck_assert_int_eq(vmm_parse_size("8GiB", 1, &v), 0);
    ck_assert_uint_eq(v, 8ull << 30);
    ck_assert_int_lt(vmm_parse_size("12Q", 1, &v), 0);
    ck_assert_int_lt(vmm_parse_size("-1", 1, &v), 0);
    ck_assert_int_lt(vmm_parse_size("", 1, &v), 0);
}
END_TEST

START_TEST(test_serial_and_drive_forms)
{
    const char *a[] = {"cpr-vmm", "-serial", "file:/tmp/console.log", "-drive", "file=/tmp/d.img,if=virtio",
                       "-drive", "/tmp/e.img", "-accel", "soft", "-guest-dirty-rate", "500",
                       "-guest-compress", "90", NULL};
    vmm_config cfg;
    char *err;
    ck_assert_int_eq(parse(&cfg, &err, a), 0);
    ck_assert_int_eq(cfg.serial, VMM_SERIAL_FILE);
    ck_assert_str_eq(cfg.serial_path, "/tmp/console.log");
    ck_assert_uint_eq(cfg.drives->len, 2);
    ck_assert_str_eq(cfg.drives->pdata[1], "/tmp/e.img");
    ck_assert_uint_eq(cfg.accel, CFG_ACCEL_SOFT);
    ck_assert_uint_eq(cfg.dirty_rate, 500);
    ck_assert_int_eq(cfg.dirty_rate_given, 1);
    ck_assert_uint_eq(cfg.compress_pct, 90);
    vmm_config_clear(&cfg);
    /* An authz-simple object: QEMU's doubled commas keep a DN's commas in its identity. */
    const char *z[] = {"cpr-vmm", "-object", "authz-simple,id=auth0,identity=CN=src,,O=example", NULL};
    ck_assert_int_eq(parse(&cfg, &err, z), 0);
    ck_assert_uint_eq(cfg.tls_objs->len, 1);
    const vmm_tls_obj *o = cfg.tls_objs->pdata[0];
    ck_assert_int_eq(o->authz, 1);
    ck_assert_str_eq(o->id, "auth0");
    ck_assert_str_eq(o->identity, "CN=src,O=example");
    vmm_config_clear(&cfg);
    expect_error((const char *[]){"cpr-vmm", "-object", "authz-simple,id=a", NULL},
                 "authz-simple: parameter 'identity' is missing");
    expect_error((const char *[]){"cpr-vmm", "-object", "authz-simple,id=a,identity=x,dir=/d", NULL},
                 "authz-simple: unknown property 'dir' (id, identity)");
    expect_error((const char *[]){"cpr-vmm", "-guest-compress", "101", NULL}, "-guest-compress 101: want a percentage");
}
END_TEST

START_TEST(test_affinity_lists_and_mistakes)
{
    const char *a[] = {"cpr-vmm", "-x-affinity", "vcpus=1,vcpus=4-5,emulator=0", NULL};
    vmm_config cfg;
    char *err;
    ck_assert_int_eq(parse(&cfg, &err, a), 0);
    ck_assert_uint_eq(cfg.vcpu_cpus, 0x32);
    ck_assert_uint_eq(cfg.emulator_cpus, 0x1);
    vmm_config_clear(&cfg);
    const char *bad_key[] = {"cpr-vmm", "-x-affinity", "vcpus=1,io=0", NULL};
    expect_error(bad_key, "unknown property 'io'");
    const char *bad_range[] = {"cpr-vmm", "-x-affinity", "vcpus=3-1", NULL};
    expect_error(bad_range, "not '3-1'");
    const char *too_big[] = {"cpr-vmm", "-x-affinity", "vcpus=64", NULL};
    expect_error(too_big, "not '64'");
    const char *no_vcpus[] = {"cpr-vmm", "-x-affinity", "emulator=0", NULL};
    expect_error(no_vcpus, "'vcpus' is missing");
}
END_TEST

START_TEST(test_global_migration_properties)
{
    const char *a[] = {"cpr-vmm", "-global", "migration.cpr-transfer-accept-timeout=500",
                       "-global", "migration.x-ignore-shared=on", NULL};
    vmm_config cfg;
    char *err;
    ck_assert_int_eq(parse(&cfg, &err, a), 0);
    ck_assert_uint_eq(cfg.globals->len, 2);
    ck_assert_str_eq(cfg.globals->pdata[0], "cpr-transfer-accept-timeout=500");
    ck_assert_str_eq(cfg.globals->pdata[1], "x-ignore-shared=on");
    vmm_config_clear(&cfg);
    const char *other[] = {"cpr-vmm", "-global", "kvm-pit.lost_tick_policy=discard", NULL};
    expect_error(other, "only migration.NAME=VALUE");
    const char *no_value[] = {"cpr-vmm", "-global", "migration.downtime-limit", NULL};
    expect_error(no_value, "expected migration.NAME=VALUE");
}
END_TEST

START_TEST(test_restore_is_incoming_file_with_a_mode)
{
    const char *a[] = {"cpr-vmm", "-restore", "source_url=file:///tmp/s.snap,memory_restore_mode=ondemand", NULL};
    vmm_config cfg;
    char *err;
    ck_assert_int_eq(parse(&cfg, &err, a), 0);
    ck_assert_uint_eq(cfg.incoming->len, 1);
    ck_assert_str_eq(cfg.incoming->pdata[0], "file:/tmp/s.snap");
    ck_assert_uint_eq(cfg.globals->len, 1);
    ck_assert_str_eq(cfg.globals->pdata[0], "memory-restore-mode=ondemand");
    vmm_config_clear(&cfg);
    const char *dflt[] = {"cpr-vmm", "-restore", "file:///tmp/s.snap", NULL};
    ck_assert_int_eq(parse(&cfg, &err, dflt), 0);
    ck_assert_str_eq(cfg.globals->pdata[0], "memory-restore-mode=copy");
    vmm_config_clear(&cfg);
    const char *no_url[] = {"cpr-vmm", "-restore", "memory_restore_mode=ondemand", NULL};
    expect_error(no_url, "source_url=file://PATH is required");
    const char *tcp[] = {"cpr-vmm", "-restore", "source_url=tcp://h:1", NULL};
    expect_error(tcp, "source_url=file://PATH is required");
    const char *mode[] = {"cpr-vmm", "-restore", "source_url=file:///s,memory_restore_mode=lazy", NULL};
    expect_error(mode, "memory_restore_mode=lazy: copy, ondemand or mapped");
    const char *with_defer[] = {"cpr-vmm", "-incoming", "defer", "-restore", "source_url=file:///s", NULL};
    expect_error(with_defer, "-restore names the incoming stream itself");
    const char *twice[] = {"cpr-vmm", "-restore", "source_url=file:///a", "-restore", "source_url=file:///b", NULL};
    expect_error(twice, "no second -restore");
    const char *mapped[] = {"cpr-vmm", "-restore", "source_url=file:///s,memory_restore_mode=mapped", NULL};
    ck_assert_int_eq(parse(&cfg, &err, mapped), 0);
    ck_assert_str_eq(cfg.globals->pdata[0], "memory-restore-mode=mapped");
    vmm_config_clear(&cfg);
    const char *key[] = {"cpr-vmm", "-restore", "source_url=file:///s,prefault=on", NULL};
    expect_error(key, "unknown key 'prefault'");
}
END_TEST

static Suite *cmdline_suite(void)
{
    Suite *s = suite_create("vmm_cmdline");
    TCase *tc = tcase_create("cmdline");
    tcase_add_test(tc, test_seed_cpr_reboot_command_line_parses);
    tcase_add_test(tc, test_restore_is_incoming_file_with_a_mode);
    tcase_add_test(tc, test_seed_cpr_transfer_command_line_parses);
    tcase_add_test(tc, test_unknown_option_is_named);
    tcase_add_test(tc, test_unknown_object_property_is_named);
    tcase_add_test(tc, test_missing_memory_backend_is_refused);
    tcase_add_test(tc, test_ram_size_must_match_backend);
    tcase_add_test(tc, test_option_without_argument_is_refused);
    tcase_add_test(tc, test_private_file_backend_is_refused);
    tcase_add_test(tc, test_memfd_backend_is_shared_by_default);
    tcase_add_test(tc, test_sizes_parse_with_suffixes);
    tcase_add_test(tc, test_serial_and_drive_forms);
    tcase_add_test(tc, test_affinity_lists_and_mistakes);
    tcase_add_test(tc, test_global_migration_properties);
    tcase_add_test(tc, test_machine_types);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(cmdline_suite)
