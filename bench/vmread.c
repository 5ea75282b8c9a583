// vmread: the bandwidth limits a dump and an eager restore of MIB MiB of
// anonymous memory run against, measured on this machine:
//   memcpy           copy MIB MiB (touched) in CHUNK pieces into a reused buffer
//   readv            process_vm_readv from a touched child, CHUNK-sized iovecs
//   readv_4k         the same with 4 KiB iovecs (IOV_MAX per call)
//   write_NAME       write(2) of MIB MiB in CHUNK pieces into a new file in DIR
//                    (--write NAME:DIR, repeatable; e.g. a tmpfs, or a disk
//                    file system = page cache), no fsync
//   writev_fresh     process_vm_writev into an untouched mapping of a fresh
//                    child (includes its page faults: what eager restore pays)
//   writev_touched   the same into an already touched mapping (copy only)
//   writev_fresh_thp writev_fresh with MADV_HUGEPAGE on the child's mapping
//   populate         MADV_POPULATE_WRITE of a fresh mapping (fault + zeroing)
// Each figure is the best of REPS runs, in GB/s (10^9 bytes/s), printed as
// "name gbps" lines. Usage:
//   vmread [--mib N] [--chunk-mib N] [--reps N] [--write NAME:DIR]...
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL

static size_t total, chunk;
static int reps = 3;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) { perror(what); exit(1); }

enum { UNTOUCHED, TOUCHED, HUGE_UNTOUCHED };

static void *map_anon(size_t len, int touch)
{
	unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) die("mmap");
	if (touch == HUGE_UNTOUCHED && madvise(p, len, MADV_HUGEPAGE) < 0) die("MADV_HUGEPAGE");
	if (touch == TOUCHED)
		for (size_t i = 0; i < len; i += PAGE) memset(p + i, (int)(i / PAGE) | 1, PAGE);
	return p;
}

// A child that maps LEN bytes (touched or not), reports the address on a pipe
// and waits to be killed.
static pid_t spawn_child(size_t len, int touch, void **addr)
{
	int fds[2];
	if (pipe(fds) < 0) die("pipe");
	pid_t pid = fork();
	if (pid < 0) die("fork");
	if (pid == 0) {
		void *p = map_anon(len, touch);
		if (write(fds[1], &p, sizeof p) != sizeof p) _exit(1);
		for (;;) pause();
	}
	close(fds[1]);
	if (read(fds[0], addr, sizeof *addr) != sizeof *addr) die("child");
	close(fds[0]);
	return pid;
}

static void reap(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

static void report(const char *name, double best)
{
	printf("%s %.2f\n", name, (double)total / best / 1e9);
	fflush(stdout);
}

static void bench_memcpy(unsigned char *src, unsigned char *dst)
{
	double best = 1e9;
	for (int r = 0; r < reps; r++) {
		double t = now();
		for (size_t off = 0; off < total; off += chunk) memcpy(dst, src + off, chunk);
		t = now() - t;
		if (t < best) best = t;
	}
	report("memcpy", best);
}

static void bench_readv(unsigned char *dst, size_t iov_len, const char *name)
{
	void *raddr;
	pid_t pid = spawn_child(total, TOUCHED, &raddr);
	size_t n = chunk / iov_len;
	if (n > IOV_MAX) n = IOV_MAX;
	struct iovec *local = calloc(n, sizeof *local), *remote = calloc(n, sizeof *remote);
	double best = 1e9;
	for (int r = 0; r < reps; r++) {
		double t = now();
		for (size_t off = 0; off < total;) {
			size_t k = 0;
			for (; k < n && off < total; k++, off += iov_len) {
				local[k].iov_base = dst + k * iov_len;
				local[k].iov_len = iov_len;
				remote[k].iov_base = (unsigned char *)raddr + off;
				remote[k].iov_len = iov_len;
			}
			ssize_t got = process_vm_readv(pid, local, k, remote, k, 0);
			if (got != (ssize_t)(k * iov_len)) die("process_vm_readv");
		}
		t = now() - t;
		if (t < best) best = t;
	}
	reap(pid);
	free(local);
	free(remote);
	report(name, best);
}

static void bench_write(unsigned char *src, const char *spec)
{
	char path[PATH_MAX], name[128];
	const char *colon = strchr(spec, ':');
	if (!colon || colon == spec || (size_t)(colon - spec) > 64) { fprintf(stderr, "vmread: --write NAME:DIR\n"); exit(2); }
	snprintf(name, sizeof name, "write_%.*s", (int)(colon - spec), spec);
	snprintf(path, sizeof path, "%s/vmread-%d.tmp", colon + 1, getpid());
	double best = 1e9;
	for (int r = 0; r < reps; r++) {
		double t = now();
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd < 0) die(path);
		for (size_t off = 0; off < total; off += chunk)
			if (write(fd, src + off, chunk) != (ssize_t)chunk) die("write");
		close(fd);
		t = now() - t;
		unlink(path);
		if (t < best) best = t;
	}
	report(name, best);
}

static void bench_writev(unsigned char *src, int mode, const char *name)
{
	double best = 1e9;
	for (int r = 0; r < reps; r++) {
		void *raddr;
		pid_t pid = spawn_child(total, mode, &raddr);
		double t = now();
		for (size_t off = 0; off < total; off += chunk) {
			struct iovec l = { src + off, chunk }, rm = { (unsigned char *)raddr + off, chunk };
			if (process_vm_writev(pid, &l, 1, &rm, 1, 0) != (ssize_t)chunk) die("process_vm_writev");
		}
		t = now() - t;
		reap(pid);
		if (t < best) best = t;
	}
	report(name, best);
}

static void bench_populate(void)
{
	double best = 1e9;
	for (int r = 0; r < reps; r++) {
		void *p = map_anon(total, UNTOUCHED);
		double t = now();
		if (madvise(p, total, 23 /* MADV_POPULATE_WRITE */) < 0) die("MADV_POPULATE_WRITE");
		t = now() - t;
		munmap(p, total);
		if (t < best) best = t;
	}
	report("populate", best);
}

int main(int argc, char **argv)
{
	size_t mib = 1024, chunk_mib = 64;
	const char *writes[16];
	int nwrites = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--mib") && i + 1 < argc) mib = strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--chunk-mib") && i + 1 < argc) chunk_mib = strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--write") && i + 1 < argc && nwrites < 16) writes[nwrites++] = argv[++i];
		else { fprintf(stderr, "usage: vmread [--mib N] [--chunk-mib N] [--reps N] [--write NAME:DIR]...\n"); return 2; }
	}
	total = mib << 20;
	chunk = chunk_mib << 20;
	if (!chunk || total % chunk) { fprintf(stderr, "vmread: --mib must be a multiple of --chunk-mib\n"); return 2; }
	unsigned char *src = map_anon(total, TOUCHED), *dst = map_anon(chunk, TOUCHED);
	bench_memcpy(src, dst);
	bench_readv(dst, chunk, "readv");
	bench_readv(dst, PAGE, "readv_4k");
	for (int i = 0; i < nwrites; i++) bench_write(src, writes[i]);
	bench_writev(src, UNTOUCHED, "writev_fresh");
	bench_writev(src, TOUCHED, "writev_touched");
	bench_writev(src, HUGE_UNTOUCHED, "writev_fresh_thp");
	bench_populate();
	return 0;
}
