/* SPDX-License-Identifier: MIT */
/*
 * libcpr: checkpoint/restart and live update for virtual machine monitors.
 * The umbrella header: include this one.
 */
#ifndef CPR_CPR_H
#define CPR_CPR_H

#include <cpr/common.h>
#include <cpr/error.h>
#include <cpr/ctx.h>
#include <cpr/mode.h>
#include <cpr/params.h>
#include <cpr/channel.h>
#include <cpr/stream.h>
#include <cpr/vmstate.h>
#include <cpr/savevm.h>
#include <cpr/transport.h>
#include <cpr/blocker.h>
#include <cpr/notify.h>
#include <cpr/fd.h>
#include <cpr/ram.h>
#include <cpr/transfer.h>
#include <cpr/exec.h>
#include <cpr/teardown.h>
#include <cpr/migrate.h>
#include <cpr/tls.h>

#endif /* CPR_CPR_H */
