/*
 * seccomp: seccomp filters survive a checkpoint, per thread.
 *
 * The main thread stacks two filters: A makes getppid, rt_sigaction and
 * get_robust_list fail with EPERM; B makes uname, sigaltstack and prctl
 * fail with ENOSYS. Both make getpgid fail, A with EPERM, B with ENOSYS:
 * the newest filter's errno wins, so the order of the filters shows. Then
 * two threads start (inheriting A and B); the first stacks C on itself
 * only: getsid and getpgid fail with ECHILD. The dump injects rt_sigaction,
 * sigaltstack, prctl and get_robust_list into these threads, and the
 * restore injects prctl after installing the filters: both must suspend
 * filtering while they work. After SIGUSR1 every thread checks that each
 * filtered call fails with its errno, that other calls work, and its
 * Seccomp, Seccomp_filters and NoNewPrivs lines in
 * /proc/thread-self/status.
 *
 * Argument "nnp": filters installed under no_new_privs (as an unprivileged
 * program must); "admin": without it, by CAP_SYS_ADMIN (as runc and crun
 * install a container's profile). "tsync": as "nnp", but no thread stacks C,
 * so all share one chain, and after restore the main thread stacks D
 * (getpgid fails with EACCES) with SECCOMP_FILTER_FLAG_TSYNC, which only
 * works if the threads still share their filters; every thread checks it
 * has D. "strict": no threads, strict mode, then a read that never returns
 * (what a checkpoint must refuse, leaving the program running).
 */
#include "zdtm.h"
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

static int nnp, tsync;
static volatile int synced; /* D installed (written before `go`) */

/* seccomp()'s result: with TSYNC, a thread id if that thread could not be synced. */
static long install(const long *nrs, int n, int err, unsigned flags)
{
	struct sock_filter f[32];
	struct sock_fprog prog;
	int k = 0, i;

	f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
	f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
	f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
	for (i = 0; i < n; i++) {
		f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nrs[i], 0, 1);
		f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | err);
	}
	f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	prog.len = k;
	prog.filter = f;
	return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
}

static void must_install(const long *nrs, int n, int err)
{
	if (install(nrs, n, err, 0))
		zdtm_fail("seccomp(SECCOMP_SET_MODE_FILTER): %s", strerror(errno));
}

/* The status value of `key` for the calling thread, or -1. */
static int status_of(const char *key)
{
	char line[256];
	size_t len = strlen(key);
	int v = -1;
	FILE *f = fopen("/proc/thread-self/status", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, len) && line[len] == ':')
			v = atoi(line + len + 1);
	fclose(f);
	return v;
}

/* Empty on success, else what is wrong. */
static void check(char *why, size_t n, int with_c)
{
	struct sigaction sa;
	struct utsname_buf { char b[6 * 65]; } u;
	stack_t ss;
	long head, len;
	pid_t sid;

	why[0] = 0;
#define EXPECT(call, err)                                                        \
	do {                                                                     \
		errno = 0;                                                       \
		long r_ = (call);                                                \
		if (r_ != -1 || errno != (err)) {                                \
			snprintf(why, n, "%s gave %ld (%s), not %s", #call, r_,  \
				 strerror(errno), strerror(err));                \
			return;                                                  \
		}                                                                \
	} while (0)
	EXPECT(syscall(SYS_getppid), EPERM);
	EXPECT(sigaction(SIGUSR2, NULL, &sa), EPERM);
	EXPECT(syscall(SYS_get_robust_list, 0, &head, &len), EPERM);
	EXPECT(syscall(SYS_uname, &u), ENOSYS);
	EXPECT(sigaltstack(NULL, &ss), ENOSYS);
	EXPECT(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0), ENOSYS);
	if (with_c) {
		EXPECT(syscall(SYS_getsid, 0), ECHILD);
		EXPECT(syscall(SYS_getpgid, 0), ECHILD);
	} else {
		EXPECT(syscall(SYS_getpgid, 0), synced ? EACCES : ENOSYS);
		/* 0 is a real answer: a tree started by pid 1 without setsid()
		 * is in session 0 (as under some CI runners). */
		errno = 0;
		sid = syscall(SYS_getsid, 0);
		if (sid < 0) {
			snprintf(why, n, "getsid failed: %s", strerror(errno));
			return;
		}
	}
