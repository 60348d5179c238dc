/*
 * storwatch-testfs: a small FUSE file system used by storwatch's integration
 * tests to inject storage faults.
 *
 * Layout of the mounted file system:
 *
 *   /disk.img   regular file (default 64 MiB) backed by a memfd or by the file
 *               given with --backing=PATH.  Usable as a loop device backing
 *               file.  Opened with FUSE direct_io so that every read and write
 *               reaches this process (no kernel page cache in between); this
 *               is what makes injected read errors visible through a loop
 *               device even for data that was read before (with a cached
 *               file, a loop device with --direct-io=off would be served
 *               from the page cache).  Consequence: shared writable mmap of
 *               disk.img fails with ENODEV (private mappings work).
 *               fallocate is passed to the backing store, so discard through
 *               a loop device punches holes.
 *   /data/      in-memory directory tree (files, directories, rename, unlink)
 *               with a capacity of --data-size bytes (default 64 MiB).
 *   /control    text control file.  Each write(2) carries one or more
 *               newline-separated commands (all are validated before any is
 *               applied; a bad one fails the write with EINVAL):
 *                 eio START LENGTH        reads of disk.img overlapping
 *                                         [START, START+LENGTH) fail with EIO
 *                 eio-write START LENGTH  same for writes
 *                 write-errno NAME        writes under /data fail with errno
 *                                         NAME (EDQUOT, ENOSPC, EIO, ..., a
 *                                         number, or 0/none to succeed)
 *                 statfs-block on|off     while on, statfs(2) blocks until
 *                                         turned off, the connection is
 *                                         aborted or the process exits
 *                 statfs-errno NAME       statfs(2) fails with errno NAME
 *                 data-size BYTES         capacity of /data (ENOSPC beyond)
 *                 clear                   remove every fault setting
 *                                         (data-size is kept)
 *               Numbers accept a 0x prefix and K/M/G/T suffixes (powers of
 *               1024).  Empty lines and lines starting with '#' are ignored.
 *               Reading /control returns the current settings and counters.
 *
 * Usage: storwatch-testfs [fuse options] [--image-size=BYTES]
 *                         [--backing=PATH] [--data-size=BYTES] MOUNTPOINT
 * Typical: storwatch-testfs -f -o allow_other MOUNTPOINT &
 *
 * Nothing is printed on stdout; errors go to stderr.
 */
#define FUSE_USE_VERSION 31
#define _GNU_SOURCE

#include <fuse.h>
#include <fuse_lowlevel.h> /* fuse_session_exited */

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define PROG "storwatch-testfs"
#define BLOCK 4096ULL
#define DEFAULT_IMAGE_SIZE (64ULL << 20)
#define DEFAULT_DATA_SIZE (64ULL << 20)
#define MAX_INODES 65536ULL

/* fi->fh values for the fixed files; larger values are struct node pointers. */
#define FH_NONE 0
#define FH_IMAGE 1
#define FH_CONTROL 2
#define FH_ROOT 3
#define FH_IS_NODE(fh) ((fh) > 4096)

static void errmsg(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, PROG ": ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* ------------------------------------------------------------------------ */
/* Fault state                                                               */

struct range {
	uint64_t start;
	uint64_t len;
};

struct rangeset {
	struct range *v;
	size_t n;
	size_t cap;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct rangeset rd;
	struct rangeset wr;
	int write_errno;
	int statfs_errno;
	int statfs_block;
	uint64_t generation; /* bumped whenever statfs-block changes */
	/* counters, reported through /control */
	uint64_t statfs_blocked_now;
	uint64_t statfs_calls;
	uint64_t read_eio_hits;
	uint64_t write_eio_hits;
	uint64_t write_errno_hits;
} flt = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
};

