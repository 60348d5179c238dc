// SPDX-License-Identifier: GPL-2.0
/* The floor under any syscall-exit probe, for bench_enospc_probe: a program on the same tracepoint
 * that does nothing. What it costs is the kernel's (the slow syscall path every task takes while a
 * sys_exit program is attached, and the call into the program); what the ENOSPC probe costs beyond
 * it is the probe's own. */
#include "vmlinux.h"

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tp_btf/sys_exit")
int BPF_PROG(noop_sys_exit, struct pt_regs *regs, long ret) { return 0; }
