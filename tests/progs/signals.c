/*
 * signals: per-process signal and timer state, and a few small process
 * attributes.
 *
 *  - SIGUSR2: SA_SIGINFO|SA_RESTART|SA_ONSTACK, sa_mask {SIGHUP, SIGTERM};
 *    SIGHUP: SA_RESTART, sa_mask {SIGINT}; SIGRTMIN+2: SA_SIGINFO;
 *    SIGPIPE ignored;
 *  - blocked: SIGUSR2, SIGHUP, SIGRTMIN+2 (and SIGUSR1 outside the wait);
 *  - pending: SIGUSR2 for the thread (raise), SIGHUP for the process (kill),
 *    two SIGRTMIN+2 queued with values 0x1234 and 0x5678 (sigqueue);
 *  - an alternate signal stack, used by the SIGUSR2 handler;
 *  - ITIMER_REAL 1000 s, interval 2000 s; a POSIX CLOCK_MONOTONIC timer
 *    due in 500 s, interval 7 s;
 *  - umask 027, cwd a temp dir, personality.
 * After SIGUSR1 all of that is checked; then the pending signals are
 * unblocked and must arrive once each, RT ones in order with their values.
 */
#include "zdtm.h"
#include <stdint.h>
#include <sys/personality.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>

#define ALTSTACK_SIZE (64 * 1024)

static volatile int got_usr2, got_hup, got_rt, usr2_on_altstack;
static volatile int rt_values[4], rt_codes[4];
static char *altstack;

static void on_usr2(int sig, siginfo_t *si, void *uc)
{
	char here;
	(void)sig; (void)si; (void)uc;
	got_usr2++;
	usr2_on_altstack = &here >= altstack && &here < altstack + ALTSTACK_SIZE;
}

static void on_hup(int sig)
{
	(void)sig;
	got_hup++;
}

static void on_rt(int sig, siginfo_t *si, void *uc)
{
	(void)sig; (void)uc;
	if (got_rt < 4) {
		rt_values[got_rt] = si->si_value.sival_int;
		rt_codes[got_rt] = si->si_code;
	}
	got_rt++;
}

static void on_timer(int sig)
{
	zdtm_say("FAIL: timer signal %d fired", sig);
	_exit(1);
}

static void set_action(int sig, void *handler, int flags, int m1, int m2)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	if (flags & SA_SIGINFO)
		sa.sa_sigaction = handler;
	else
		sa.sa_handler = handler;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	if (m1)
		sigaddset(&sa.sa_mask, m1);
	if (m2)
		sigaddset(&sa.sa_mask, m2);
	if (sigaction(sig, &sa, NULL))
		zdtm_fail("sigaction(%d): %s", sig, strerror(errno));
}

static int same_set(const sigset_t *a, const sigset_t *b)
{
	int s;

	for (s = 1; s < NSIG; s++) {
		if (s == 32 || s == 33) /* glibc-internal */
			continue;
		if (sigismember(a, s) != sigismember(b, s))
			return 0;
	}
	return 1;
}

static long ms(const struct timespec *t)
{
	return t->tv_sec * 1000L + t->tv_nsec / 1000000;
}