static int rangeset_add(struct rangeset *s, uint64_t start, uint64_t len)
{
	if (s->n == s->cap) {
		size_t ncap = s->cap ? s->cap * 2 : 8;
		struct range *nv = realloc(s->v, ncap * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		s->v = nv;
		s->cap = ncap;
	}
	s->v[s->n].start = start;
	s->v[s->n].len = len;
	s->n++;
	return 0;
}

static int rangeset_hit(const struct rangeset *s, uint64_t off, uint64_t len)
{
	if (len == 0)
		return 0;
	for (size_t i = 0; i < s->n; i++) {
		const struct range *r = &s->v[i];
		if (r->start < off + len && off < r->start + r->len)
			return 1;
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Disk image                                                                */

static struct {
	int fd;
	int is_memfd;
} img = { .fd = -1 };

static time_t start_time;

/* ------------------------------------------------------------------------ */
/* /data tree                                                                */

struct node {
	char *name;
	mode_t mode;
	uid_t uid;
	gid_t gid;
	struct node *parent;
	struct node *children;
	struct node *next;
	char *data;
	size_t size;
	size_t cap;
	struct timespec atime, mtime, ctime;
	unsigned open_count;
	int unlinked;
};

static pthread_mutex_t tree_lock = PTHREAD_MUTEX_INITIALIZER;
static struct node *data_root;
static uint64_t data_capacity = DEFAULT_DATA_SIZE;
static uint64_t data_used;  /* bytes of file contents (incl. unlinked-open) */
static uint64_t node_count; /* inodes in use */

static void now(struct timespec *ts)
{
	clock_gettime(CLOCK_REALTIME, ts);
}

static struct node *node_new(const char *name, mode_t mode, uid_t uid, gid_t gid)
{
	struct node *n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->name = strdup(name);
	if (!n->name) {
		free(n);
		return NULL;
	}
	n->mode = mode;
	n->uid = uid;
	n->gid = gid;
	now(&n->atime);
	n->mtime = n->ctime = n->atime;
	node_count++;
	return n;
}

/* Only call from FUSE request handlers (uses the request context). */
static struct node *node_new_ctx(const char *name, mode_t mode)
{
	struct fuse_context *ctx = fuse_get_context();
	return node_new(name, mode, ctx->uid, ctx->gid);
}

static void node_free(struct node *n)
{
	data_used -= n->size;
	node_count--;
	free(n->data);
	free(n->name);
	free(n);
}

/* Drop a node if it is unlinked and no longer open.  tree_lock held. */
static void node_maybe_free(struct node *n)
{
	if (n->unlinked && n->open_count == 0)
		node_free(n);
}

static void node_detach(struct node *n)
{
	struct node **pp = &n->parent->children;
	while (*pp && *pp != n)
		pp = &(*pp)->next;
	if (*pp)
		*pp = n->next;
	n->next = NULL;
	n->parent = NULL;
}

static void node_attach(struct node *dir, struct node *n)
{
	n->parent = dir;
	n->next = dir->children;
	dir->children = n;
}

static struct node *node_child(struct node *dir, const char *name, size_t len)
{
	for (struct node *c = dir->children; c; c = c->next)
		if (strlen(c->name) == len && memcmp(c->name, name, len) == 0)
			return c;
	return NULL;
}

enum kind { K_NONE, K_ROOT, K_IMAGE, K_CONTROL, K_DATA };

/* Classify a path.  For K_DATA, *rest points at the part below "/data"
 * ("" for /data itself, otherwise starting with '/'). */
static enum kind classify(const char *path, const char **rest)
{
	if (!path)
		return K_NONE;
	if (strcmp(path, "/") == 0)
		return K_ROOT;
	if (strcmp(path, "/disk.img") == 0)
		return K_IMAGE;
	if (strcmp(path, "/control") == 0)
		return K_CONTROL;
	if (strncmp(path, "/data", 5) == 0 && (path[5] == '\0' || path[5] == '/')) {
		if (rest)
			*rest = path + 5;
		return K_DATA;
	}
	return K_NONE;
}

/* Resolve the part below /data.  tree_lock held.  Returns NULL and sets *err. */
static struct node *walk(const char *rest, int *err)
{
	struct node *n = data_root;
	const char *p = rest;
	while (*p) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		const char *e = strchr(p, '/');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		if (!S_ISDIR(n->mode)) {
			*err = -ENOTDIR;
			return NULL;
		}
		n = node_child(n, p, len);
		if (!n) {
			*err = -ENOENT;
			return NULL;
		}
		p += len;
	}
	return n;
}

/* Resolve the parent directory of a path below /data and its last component.
 * tree_lock held. */
static struct node *walk_parent(const char *path, const char **name, int *err)
{
	const char *rest;
	if (classify(path, &rest) != K_DATA) {
		*err = (classify(path, NULL) == K_NONE) ? -EACCES : -EEXIST;
		return NULL;
	}
	if (*rest == '\0') {
		*err = -EEXIST; /* /data itself */
		return NULL;
	}
	const char *slash = strrchr(path, '/');
	*name = slash + 1;
	if (strlen(*name) > 255) {
		*err = -ENAMETOOLONG;
		return NULL;
	}
	size_t plen = (size_t)(slash - rest);
	char *pp = strndup(rest, plen);
	if (!pp) {
		*err = -ENOMEM;
		return NULL;
	}
	struct node *dir = walk(pp, err);
	free(pp);
	if (!dir)
		return NULL;
	if (!S_ISDIR(dir->mode)) {
		*err = -ENOTDIR;
		return NULL;
	}
	return dir;
}

static void fill_node_stat(const struct node *n, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_mode = n->mode;
	st->st_uid = n->uid;
	st->st_gid = n->gid;
	st->st_blksize = BLOCK;
	if (S_ISDIR(n->mode)) {
		nlink_t links = 2;
		for (struct node *c = n->children; c; c = c->next)
			if (S_ISDIR(c->mode))
				links++;
		st->st_nlink = links;
		st->st_size = BLOCK;
		st->st_blocks = BLOCK / 512;
	} else {
		st->st_nlink = n->unlinked ? 0 : 1;
		st->st_size = (off_t)n->size;
		st->st_blocks = (blkcnt_t)((n->size + BLOCK - 1) / BLOCK * (BLOCK / 512));
	}
	st->st_atim = n->atime;
	st->st_mtim = n->mtime;
	st->st_ctim = n->ctime;
}

/* Resize file contents, honouring the capacity of /data.  tree_lock held. */
static int node_resize(struct node *n, size_t size)
{
	if (size > n->size) {
		uint64_t grow = size - n->size;
		if (data_used + grow > data_capacity)
			return -ENOSPC;
	}
	if (size > n->cap) {
		size_t ncap = n->cap ? n->cap : 4096;
		while (ncap < size)
			ncap = ncap > SIZE_MAX / 2 ? size : ncap * 2;
		char *nd = realloc(n->data, ncap);
		if (!nd)
			return -ENOSPC;
		n->data = nd;
		n->cap = ncap;
	}
	if (size > n->size)
		memset(n->data + n->size, 0, size - n->size);
	data_used = data_used - n->size + size;
	n->size = size;
	now(&n->mtime);
	n->ctime = n->mtime;
	return 0;
}

static struct node *fh_node(const struct fuse_file_info *fi)
{
	return (fi && FH_IS_NODE(fi->fh)) ? (struct node *)(uintptr_t)fi->fh : NULL;
}

/* ------------------------------------------------------------------------ */
/* Control file                                                              */

struct errno_name {
	const char *name;
	int value;
};

static const struct errno_name errno_names[] = {
	{ "EDQUOT", EDQUOT }, { "ENOSPC", ENOSPC }, { "EIO", EIO },
	{ "EROFS", EROFS },   { "EACCES", EACCES }, { "EPERM", EPERM },
	{ "ENOMEM", ENOMEM }, { "EFBIG", EFBIG },   { "EAGAIN", EAGAIN },
	{ "EINTR", EINTR },   { "EBUSY", EBUSY },   { "ENOTCONN", ENOTCONN },
	{ "ESTALE", ESTALE }, { "ENODEV", ENODEV }, { "ENXIO", ENXIO },
	{ "ETIMEDOUT", ETIMEDOUT },
};

static int parse_errno(const char *s, int *out)
{
	if (strcmp(s, "0") == 0 || strcasecmp(s, "none") == 0 || strcasecmp(s, "off") == 0) {
		*out = 0;
		return 0;
	}
	for (size_t i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]); i++) {
		if (strcasecmp(s, errno_names[i].name) == 0) {
			*out = errno_names[i].value;
			return 0;
		}
	}
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || v <= 0 || v > 4095)
		return -1;
	*out = (int)v;
	return 0;
}

