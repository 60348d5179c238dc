/* What block_errors.bpf.c sends through its ring buffer for each failed block request, as both
 * the BPF program (with vmlinux.h) and the daemon (with the UAPI headers) see it. Plain C: the BPF
 * side is compiled as C. Sizes are fixed so both compilers lay it out the same way. */
#ifndef STORWATCH_BLOCK_ERROR_RECORD_H
#define STORWATCH_BLOCK_ERROR_RECORD_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define STORWATCH_DISK_NAME_LEN 32

struct storwatch_block_error {
  __u64 sector;    /* first 512-byte sector of the request, on the whole disk */
  __u32 sectors;   /* bytes the kernel failed, in sectors (nr_bytes >> 9) */
  __u32 major;     /* the disk (gendisk major, first_minor): the kernel log names it too */
  __u32 minor;
  __u32 cmd_flags; /* request op (low 8 bits, enum req_op) and REQ_* flags */
  __u8 status;     /* blk_status_t */
  __u8 pad[7];
  char disk[STORWATCH_DISK_NAME_LEN]; /* gendisk disk_name, NUL-terminated */
};

#endif
