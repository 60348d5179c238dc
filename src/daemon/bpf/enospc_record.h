/* What the ENOSPC/EDQUOT probe (enospc.bpf.c) shares with user space (source/enospc_source.cc):
 * the fold map's key and value and the ring buffer record. Plain C, fixed-size fields, included
 * both by the BPF program (after vmlinux.h) and by C++. */
#ifndef STORWATCH_ENOSPC_RECORD_H
#define STORWATCH_ENOSPC_RECORD_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define ENOSPC_PATH_MAX 256
#define ENOSPC_MAX_KEYS 8192
#define ENOSPC_COMM_LEN 16

/* enospc_key.kind: what the syscall was doing. "inodes" is decided in user space (statfs). */
#define ENOSPC_KIND_DATA 1
#define ENOSPC_KIND_METADATA 2

/* enospc_value.syscall: an x86_64 syscall number, or ENOSPC_IO_URING | IORING_OP_* for an
 * io_uring completion. */
#define ENOSPC_IO_URING 0x10000u

/* enospc_key.dev is 0 when the kernel side could not name the filesystem; enospc_value.how
 * says why, and for an absolute path the record carries the path for user space to resolve. */
#define ENOSPC_HOW_FD 1        /* from the file descriptor */
#define ENOSPC_HOW_CWD 2       /* from the working directory (AT_FDCWD, relative path) */
#define ENOSPC_HOW_DIRFD 3     /* from the directory descriptor of an *at() call */
#define ENOSPC_HOW_PATH 4      /* absolute path: dev 0, the record carries the path */
#define ENOSPC_HOW_CLOSED 5    /* close(): the descriptor is gone when the call returns */
#define ENOSPC_HOW_NOFILE 6    /* io_uring request without a file (openat, mkdirat, ...) */
#define ENOSPC_HOW_BADFD 7     /* the descriptor was no longer open at syscall exit */

/* The in-kernel fold: one entry per (filesystem, process, errno, kind). The first failure of a
 * key creates the entry and sends a record; later ones only count. For unresolved filesystems
 * (dev 0) dir_hash separates absolute paths by their directory. */
struct enospc_key {
  __u32 dev; /* superblock s_dev, kernel encoding (major << 20 | minor); 0 = unresolved */
  __u32 tgid;
  __s32 err; /* ENOSPC or EDQUOT (positive) */
  __u32 kind;
  __u32 dir_hash;
  __u32 pad;
};

struct enospc_value {
  __u64 count; /* failed calls of this key since the entry was created; only ever grows */
  __u64 first_ns, last_ns; /* bpf_ktime_get_ns() */
  __u64 cgroup_id; /* cgroup v2 id (kernfs inode number) */
  __u32 tid, uid;
  __u32 syscall, how;
  char comm[ENOSPC_COMM_LEN];
};

#define ENOSPC_REC_UNFOLDED 1 /* the fold map was full: this record is one failure, not a key */

struct enospc_record {
  struct enospc_key key;
  struct enospc_value value;
  __u32 flags;
  __s32 fd; /* the descriptor the call used, -1 for none */
  char path[ENOSPC_PATH_MAX]; /* for ENOSPC_HOW_PATH; NUL-terminated */
};

/* Running totals in the program's .bss, read by user space for `storwatch doctor`. */
struct enospc_stats {
  __u64 failures;    /* failing filesystem syscalls seen */
  __u64 ring_full;   /* first records not sent (the sweep still finds the key) */
  __u64 lost;        /* failures neither folded nor sent: map full and ring full */
};

#endif