static const char *errno_to_name(int e)
{
	static __thread char buf[16];
	if (e == 0)
		return "none";
	for (size_t i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]); i++)
		if (errno_names[i].value == e)
			return errno_names[i].name;
	snprintf(buf, sizeof(buf), "%d", e);
	return buf;
}

/* Parse "123", "0x10", "4K", "64M", "1G", "64MiB" (suffixes are powers of 1024). */
static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	if (!s || !*s || *s == '-')
		return -1;
	/* decimal, or hex with 0x; no octal surprises for "010" */
	int base = (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) ? 16 : 10;
	errno = 0;
	unsigned long long v = strtoull(s, &end, base);
	if (errno || end == s)
		return -1;
	unsigned shift = 0;
	if (*end) {
		switch (toupper((unsigned char)*end)) {
		case 'K': shift = 10; break;
		case 'M': shift = 20; break;
		case 'G': shift = 30; break;
		case 'T': shift = 40; break;
		default: return -1;
		}
		end++;
		if (strcasecmp(end, "iB") == 0 || strcasecmp(end, "B") == 0)
			end += strlen(end);
		if (*end)
			return -1;
	}
	if (shift && v > (UINT64_MAX >> shift))
		return -1;
	*out = (uint64_t)v << shift;
	return 0;
}

enum cmd_type {
	C_EIO,
	C_EIO_WRITE,
	C_CLEAR,
	C_STATFS_BLOCK,
	C_WRITE_ERRNO,
	C_STATFS_ERRNO,
	C_DATA_SIZE,
};

struct cmd {
	enum cmd_type type;
	uint64_t a, b;
	int v;
};

static int parse_onoff(const char *s, int *out)
{
	if (strcmp(s, "on") == 0 || strcmp(s, "1") == 0 || strcmp(s, "true") == 0) {
		*out = 1;
		return 0;
	}
	if (strcmp(s, "off") == 0 || strcmp(s, "0") == 0 || strcmp(s, "false") == 0) {
		*out = 0;
		return 0;
	}
	return -1;
}

/* Parse one command line (already trimmed, non-empty) into *c. */
static int parse_cmd(char *line, struct cmd *c)
{
	char *tok[4];
	int nt = 0;
	char *save = NULL;
	for (char *t = strtok_r(line, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
		if (nt == 4)
			return -1;
		tok[nt++] = t;
	}
	if (nt == 0)
		return -1;
	memset(c, 0, sizeof(*c));
	if ((strcmp(tok[0], "eio") == 0 || strcmp(tok[0], "eio-write") == 0) && nt == 3) {
		c->type = tok[0][3] ? C_EIO_WRITE : C_EIO;
		if (parse_size(tok[1], &c->a) || parse_size(tok[2], &c->b) || c->b == 0 ||
		    c->a + c->b < c->a)
			return -1;
		return 0;
	}
	if (strcmp(tok[0], "clear") == 0 && nt == 1) {
		c->type = C_CLEAR;
		return 0;
	}
	if (strcmp(tok[0], "statfs-block") == 0 && nt == 2) {
		c->type = C_STATFS_BLOCK;
		return parse_onoff(tok[1], &c->v);
	}
	if (strcmp(tok[0], "write-errno") == 0 && nt == 2) {
		c->type = C_WRITE_ERRNO;
		return parse_errno(tok[1], &c->v);
	}
	if (strcmp(tok[0], "statfs-errno") == 0 && nt == 2) {
		c->type = C_STATFS_ERRNO;
		return parse_errno(tok[1], &c->v);
	}
	if (strcmp(tok[0], "data-size") == 0 && nt == 2) {
		c->type = C_DATA_SIZE;
		return parse_size(tok[1], &c->a);
	}
	return -1;
}

static void set_statfs_block(int on)
{
	if (flt.statfs_block != on) {
		flt.statfs_block = on;
		flt.generation++;
		pthread_cond_broadcast(&flt.cond);
	}
}

static int apply_cmds(const struct cmd *cmds, size_t n)
{
	int ret = 0;
	pthread_mutex_lock(&flt.lock);
	for (size_t i = 0; i < n && ret == 0; i++) {
		const struct cmd *c = &cmds[i];
		switch (c->type) {
		case C_EIO:
			ret = rangeset_add(&flt.rd, c->a, c->b);
			break;
		case C_EIO_WRITE:
			ret = rangeset_add(&flt.wr, c->a, c->b);
			break;
		case C_CLEAR:
			flt.rd.n = 0;
			flt.wr.n = 0;
			flt.write_errno = 0;
			flt.statfs_errno = 0;
			set_statfs_block(0);
			break;
		case C_STATFS_BLOCK:
			set_statfs_block(c->v);
			break;
		case C_WRITE_ERRNO:
			flt.write_errno = c->v;
			break;
		case C_STATFS_ERRNO:
			flt.statfs_errno = c->v;
			break;
		case C_DATA_SIZE:
			pthread_mutex_lock(&tree_lock);
			data_capacity = c->a;
			pthread_mutex_unlock(&tree_lock);
			break;
		}
	}
	pthread_mutex_unlock(&flt.lock);
	return ret;
}

static int control_write(const char *buf, size_t size)
{
	char *text = strndup(buf, size);
	if (!text)
		return -ENOMEM;
	if (strlen(text) != size) { /* embedded NUL */
		free(text);
		return -EINVAL;
	}
	struct cmd *cmds = NULL;
	size_t ncmds = 0;
	int ret = (int)size;
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		while (isspace((unsigned char)*line))
			line++;
		size_t l = strlen(line);
		while (l && isspace((unsigned char)line[l - 1]))
			line[--l] = '\0';
		if (l == 0 || line[0] == '#')
			continue;
		char *copy = strdup(line);
		struct cmd *nc = realloc(cmds, (ncmds + 1) * sizeof(*cmds));
		if (!copy || !nc) {
			free(copy);
			if (nc)
				cmds = nc;
			ret = -ENOMEM;
			break;
		}
		cmds = nc;
		if (parse_cmd(line, &cmds[ncmds]) != 0) {
			errmsg("bad control command: '%s'", copy);
			free(copy);
			ret = -EINVAL;
			break;
		}
		free(copy);
		ncmds++;
	}
	if (ret >= 0) {
		int r = apply_cmds(cmds, ncmds);
		if (r < 0)
			ret = r;
	}
	free(cmds);
	free(text);
	return ret;
}

