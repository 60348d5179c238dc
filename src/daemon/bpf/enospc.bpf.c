// SPDX-License-Identifier: GPL-2.0
/* The ENOSPC/EDQUOT probe: every syscall exit (and every io_uring completion) passes through
 * here, so the common case, a call that did not fail with ENOSPC or EDQUOT, costs one compare
 * of the return value. A failing filesystem call is resolved here to the superblock's device
 * (from its fd, the cwd or a directory fd), because the process may be gone when user space
 * looks, and folded per (device, tgid, errno, kind): the first failure of a key sends a ring
 * record, later ones only count in the fold map, which user space sweeps (enospc_source.cc).
 * Syscall numbers and argument registers are x86_64's. */
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "enospc_record.h"

char LICENSE[] SEC("license") = "GPL";

#define E_NOSPC 28
#define E_DQUOT 122
#define AT_FDCWD_ -100

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 256 * 1024);
} events SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, ENOSPC_MAX_KEYS);
  __type(key, struct enospc_key);
  __type(value, struct enospc_value);
} folds SEC(".maps");

/* The path of the failing call, read before we know whether the key is new. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, char[ENOSPC_PATH_MAX]);
} path_scratch SEC(".maps");

struct enospc_stats stats = {};

/* What a syscall's arguments name: a descriptor, or a path relative to a directory. */
struct target {
  long fd;      /* >= 0: the file itself */
  long dirfd;   /* for path: AT_FDCWD or a directory descriptor */
  __u64 path;   /* user pointer, 0 when fd names the file */
  __u32 kind;
  __u32 how;
};

static __always_inline int classify(long nr, struct pt_regs *regs, struct target *t) {
  unsigned long di = BPF_CORE_READ(regs, di), si = BPF_CORE_READ(regs, si);
  unsigned long dx = BPF_CORE_READ(regs, dx), r10 = BPF_CORE_READ(regs, r10);
  t->fd = -1;
  t->dirfd = AT_FDCWD_;
  t->path = 0;
  t->kind = ENOSPC_KIND_DATA;
  t->how = ENOSPC_HOW_FD;
  switch (nr) {
  case 1:   /* write */
  case 18:  /* pwrite64 */
  case 20:  /* writev */
  case 296: /* pwritev */
  case 328: /* pwritev2 */
  case 285: /* fallocate */
  case 74:  /* fsync */
  case 75:  /* fdatasync */
  case 277: /* sync_file_range */
  case 77:  /* ftruncate */
  case 40:  /* sendfile (out_fd) */
    t->fd = (int)di;
    return 1;
  case 326: /* copy_file_range (fd_out) */
  case 275: /* splice (fd_out) */
    t->fd = (int)dx;
    return 1;
  case 3: /* close: a delayed-allocation or writeback failure reported at the last close */
    t->how = ENOSPC_HOW_CLOSED;
    return 1;
  }
  t->kind = ENOSPC_KIND_METADATA;
  switch (nr) {
  case 190: /* fsetxattr */
    t->fd = (int)di;
    return 1;
  case 2:   /* open */
  case 85:  /* creat */
  case 83:  /* mkdir */
  case 133: /* mknod */
  case 188: /* setxattr */
  case 189: /* lsetxattr */
  case 76:  /* truncate */
    t->path = di;
    return 1;
  case 86: /* link (newpath) */
  case 88: /* symlink (linkpath) */
  case 82: /* rename (newpath) */
    t->path = si;
    return 1;
  case 257: /* openat */
  case 437: /* openat2 */
  case 258: /* mkdirat */
  case 259: /* mknodat */
  case 463: /* setxattrat */
    t->dirfd = (int)di;
    t->path = si;
    return 1;
  case 266: /* symlinkat (newdirfd, linkpath) */
    t->dirfd = (int)si;
    t->path = dx;
    return 1;
  case 265: /* linkat (newdirfd, newpath) */
  case 264: /* renameat */
  case 316: /* renameat2 */
    t->dirfd = (int)dx;
    t->path = r10;
    return 1;
  }
  return 0;
}

static __always_inline __u32 file_dev(struct file *f) {
  if (!f) return 0;
  return BPF_CORE_READ(f, f_inode, i_sb, s_dev);
}

static __always_inline __u32 fd_dev(struct task_struct *task, long fd) {
  struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
  if (!fdt || fd < 0 || fd >= BPF_CORE_READ(fdt, max_fds)) return 0;
  struct file **fds = BPF_CORE_READ(fdt, fd);
  struct file *f = 0;
  bpf_probe_read_kernel(&f, sizeof f, &fds[fd]);
  return file_dev(f);
}

static __always_inline void count(__u64 *field) { __sync_fetch_and_add(field, 1); }

/* Folds one failure; sends the first of a key to user space. */
static __always_inline void report(struct enospc_key *key, struct enospc_value *nv, long fd,
                                   const char *path) {
  struct enospc_value *v = bpf_map_lookup_elem(&folds, key);
  if (v) {
    __sync_fetch_and_add(&v->count, 1);
    v->last_ns = nv->last_ns;
    v->tid = nv->tid;
    v->syscall = nv->syscall;
    return;
  }
  long err = bpf_map_update_elem(&folds, key, nv, BPF_NOEXIST);
  if (err == -17 /* EEXIST: another CPU created it meanwhile */) {
    v = bpf_map_lookup_elem(&folds, key);
    if (v) {
      __sync_fetch_and_add(&v->count, 1);
      return;
    }
  }
  struct enospc_record *rec = bpf_ringbuf_reserve(&events, sizeof *rec, 0);
  if (!rec) {
    count(err == 0 ? &stats.ring_full : &stats.lost);
    return;
  }
  rec->key = *key;
  rec->value = *nv;
  rec->flags = err == 0 ? 0 : ENOSPC_REC_UNFOLDED;
  rec->fd = (int)fd;
  if (path)
    bpf_probe_read_kernel_str(rec->path, sizeof rec->path, path);
  else
    rec->path[0] = 0;
  bpf_ringbuf_submit(rec, 0);
}

