// SPDX-License-Identifier: GPL-2.0
// Every failed block request, from the block layer's block_rq_error tracepoint: unlike the kernel
// log (printk_ratelimited, 10 lines per 5 s) it sees each one, with its length. tp_btf (a BTF raw
// tracepoint) rather than a classic tracepoint: it needs no tracefs mount and gets typed
// arguments.
//
// Requests the device does not support (BLK_STS_NOTSUPP: discard and write-zeroes on a loop device
// over a file that cannot do them, during mkfs or ext4's lazy init) are not media errors and are
// dropped here, before they cost a ring buffer record.
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "block_error_record.h"

#define BLK_STS_NOTSUPP 1

char LICENSE[] SEC("license") = "GPL";

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 256 * 1024);
} block_errors SEC(".maps");

// Records the ring buffer had no room for (the daemon fell behind a storm of errors).
__u64 lost = 0;

SEC("tp_btf/block_rq_error")
int BPF_PROG(block_rq_error, struct request *rq, blk_status_t error, unsigned int nr_bytes) {
  if (error == BLK_STS_NOTSUPP) return 0;
  struct storwatch_block_error *r = bpf_ringbuf_reserve(&block_errors, sizeof(*r), 0);
  if (!r) {
    __sync_fetch_and_add(&lost, 1);
    return 0;
  }
  r->sector = BPF_CORE_READ(rq, __sector);
  r->sectors = nr_bytes >> 9;
  r->cmd_flags = BPF_CORE_READ(rq, cmd_flags);
  r->status = error;
  __builtin_memset(r->pad, 0, sizeof(r->pad));
  struct gendisk *disk = BPF_CORE_READ(rq, q, disk);
  r->major = BPF_CORE_READ(disk, major);
  r->minor = BPF_CORE_READ(disk, first_minor);
  r->disk[0] = 0;
  BPF_CORE_READ_STR_INTO(&r->disk, disk, disk_name);
  bpf_ringbuf_submit(r, 0);
  return 0;
}