static char *control_text(size_t *len)
{
	char *out = NULL;
	size_t outlen = 0;
	FILE *f = open_memstream(&out, &outlen);
	if (!f)
		return NULL;
	struct stat st;
	uint64_t image_size = (fstat(img.fd, &st) == 0) ? (uint64_t)st.st_size : 0;
	pthread_mutex_lock(&flt.lock);
	pthread_mutex_lock(&tree_lock);
	fprintf(f, "# image-size %" PRIu64 "\n", image_size);
	fprintf(f, "# data-used %" PRIu64 "\n", data_used);
	fprintf(f, "data-size %" PRIu64 "\n", data_capacity);
	pthread_mutex_unlock(&tree_lock);
	for (size_t i = 0; i < flt.rd.n; i++)
		fprintf(f, "eio %" PRIu64 " %" PRIu64 "\n", flt.rd.v[i].start, flt.rd.v[i].len);
	for (size_t i = 0; i < flt.wr.n; i++)
		fprintf(f, "eio-write %" PRIu64 " %" PRIu64 "\n", flt.wr.v[i].start, flt.wr.v[i].len);
	fprintf(f, "write-errno %s\n", errno_to_name(flt.write_errno));
	fprintf(f, "statfs-errno %s\n", errno_to_name(flt.statfs_errno));
	fprintf(f, "statfs-block %s\n", flt.statfs_block ? "on" : "off");
	fprintf(f, "# statfs-blocked-now %" PRIu64 "\n", flt.statfs_blocked_now);
	fprintf(f, "# statfs-calls %" PRIu64 "\n", flt.statfs_calls);
	fprintf(f, "# read-eio-hits %" PRIu64 "\n", flt.read_eio_hits);
	fprintf(f, "# write-eio-hits %" PRIu64 "\n", flt.write_eio_hits);
	fprintf(f, "# write-errno-hits %" PRIu64 "\n", flt.write_errno_hits);
	pthread_mutex_unlock(&flt.lock);
	if (fclose(f) != 0) {
		free(out);
		return NULL;
	}
	*len = outlen;
	return out;
}

/* ------------------------------------------------------------------------ */
/* FUSE operations                                                           */

static int session_exited(void)
{
	struct fuse_context *ctx = fuse_get_context();
	if (!ctx || !ctx->fuse)
		return 0;
	struct fuse_session *se = fuse_get_session(ctx->fuse);
	return se ? fuse_session_exited(se) : 0;
}

static void *tfs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	(void)conn;
	cfg->hard_remove = 1; /* no .fuse_hidden files; open files are refcounted */
	cfg->nullpath_ok = 1; /* read/write/... get the node through fi->fh */
	cfg->use_ino = 0;
	return NULL;
}

static void fixed_stat(enum kind k, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_uid = getuid();
	st->st_gid = getgid();
	st->st_atime = st->st_mtime = st->st_ctime = start_time;
	st->st_blksize = BLOCK;
	if (k == K_ROOT) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 3;
		st->st_size = BLOCK;
	} else if (k == K_CONTROL) {
		st->st_mode = S_IFREG | 0644;
		st->st_nlink = 1;
		st->st_size = 0;
	} else if (k == K_IMAGE) {
		struct stat b;
		st->st_mode = S_IFREG | 0644;
		st->st_nlink = 1;
		if (fstat(img.fd, &b) == 0) {
			st->st_size = b.st_size;
			st->st_blocks = b.st_blocks;
			st->st_mtim = b.st_mtim;
			st->st_ctim = b.st_ctim;
		}
	}
}

static int tfs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	if (fi && fi->fh != FH_NONE) {
		if (FH_IS_NODE(fi->fh)) {
			pthread_mutex_lock(&tree_lock);
			fill_node_stat(fh_node(fi), st);
			pthread_mutex_unlock(&tree_lock);
			return 0;
		}
		fixed_stat(fi->fh == FH_IMAGE ? K_IMAGE : fi->fh == FH_CONTROL ? K_CONTROL : K_ROOT, st);
		return 0;
	}
	const char *rest;
	enum kind k = classify(path, &rest);
	if (k == K_NONE)
		return -ENOENT;
	if (k != K_DATA) {
		fixed_stat(k, st);
		return 0;
	}
	int err = 0;
	pthread_mutex_lock(&tree_lock);
	struct node *n = walk(rest, &err);
	if (n)
		fill_node_stat(n, st);
	pthread_mutex_unlock(&tree_lock);
	return n ? 0 : err;
}