int main(void)
{
	const int sigs[] = { SIGUSR2, SIGHUP, SIGPIPE, SIGINT, SIGALRM, SIGRTMIN + 2, SIGRTMIN + 3 };
	const int nsigs = sizeof(sigs) / sizeof(sigs[0]);
	struct sigaction before[16], after;
	sigset_t block, mask_before, mask_after, pend;
	stack_t ss, ss_after;
	struct itimerval it, it_after;
	struct itimerspec pt, pt_after;
	struct sigevent sev;
	timer_t timer;
	char dir[4096], cwd[4096], cwd_after[4096];
	int pers, i;
	mode_t um;

	zdtm_setup();

	altstack = malloc(ALTSTACK_SIZE);
	ss.ss_sp = altstack;
	ss.ss_size = ALTSTACK_SIZE;
	ss.ss_flags = 0;
	if (sigaltstack(&ss, NULL))
		zdtm_fail("sigaltstack: %s", strerror(errno));

	set_action(SIGUSR2, on_usr2, SA_SIGINFO | SA_RESTART | SA_ONSTACK, SIGHUP, SIGTERM);
	set_action(SIGHUP, on_hup, SA_RESTART, SIGINT, 0);
	set_action(SIGRTMIN + 2, on_rt, SA_SIGINFO, 0, 0);
	set_action(SIGALRM, on_timer, 0, 0, 0);
	set_action(SIGRTMIN + 3, on_timer, 0, 0, 0);
	signal(SIGPIPE, SIG_IGN);
	for (i = 0; i < nsigs; i++)
		sigaction(sigs[i], NULL, &before[i]);

	sigemptyset(&block);
	sigaddset(&block, SIGUSR2);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGRTMIN + 2);
	if (sigprocmask(SIG_BLOCK, &block, NULL))
		zdtm_fail("sigprocmask: %s", strerror(errno));
	sigprocmask(SIG_BLOCK, NULL, &mask_before);

	raise(SIGUSR2);
	kill(getpid(), SIGHUP);
	if (sigqueue(getpid(), SIGRTMIN + 2, (union sigval){ .sival_int = 0x1234 }) ||
	    sigqueue(getpid(), SIGRTMIN + 2, (union sigval){ .sival_int = 0x5678 }))
		zdtm_fail("sigqueue: %s", strerror(errno));

	it.it_value.tv_sec = 1000;
	it.it_value.tv_usec = 0;
	it.it_interval.tv_sec = 2000;
	it.it_interval.tv_usec = 0;
	if (setitimer(ITIMER_REAL, &it, NULL))
		zdtm_fail("setitimer: %s", strerror(errno));

	memset(&sev, 0, sizeof(sev));
	sev.sigev_notify = SIGEV_SIGNAL;
	sev.sigev_signo = SIGRTMIN + 3;
	sev.sigev_value.sival_int = 0x42;
	if (timer_create(CLOCK_MONOTONIC, &sev, &timer))
		zdtm_fail("timer_create: %s", strerror(errno));
	pt.it_value.tv_sec = 500;
	pt.it_value.tv_nsec = 0;
	pt.it_interval.tv_sec = 7;
	pt.it_interval.tv_nsec = 0;
	if (timer_settime(timer, 0, &pt, NULL))
		zdtm_fail("timer_settime: %s", strerror(errno));

	umask(027);
	snprintf(dir, sizeof(dir), "%s/stasis-signals-XXXXXX", zdtm_tmpdir());
	if (!mkdtemp(dir) || chdir(dir))
		zdtm_fail("temp dir %s: %s", dir, strerror(errno));
	if (!getcwd(cwd, sizeof(cwd)))
		zdtm_fail("getcwd: %s", strerror(errno));
	pers = personality(0xffffffff);

	zdtm_ready();
	zdtm_wait_usr1();

	/* Actions. */
	for (i = 0; i < nsigs; i++) {
		sigaction(sigs[i], NULL, &after);
		if (after.sa_handler != before[i].sa_handler)
			zdtm_fail("signal %d: handler changed", sigs[i]);
		if (after.sa_flags != before[i].sa_flags)
			zdtm_fail("signal %d: flags %#x, were %#x", sigs[i],
				  after.sa_flags, before[i].sa_flags);
		if (!same_set(&after.sa_mask, &before[i].sa_mask))
			zdtm_fail("signal %d: sa_mask changed", sigs[i]);
	}
	/* Mask and pending. */
	sigprocmask(SIG_BLOCK, NULL, &mask_after);
	if (!same_set(&mask_before, &mask_after))
		zdtm_fail("blocked mask changed");
	sigpending(&pend);
	if (!sigismember(&pend, SIGUSR2) || !sigismember(&pend, SIGHUP) ||
	    !sigismember(&pend, SIGRTMIN + 2))
		zdtm_fail("pending signals lost (USR2 %d HUP %d RT+2 %d)",
			  sigismember(&pend, SIGUSR2), sigismember(&pend, SIGHUP),
			  sigismember(&pend, SIGRTMIN + 2));
	if (got_usr2 || got_hup || got_rt)
		zdtm_fail("a blocked signal was delivered early");
	/* Alternate stack. */
	if (sigaltstack(NULL, &ss_after))
		zdtm_fail("sigaltstack: %s", strerror(errno));
	if (ss_after.ss_sp != ss.ss_sp || ss_after.ss_size != ss.ss_size ||
	    ss_after.ss_flags != 0)
		zdtm_fail("sigaltstack changed: sp %p size %zu flags %d",
			  ss_after.ss_sp, ss_after.ss_size, ss_after.ss_flags);
	/* Timers. */
	getitimer(ITIMER_REAL, &it_after);
	if (it_after.it_interval.tv_sec != 2000 || it_after.it_interval.tv_usec != 0)
		zdtm_fail("itimer interval is %ld.%06ld s", (long)it_after.it_interval.tv_sec,
			  (long)it_after.it_interval.tv_usec);
	if ((it_after.it_value.tv_sec == 0 && it_after.it_value.tv_usec == 0) ||
	    it_after.it_value.tv_sec > 1000 || it_after.it_value.tv_sec < 900)
		zdtm_fail("itimer value is %ld s", (long)it_after.it_value.tv_sec);
	if (timer_gettime(timer, &pt_after))
		zdtm_fail("timer_gettime: %s", strerror(errno));
	if (ms(&pt_after.it_interval) != 7000)
		zdtm_fail("posix timer interval is %ld ms", ms(&pt_after.it_interval));
	if (ms(&pt_after.it_value) <= 0 || ms(&pt_after.it_value) > 500000 ||
	    ms(&pt_after.it_value) < 400000)
		zdtm_fail("posix timer value is %ld ms", ms(&pt_after.it_value));
	/* Small attributes. */
	um = umask(022);
	if (um != 027)
		zdtm_fail("umask is %03o", um);
	if (!getcwd(cwd_after, sizeof(cwd_after)) || strcmp(cwd, cwd_after))
		zdtm_fail("cwd is %s, was %s", cwd_after, cwd);
	if (personality(0xffffffff) != pers)
		zdtm_fail("personality %#x, was %#x", personality(0xffffffff), pers);

	/* Deliver the pending signals. */
	sigprocmask(SIG_UNBLOCK, &block, NULL);
	if (got_usr2 != 1 || got_hup != 1 || got_rt != 2)
		zdtm_fail("delivered USR2 x%d HUP x%d RT+2 x%d (want 1 1 2)",
			  got_usr2, got_hup, got_rt);
	if (!usr2_on_altstack)
		zdtm_fail("SIGUSR2 handler did not run on the alternate stack");
	if (rt_values[0] != 0x1234 || rt_values[1] != 0x5678)
		zdtm_fail("RT values %#x %#x (want 0x1234 0x5678)", rt_values[0], rt_values[1]);
	if (rt_codes[0] != SI_QUEUE || rt_codes[1] != SI_QUEUE)
		zdtm_fail("RT si_code %d %d (want SI_QUEUE)", rt_codes[0], rt_codes[1]);

	timer_delete(timer);
	if (chdir("/") == 0)
		rmdir(dir);
	zdtm_pass();
	return 0;
}
