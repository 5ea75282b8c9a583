/*
 * zdtm.h - tiny helpers shared by the Stasis test programs, in the manner of
 * CRIU's ZDTM suite: build some state, print READY, wait for SIGUSR1 (the
 * checkpoint and restore happen in between), verify the state, print PASS or
 * "FAIL: reason" and exit 0 or 1.
 *
 * Output goes through write(2) on fd 1 so that a line is never duplicated by
 * stdio buffers after fork() and never split between processes.
 */
#ifndef STASIS_ZDTM_H
#define STASIS_ZDTM_H

#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t zdtm_usr1_seen;

static inline void zdtm_usr1_handler(int sig)
{
	(void)sig;
	zdtm_usr1_seen = 1;
}

static inline void zdtm_say(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	while (n > 0) {
		ssize_t w = write(1, buf, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		n -= w;
	}
}

/* Print "FAIL: reason" and exit 1. */
#define zdtm_fail(...)                         \
	do {                                   \
		char zdtm_r_[480];             \
		snprintf(zdtm_r_, sizeof(zdtm_r_), __VA_ARGS__); \
		zdtm_say("FAIL: %s", zdtm_r_); \
		exit(1);                       \
	} while (0)

/*
 * Block SIGUSR1 and install its handler. Call before creating threads or
 * children, so that they inherit the blocked mask and only the waiting
 * thread (in sigsuspend) takes the signal.
 */
static inline void zdtm_setup(void)
{
	struct sigaction sa;
	sigset_t set;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = zdtm_usr1_handler;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL))
		zdtm_fail("sigaction(SIGUSR1): %s", strerror(errno));
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	if (sigprocmask(SIG_BLOCK, &set, NULL))
		zdtm_fail("sigprocmask: %s", strerror(errno));
}

static inline void zdtm_ready(void)
{
	zdtm_say("READY");
}

/*
 * Wait for SIGUSR1. The loop survives a checkpoint taken while we sleep in
 * sigsuspend(): whatever the restore makes sigsuspend return (EINTR), we
 * only leave once the handler has run. The mask used while waiting is the
 * current one minus SIGUSR1, so other blocked signals stay blocked.
 */
static inline void zdtm_wait_usr1(void)
{
	sigset_t cur;

	if (sigprocmask(SIG_BLOCK, NULL, &cur))
		zdtm_fail("sigprocmask: %s", strerror(errno));
	sigdelset(&cur, SIGUSR1);
	while (!zdtm_usr1_seen)
		sigsuspend(&cur);
}

static inline void zdtm_pass(void)
{
	zdtm_say("PASS");
	exit(0);
}

static inline const char *zdtm_tmpdir(void)
{
	const char *t = getenv("TMPDIR");
	return (t && *t) ? t : "/tmp";
}

#endif