static int tfs_opendir(const char *path, struct fuse_file_info *fi)
{
	const char *rest;
	enum kind k = classify(path, &rest);
	if (k == K_ROOT) {
		fi->fh = FH_ROOT;
		return 0;
	}
	if (k != K_DATA)
		return k == K_NONE ? -ENOENT : -ENOTDIR;
	int err = 0;
	pthread_mutex_lock(&tree_lock);
	struct node *n = walk(rest, &err);
	if (n && !S_ISDIR(n->mode)) {
		n = NULL;
		err = -ENOTDIR;
	}
	if (n) {
		n->open_count++;
		fi->fh = (uint64_t)(uintptr_t)n;
	}
	pthread_mutex_unlock(&tree_lock);
	return n ? 0 : err;
}

static int tfs_releasedir(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	struct node *n = fh_node(fi);
	if (n) {
		pthread_mutex_lock(&tree_lock);
		n->open_count--;
		node_maybe_free(n);
		pthread_mutex_unlock(&tree_lock);
	}
	return 0;
}

static int tfs_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t offset,
		       struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	(void)path;
	(void)offset;
	(void)flags;
	filler(buf, ".", NULL, 0, 0);
	filler(buf, "..", NULL, 0, 0);
	if (fi->fh == FH_ROOT) {
		filler(buf, "disk.img", NULL, 0, 0);
		filler(buf, "control", NULL, 0, 0);
		filler(buf, "data", NULL, 0, 0);
		return 0;
	}
	struct node *dir = fh_node(fi);
	if (!dir)
		return -EBADF;
	pthread_mutex_lock(&tree_lock);
	for (struct node *c = dir->children; c; c = c->next)
		filler(buf, c->name, NULL, 0, 0);
	pthread_mutex_unlock(&tree_lock);
	return 0;
}

static int tfs_mkdir(const char *path, mode_t mode)
{
	const char *name;
	int err = 0;
	pthread_mutex_lock(&tree_lock);
	struct node *dir = walk_parent(path, &name, &err);
	if (dir) {
		if (node_child(dir, name, strlen(name)))
			err = -EEXIST;
		else if (node_count >= MAX_INODES)
			err = -ENOSPC;
		else {
			struct node *n = node_new_ctx(name, S_IFDIR | (mode & 07777));
			if (!n)
				err = -ENOMEM;
			else {
				node_attach(dir, n);
				now(&dir->mtime);
				dir->ctime = dir->mtime;
			}
		}
	}
	pthread_mutex_unlock(&tree_lock);
	return err;
}

static int remove_common(const char *path, int want_dir)
{
	const char *rest;
	enum kind k = classify(path, &rest);
	if (k != K_DATA)
		return k == K_NONE ? -ENOENT : (want_dir && k != K_ROOT ? -ENOTDIR : -EACCES);
	if (*rest == '\0')
		return -EBUSY; /* /data itself */
	int err = 0;
	pthread_mutex_lock(&tree_lock);
	struct node *n = walk(rest, &err);
	if (n) {
		if (want_dir && !S_ISDIR(n->mode))
			err = -ENOTDIR;
		else if (!want_dir && S_ISDIR(n->mode))
			err = -EISDIR;
		else if (want_dir && n->children)
			err = -ENOTEMPTY;
		else {
			struct node *dir = n->parent;
			node_detach(n);
			now(&dir->mtime);
			dir->ctime = dir->mtime;
			n->unlinked = 1;
			node_maybe_free(n);
		}
	}
	pthread_mutex_unlock(&tree_lock);
	return err;
}

static int tfs_unlink(const char *path)
{
	return remove_common(path, 0);
}

static int tfs_rmdir(const char *path)
{
	return remove_common(path, 1);
}

static int tfs_rename(const char *from, const char *to, unsigned int flags)
{
	const char *rfrom;
	if (classify(from, &rfrom) != K_DATA || *rfrom == '\0')
		return classify(from, NULL) == K_NONE ? -ENOENT : -EACCES;
	if (flags & ~(unsigned int)RENAME_NOREPLACE)
		return -EINVAL;
	int err = 0;
	const char *name;
	pthread_mutex_lock(&tree_lock);
	struct node *src = walk(rfrom, &err);
	struct node *dir = src ? walk_parent(to, &name, &err) : NULL;
	if (src && dir) {
		struct node *dst = node_child(dir, name, strlen(name));
		/* refuse to move a directory below itself */
		for (struct node *p = dir; p; p = p->parent)
			if (p == src)
				err = -EINVAL;
		if (err) {
			/* nothing */
		} else if (dst == src) {
			/* same file: nothing to do */
		} else if (dst && (flags & RENAME_NOREPLACE)) {
			err = -EEXIST;
		} else if (dst && S_ISDIR(src->mode) && !S_ISDIR(dst->mode)) {
			err = -ENOTDIR;
		} else if (dst && !S_ISDIR(src->mode) && S_ISDIR(dst->mode)) {
			err = -EISDIR;
		} else if (dst && dst->children) {
			err = -ENOTEMPTY;
		} else {
			char *nn = strdup(name);
			if (!nn) {
				err = -ENOMEM;
			} else {
				if (dst) {
					node_detach(dst);
					dst->unlinked = 1;
					node_maybe_free(dst);
				}
				struct node *odir = src->parent;
				node_detach(src);
				free(src->name);
				src->name = nn;
				node_attach(dir, src);
				now(&dir->mtime);
				dir->ctime = odir->mtime = odir->ctime = src->ctime = dir->mtime;
			}
		}
	}
	pthread_mutex_unlock(&tree_lock);
	return err;
}