#undef EXPECT
	if (syscall(SYS_getpid) != getpid()) {
		snprintf(why, n, "getpid failed");
		return;
	}
	if (status_of("Seccomp") != SECCOMP_MODE_FILTER)
		snprintf(why, n, "Seccomp is %d", status_of("Seccomp"));
	else if (status_of("Seccomp_filters") != 2 + with_c + synced)
		snprintf(why, n, "Seccomp_filters is %d, not %d", status_of("Seccomp_filters"),
			 2 + with_c + synced);
	else if (status_of("NoNewPrivs") != nnp)
		snprintf(why, n, "NoNewPrivs is %d, not %d", status_of("NoNewPrivs"), nnp);
}

#define NTHREADS 2

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int ready, go;
static char thread_why[NTHREADS][256];

static void *thread(void *arg)
{
	static const long c[] = { SYS_getsid, SYS_getpgid };
	long i = (long)arg;
	int with_c = i == 0 && !tsync;

	if (with_c)
		must_install(c, 2, ECHILD);
	check(thread_why[i], sizeof(thread_why[i]), with_c);
	if (thread_why[i][0])
		zdtm_fail("thread %ld before dump: %s", i, thread_why[i]);
	pthread_mutex_lock(&lock);
	ready++;
	pthread_cond_broadcast(&cond);
	while (!go)
		pthread_cond_wait(&cond, &lock);
	pthread_mutex_unlock(&lock);
	check(thread_why[i], sizeof(thread_why[i]), with_c);
	return NULL;
}

int main(int argc, char **argv)
{
	static const long a[] = { SYS_getppid, SYS_rt_sigaction, SYS_get_robust_list, SYS_getpgid };
	static const long b[] = { SYS_uname, SYS_sigaltstack, SYS_prctl, SYS_getpgid };
	static const long d[] = { SYS_getpgid };
	pthread_t t[NTHREADS];
	char why[256];
	long i;

	if (argc == 2 && !strcmp(argv[1], "strict")) {
		int p[2];

		if (pipe(p))
			zdtm_fail("pipe: %s", strerror(errno));
		zdtm_ready();
		if (syscall(SYS_seccomp, SECCOMP_SET_MODE_STRICT, 0, NULL))
			zdtm_fail("SECCOMP_SET_MODE_STRICT: %s", strerror(errno));
		/* Only read, write, _exit and sigreturn from here on. */
		for (;;)
			read(p[0], why, 1);
	}
	if (argc != 2 || (strcmp(argv[1], "nnp") && strcmp(argv[1], "admin") && strcmp(argv[1], "tsync")))
		zdtm_fail("usage: seccomp nnp|admin|tsync|strict");
	tsync = !strcmp(argv[1], "tsync");
	nnp = strcmp(argv[1], "admin") != 0;
	zdtm_setup();
	if (nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		zdtm_fail("PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
	must_install(a, 4, EPERM);
	must_install(b, 4, ENOSYS);
	for (i = 0; i < NTHREADS; i++)
		if (pthread_create(&t[i], NULL, thread, (void *)i))
			zdtm_fail("pthread_create");
	pthread_mutex_lock(&lock);
	while (ready < NTHREADS)
		pthread_cond_wait(&cond, &lock);
	pthread_mutex_unlock(&lock);
	check(why, sizeof(why), 0);
	if (why[0])
		zdtm_fail("before dump: %s", why);

	zdtm_ready();
	zdtm_wait_usr1();

	check(why, sizeof(why), 0);
	if (tsync && !why[0]) {
		long r = install(d, 1, EACCES, SECCOMP_FILTER_FLAG_TSYNC);

		if (r > 0)
			zdtm_fail("TSYNC: thread %ld does not share the main thread's filters", r);
		if (r)
			zdtm_fail("TSYNC: %s", strerror(errno));
		synced = 1;
		check(why, sizeof(why), 0);
	}
	pthread_mutex_lock(&lock);
	go = 1;
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&lock);
	for (i = 0; i < NTHREADS; i++)
		pthread_join(t[i], NULL);
	if (why[0])
		zdtm_fail("main thread: %s", why);
	for (i = 0; i < NTHREADS; i++)
		if (thread_why[i][0])
			zdtm_fail("thread %ld: %s", i, thread_why[i]);
	zdtm_pass();
	return 0;
}