SEC("tp_btf/sys_exit")
int BPF_PROG(enospc_sys_exit, struct pt_regs *regs, long ret) {
  if (ret != -E_NOSPC && ret != -E_DQUOT) return 0;
  long nr = BPF_CORE_READ(regs, orig_ax);
  struct target t;
  if (!classify(nr, regs, &t)) return 0;
  count(&stats.failures);

  struct task_struct *task = bpf_get_current_task_btf();
  __u64 pid_tgid = bpf_get_current_pid_tgid();
  struct enospc_key key = {};
  key.tgid = pid_tgid >> 32;
  key.err = (int)-ret;
  key.kind = t.kind;

  struct enospc_value nv = {};
  nv.count = 1;
  nv.first_ns = nv.last_ns = bpf_ktime_get_ns();
  nv.cgroup_id = bpf_get_current_cgroup_id();
  nv.tid = (__u32)pid_tgid;
  nv.uid = (__u32)bpf_get_current_uid_gid();
  nv.syscall = (__u32)nr;
  nv.how = t.how;
  bpf_get_current_comm(nv.comm, sizeof nv.comm);

  const char *path = 0;
  if (t.fd >= 0) {
    key.dev = fd_dev(task, t.fd);
    if (!key.dev) nv.how = ENOSPC_HOW_BADFD;
  } else if (t.path) {
    __u32 zero = 0;
    char *buf = bpf_map_lookup_elem(&path_scratch, &zero);
    if (!buf) return 0;
    if (bpf_probe_read_user_str(buf, ENOSPC_PATH_MAX, (const void *)t.path) <= 0) buf[0] = 0;
    if (buf[0] == '/') {
      /* An absolute path can be on any filesystem: user space resolves it. Fold by directory. */
      __u32 h = 2166136261u, dir = 0;
      for (int i = 0; i < ENOSPC_PATH_MAX; i++) {
        char c = buf[i];
        if (!c) break;
        if (c == '/') dir = h;
        h = (h ^ (unsigned char)c) * 16777619u;
      }
      key.dir_hash = dir | 1;
      nv.how = ENOSPC_HOW_PATH;
      path = buf;
    } else if (t.dirfd == AT_FDCWD_) {
      key.dev = BPF_CORE_READ(task, fs, pwd.dentry, d_sb, s_dev);
      nv.how = ENOSPC_HOW_CWD;
    } else {
      key.dev = fd_dev(task, t.dirfd);
      nv.how = key.dev ? ENOSPC_HOW_DIRFD : ENOSPC_HOW_BADFD;
    }
  }
  report(&key, &nv, t.fd >= 0 ? t.fd : t.dirfd, path);
  return 0;
}

/* io_uring requests fail in the completion, not in io_uring_enter(). The completion may run in
 * an io-wq worker or another context: the submitting task comes from the request. */
SEC("tp_btf/io_uring_complete")
int BPF_PROG(enospc_io_uring_complete, void *ctx_, struct io_kiocb *req, struct io_uring_cqe *cqe) {
  int res = BPF_CORE_READ(cqe, res);
  if (res != -E_NOSPC && res != -E_DQUOT) return 0;
  __u8 op = BPF_CORE_READ(req, opcode);
  __u32 kind;
  switch (op) {
  case 2: case 3: case 5: case 8: case 17: case 23: case 30: case 55: case 61:
    kind = ENOSPC_KIND_DATA;  /* writev, fsync, write_fixed, sync_file_range, fallocate, write,
                                 splice, ftruncate, writev_fixed */
    break;
  case 18: case 28: case 35: case 37: case 38: case 39: case 41: case 42:
    kind = ENOSPC_KIND_METADATA; /* openat, openat2, renameat, mkdirat, symlinkat, linkat,
                                    fsetxattr, setxattr */
    break;
  default:
    return 0;
  }
  count(&stats.failures);
  struct task_struct *task = BPF_CORE_READ(req, tctx, task);
  struct enospc_key key = {};
  key.tgid = BPF_CORE_READ(task, tgid);
  key.err = -res;
  key.kind = kind;
  struct enospc_value nv = {};
  nv.count = 1;
  nv.first_ns = nv.last_ns = bpf_ktime_get_ns();
  nv.cgroup_id = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id);
  nv.tid = BPF_CORE_READ(task, pid);
  nv.uid = BPF_CORE_READ(task, cred, uid.val);
  nv.syscall = ENOSPC_IO_URING | op;
  BPF_CORE_READ_STR_INTO(&nv.comm, task, comm);
  struct file *f = kind == ENOSPC_KIND_DATA ? BPF_CORE_READ(req, file) : 0;
  key.dev = file_dev(f);
  nv.how = f ? ENOSPC_HOW_FD : ENOSPC_HOW_NOFILE;
  report(&key, &nv, -1, 0);
  return 0;
}