static int tfs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	if (size < 0)
		return -EINVAL;
	struct node *n = fh_node(fi);
	enum kind k = K_NONE;
	const char *rest = "";
	if (!n) {
		if (fi && fi->fh != FH_NONE)
			k = fi->fh == FH_IMAGE ? K_IMAGE : fi->fh == FH_CONTROL ? K_CONTROL : K_ROOT;
		else
			k = classify(path, &rest);
		if (k == K_NONE)
			return -ENOENT;
		if (k == K_ROOT)
			return -EISDIR;
		if (k == K_CONTROL)
			return 0; /* "echo cmd > control" truncates first: ignore */
		if (k == K_IMAGE)
			return ftruncate(img.fd, size) == 0 ? 0 : -errno;
	}
	int err = 0;
	pthread_mutex_lock(&tree_lock);
	if (!n)
		n = walk(rest, &err);
	if (n) {
		if (S_ISDIR(n->mode))
			err = -EISDIR;
		else
			err = node_resize(n, (size_t)size);
	}
	pthread_mutex_unlock(&tree_lock);
	return err;
}

static int tfs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct node *n = fh_node(fi);
	const char *rest;
	if (!n && (fi || classify(path, &rest) != K_DATA))
		return (fi || classify(path, NULL) != K_NONE) ? 0 : -ENOENT;
	int err = 0;
	pthread_mutex_lock(&tree_lock);
	if (!n)
		n = walk(rest, &err);
	if (n) {
		n->mode = (n->mode & S_IFMT) | (mode & 07777);
		now(&n->ctime);
	}
	pthread_mutex_unlock(&tree_lock);
	return err;
}

static int tfs_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
	struct node *n = fh_node(fi);
	const char *rest;
	if (!n && (fi || classify(path, &rest) != K_DATA))
		return (fi || classify(path, NULL) != K_NONE) ? 0 : -ENOENT;
	int err = 0;
	pthread_mutex_lock(&tree_lock);
	if (!n)
		n = walk(rest, &err);
	if (n) {
		if (uid != (uid_t)-1)
			n->uid = uid;
		if (gid != (gid_t)-1)
			n->gid = gid;
		now(&n->ctime);
	}
	pthread_mutex_unlock(&tree_lock);
	return err;
}

static void set_time(struct timespec *dst, const struct timespec *src)
{
	if (src->tv_nsec == UTIME_OMIT)
		return;
	if (src->tv_nsec == UTIME_NOW)
		now(dst);
	else
		*dst = *src;
}

static int tfs_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
	struct node *n = fh_node(fi);
	const char *rest;
	if (!n && (fi || classify(path, &rest) != K_DATA))
		return (fi || classify(path, NULL) != K_NONE) ? 0 : -ENOENT;
	int err = 0;
	pthread_mutex_lock(&tree_lock);
	if (!n)
		n = walk(rest, &err);
	if (n) {
		if (tv) {
			set_time(&n->atime, &tv[0]);
			set_time(&n->mtime, &tv[1]);
		} else {
			now(&n->atime);
			n->mtime = n->atime;
		}
		now(&n->ctime);
	}
	pthread_mutex_unlock(&tree_lock);
	return err;
}

static int tfs_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	const char *name;
	int err = 0;
	pthread_mutex_lock(&tree_lock);
	struct node *dir = walk_parent(path, &name, &err);
	struct node *n = NULL;
	if (dir) {
		n = node_child(dir, name, strlen(name));
		if (n && (fi->flags & O_EXCL)) {
			err = -EEXIST;
			n = NULL;
		} else if (n && S_ISDIR(n->mode)) {
			err = -EISDIR;
			n = NULL;
		} else if (n) {
			if (fi->flags & O_TRUNC)
				err = node_resize(n, 0);
		} else if (node_count >= MAX_INODES) {
			err = -ENOSPC;
		} else {
			n = node_new_ctx(name, S_IFREG | (mode & 07777));
			if (!n)
				err = -ENOMEM;
			else {
				node_attach(dir, n);
				now(&dir->mtime);
				dir->ctime = dir->mtime;
			}
		}
		if (n && !err) {
			n->open_count++;
			fi->fh = (uint64_t)(uintptr_t)n;
		}
	}
	pthread_mutex_unlock(&tree_lock);
	return err;
}

static int tfs_open(const char *path, struct fuse_file_info *fi)
{
	const char *rest;
	enum kind k = classify(path, &rest);
	switch (k) {
	case K_NONE:
		return -ENOENT;
	case K_ROOT:
		return -EISDIR;
	case K_IMAGE:
		/* Bypass the kernel page cache so that every read/write of the
		 * image (including those issued by a loop device) reaches us. */
		fi->direct_io = 1;
		fi->fh = FH_IMAGE;
		if ((fi->flags & O_TRUNC) && ftruncate(img.fd, 0) != 0)
			return -errno;
		return 0;
	case K_CONTROL:
		fi->direct_io = 1;
		fi->fh = FH_CONTROL;
		return 0;
	case K_DATA:
		break;
	}
	int err = 0;
	pthread_mutex_lock(&tree_lock);
	struct node *n = walk(rest, &err);
	if (n && S_ISDIR(n->mode)) {
		err = -EISDIR;
		n = NULL;
	}
	if (n && (fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY)
		err = node_resize(n, 0);
	if (n && !err) {
		n->open_count++;
		fi->fh = (uint64_t)(uintptr_t)n;
	}
	pthread_mutex_unlock(&tree_lock);
	return err;
}

static int tfs_release(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	struct node *n = fh_node(fi);
	if (n) {
		pthread_mutex_lock(&tree_lock);
		n->open_count--;
		node_maybe_free(n);
		pthread_mutex_unlock(&tree_lock);
	}
	return 0;
}

static int tfs_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)path;
	if (off < 0)
		return -EINVAL;
	if (fi->fh == FH_IMAGE) {
		pthread_mutex_lock(&flt.lock);
		int hit = rangeset_hit(&flt.rd, (uint64_t)off, size);
		if (hit)
			flt.read_eio_hits++;
		pthread_mutex_unlock(&flt.lock);
		if (hit)
			return -EIO;
		size_t done = 0;
		while (done < size) {
			ssize_t r = pread(img.fd, buf + done, size - done, off + (off_t)done);
			if (r < 0) {
				if (errno == EINTR)
					continue;
				return done ? (int)done : -errno;
			}
			if (r == 0)
				break;
			done += (size_t)r;
		}
		return (int)done;
	}
	if (fi->fh == FH_CONTROL) {
		size_t len = 0;
		char *text = control_text(&len);
		if (!text)
			return -ENOMEM;
		size_t n = 0;
		if ((size_t)off < len) {
			n = len - (size_t)off;
			if (n > size)
				n = size;
			memcpy(buf, text + off, n);
		}
		free(text);
		return (int)n;
	}
	struct node *n = fh_node(fi);
	if (!n)
		return -EBADF;
	pthread_mutex_lock(&tree_lock);
	size_t cnt = 0;
	if ((size_t)off < n->size) {
		cnt = n->size - (size_t)off;
		if (cnt > size)
			cnt = size;
		memcpy(buf, n->data + off, cnt);
	}
	now(&n->atime);
	pthread_mutex_unlock(&tree_lock);
	return (int)cnt;
}

