/* SPDX-License-Identifier: MIT */
/*
 * Fault injection for the reliability tests: CPR_VMM_FAULT=PHASE:ACTION[,PHASE:ACTION...] in
 * the environment makes the VMM kill, freeze or fail itself when it reaches PHASE. Unset (the
 * normal case) every fault point is a no-op: nothing else in the VMM depends on it.
 */
#ifndef VMM_FAULT_H
#define VMM_FAULT_H

/* The places a test can stop the VMM at, in the order a switchover passes them. */
#define VMM_FAULT_CPR_READ "cpr-read"       /* incoming: before the cpr channel / exec state is read */
#define VMM_FAULT_CPR_LOADED "cpr-loaded"   /* incoming: fds and RAM arrived, before devices and hang-up */
#define VMM_FAULT_DEVICE_LOAD "device-load" /* incoming: inside the device state (a section's pre_load) */
#define VMM_FAULT_LOADED "loaded"           /* incoming: whole stream loaded (post_load), before the ack */
#define VMM_FAULT_PREPARE "prepare"         /* incoming: the prepare hook, before the commit (ack) */
#define VMM_FAULT_START "start"             /* incoming: committed (acknowledged), before the vCPUs run */
#define VMM_FAULT_SAVE_STOP "save-stop"     /* outgoing: the guest is about to stop for the switchover */
#define VMM_FAULT_SAVE_DEVICE "save-device" /* outgoing: inside the device state (a section's pre_save) */

/* Acts on PHASE if CPR_VMM_FAULT names it: "kill" raises SIGKILL, "stop" raises SIGSTOP (the
 * test then kills the frozen process, or continues it), "exit" calls _exit(3), "fail" makes the
 * point return -EIO (only where vmm_fault_fail() is used; elsewhere it does nothing). Each entry fires
 * once per process image. Says so on stderr first, so the test can see which point it hit. */
void vmm_fault(const char *phase);

/* As vmm_fault(); returns -EIO when the action is "fail", else 0. */
int vmm_fault_fail(const char *phase);

#endif