static int tfs_write(const char *path, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	(void)path;
	if (off < 0)
		return -EINVAL;
	if (fi->fh == FH_IMAGE) {
		pthread_mutex_lock(&flt.lock);
		int hit = rangeset_hit(&flt.wr, (uint64_t)off, size);
		if (hit)
			flt.write_eio_hits++;
		pthread_mutex_unlock(&flt.lock);
		if (hit)
			return -EIO;
		size_t done = 0;
		while (done < size) {
			ssize_t r = pwrite(img.fd, buf + done, size - done, off + (off_t)done);
			if (r < 0) {
				if (errno == EINTR)
					continue;
				return done ? (int)done : -errno;
			}
			done += (size_t)r;
		}
		return (int)done;
	}
	if (fi->fh == FH_CONTROL)
		return control_write(buf, size);
	struct node *n = fh_node(fi);
	if (!n)
		return -EBADF;
	pthread_mutex_lock(&flt.lock);
	int we = flt.write_errno;
	if (we)
		flt.write_errno_hits++;
	pthread_mutex_unlock(&flt.lock);
	if (we)
		return -we;
	int ret;
	pthread_mutex_lock(&tree_lock);
	size_t end = (size_t)off + size;
	if (end > n->size) {
		/* Short write up to the capacity, ENOSPC when nothing fits. */
		uint64_t room = data_capacity > data_used ? data_capacity - data_used : 0;
		if (end - n->size > room) {
			end = n->size + (size_t)room;
			if (end <= (size_t)off) {
				pthread_mutex_unlock(&tree_lock);
				return -ENOSPC;
			}
			size = end - (size_t)off;
		}
		ret = node_resize(n, end);
		if (ret) {
			pthread_mutex_unlock(&tree_lock);
			return ret;
		}
	}
	memcpy(n->data + off, buf, size);
	now(&n->mtime);
	n->ctime = n->mtime;
	pthread_mutex_unlock(&tree_lock);
	return (int)size;
}

static int tfs_statfs(const char *path, struct statvfs *sv)
{
	(void)path;
	pthread_mutex_lock(&flt.lock);
	flt.statfs_calls++;
	if (flt.statfs_block) {
		flt.statfs_blocked_now++;
		uint64_t gen = flt.generation;
		/* Wake up periodically to notice an aborted connection or an
		 * exiting process, otherwise this thread could never be joined. */
		while (flt.statfs_block && flt.generation == gen && !session_exited()) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 100 * 1000 * 1000;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&flt.cond, &flt.lock, &ts);
		}
		flt.statfs_blocked_now--;
	}
	int se = flt.statfs_errno;
	pthread_mutex_unlock(&flt.lock);
	if (se)
		return -se;

	struct stat st;
	uint64_t image_size = (fstat(img.fd, &st) == 0) ? (uint64_t)st.st_size : 0;
	memset(sv, 0, sizeof(*sv));
	pthread_mutex_lock(&tree_lock);
	uint64_t used_blocks = (data_used + BLOCK - 1) / BLOCK;
	uint64_t cap_blocks = data_capacity / BLOCK;
	uint64_t free_blocks = cap_blocks > used_blocks ? cap_blocks - used_blocks : 0;
	uint64_t files = node_count;
	pthread_mutex_unlock(&tree_lock);
	sv->f_bsize = BLOCK;
	sv->f_frsize = BLOCK;
	sv->f_blocks = (fsblkcnt_t)((image_size + BLOCK - 1) / BLOCK + used_blocks + free_blocks);
	sv->f_bfree = (fsblkcnt_t)free_blocks;
	sv->f_bavail = (fsblkcnt_t)free_blocks;
	sv->f_files = MAX_INODES;
	sv->f_ffree = (fsfilcnt_t)(MAX_INODES > files ? MAX_INODES - files : 0);
	sv->f_favail = sv->f_ffree;
	sv->f_namemax = 255;
	return 0;
}

static int tfs_flush(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	(void)fi;
	return 0;
}

static int tfs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	(void)path;
	if (fi->fh == FH_IMAGE && !img.is_memfd) {
		int r = datasync ? fdatasync(img.fd) : fsync(img.fd);
		return r == 0 ? 0 : -errno;
	}
	return 0;
}

static int tfs_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi)
{
	(void)path;
	(void)datasync;
	(void)fi;
	return 0;
}

static int tfs_fallocate(const char *path, int mode, off_t off, off_t len,
			 struct fuse_file_info *fi)
{
	(void)path;
	if (off < 0 || len <= 0)
		return -EINVAL;
	if (fi->fh == FH_IMAGE) {
		/* Lets discard through a loop device punch holes in the image. */
		return fallocate(img.fd, mode, off, len) == 0 ? 0 : -errno;
	}
	struct node *n = fh_node(fi);
	if (!n)
		return -EOPNOTSUPP;
	if (mode & ~FALLOC_FL_KEEP_SIZE)
		return -EOPNOTSUPP;
	int err = 0;
	pthread_mutex_lock(&tree_lock);
	size_t end = (size_t)off + (size_t)len;
	if (!(mode & FALLOC_FL_KEEP_SIZE) && end > n->size)
		err = node_resize(n, end);
	pthread_mutex_unlock(&tree_lock);
	return err;
}

static const struct fuse_operations tfs_ops = {
	.init = tfs_init,
	.getattr = tfs_getattr,
	.opendir = tfs_opendir,
	.readdir = tfs_readdir,
	.releasedir = tfs_releasedir,
	.mkdir = tfs_mkdir,
	.unlink = tfs_unlink,
	.rmdir = tfs_rmdir,
	.rename = tfs_rename,
	.truncate = tfs_truncate,
	.chmod = tfs_chmod,
	.chown = tfs_chown,
	.utimens = tfs_utimens,
	.create = tfs_create,
	.open = tfs_open,
	.release = tfs_release,
	.read = tfs_read,
	.write = tfs_write,
	.statfs = tfs_statfs,
	.flush = tfs_flush,
	.fsync = tfs_fsync,
	.fsyncdir = tfs_fsyncdir,
	.fallocate = tfs_fallocate,
};

/* ------------------------------------------------------------------------ */
/* Command line                                                              */

struct options {
	char *image_size;
	char *backing;
	char *data_size;
	int show_help;
};

#define OPT(t, p) { t, offsetof(struct options, p), 1 }
static const struct fuse_opt option_spec[] = {
	OPT("--image-size=%s", image_size),
	OPT("image_size=%s", image_size),
	OPT("--backing=%s", backing),
	OPT("backing=%s", backing),
	OPT("--data-size=%s", data_size),
	OPT("data_size=%s", data_size),
	OPT("-h", show_help),
	OPT("--help", show_help),
	FUSE_OPT_END
};

static void usage(const char *prog)
{
	fprintf(stderr,
		"usage: %s [options] MOUNTPOINT\n"
		"\n"
		"storwatch test file system (exposes /disk.img, /data/, /control)\n"
		"\n"
		"    --image-size=BYTES   size of disk.img (default 64M; K/M/G suffixes)\n"
		"    --backing=PATH       file holding the image data (default: memory)\n"
		"    --data-size=BYTES    capacity of /data (default 64M)\n"
		"\n",
		prog);
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct options opts = { 0 };
	if (fuse_opt_parse(&args, &opts, option_spec, NULL) == -1)
		return 1;
	if (opts.show_help) {
		usage(argv[0]);
		if (fuse_opt_add_arg(&args, "--help") != 0)
			return 1;
		args.argv[0][0] = '\0';
		int r = fuse_main(args.argc, args.argv, &tfs_ops, NULL);
		fuse_opt_free_args(&args);
		return r;
	}

	uint64_t image_size = DEFAULT_IMAGE_SIZE;
	int have_size = 0;
	if (opts.image_size) {
		if (parse_size(opts.image_size, &image_size) != 0 || image_size > (uint64_t)INT64_MAX) {
			errmsg("invalid --image-size: %s", opts.image_size);
			return 1;
		}
		have_size = 1;
	}
	if (opts.data_size && parse_size(opts.data_size, &data_capacity) != 0) {
		errmsg("invalid --data-size: %s", opts.data_size);
		return 1;
	}

	if (opts.backing) {
		img.fd = open(opts.backing, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
		if (img.fd < 0) {
			errmsg("cannot open backing file %s: %s", opts.backing, strerror(errno));
			return 1;
		}
		struct stat st;
		if (fstat(img.fd, &st) != 0) {
			errmsg("cannot stat %s: %s", opts.backing, strerror(errno));
			return 1;
		}
		/* An existing non-empty backing file keeps its size unless
		 * --image-size is given. */
		if (have_size || st.st_size == 0) {
			if (ftruncate(img.fd, (off_t)image_size) != 0) {
				errmsg("cannot resize %s: %s", opts.backing, strerror(errno));
				return 1;
			}
		}
	} else {
		img.fd = memfd_create(PROG "-image", MFD_CLOEXEC);
		if (img.fd < 0) {
			errmsg("memfd_create: %s", strerror(errno));
			return 1;
		}
		img.is_memfd = 1;
		if (ftruncate(img.fd, (off_t)image_size) != 0) {
			errmsg("cannot size image: %s", strerror(errno));
			return 1;
		}
	}

	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_REALTIME);
	pthread_cond_init(&flt.cond, &ca);
	pthread_condattr_destroy(&ca);

	start_time = time(NULL);
	data_root = node_new("data", S_IFDIR | 0777, getuid(), getgid());
	if (!data_root) {
		errmsg("out of memory");
		return 1;
	}

#if defined(FUSE_MAKE_VERSION) && FUSE_VERSION >= FUSE_MAKE_VERSION(3, 12)
	/* Every blocked statfs holds a worker thread: allow plenty of them
	 * (libfuse's default is 10).  Setting max_idle_threads explicitly
	 * avoids the bogus "Ignoring invalid max threads value 4294967295"
	 * warning of libfuse 3.14 (libfuse issue #1003).  Inserted first so
	 * that values given by the user win. */
	if (fuse_opt_insert_arg(&args, 1, "-omax_threads=64,max_idle_threads=10") != 0) {
		errmsg("out of memory");
		return 1;
	}
#endif
	int ret = fuse_main(args.argc, args.argv, &tfs_ops, NULL);
	fuse_opt_free_args(&args);
	close(img.fd);
	return ret;
}
