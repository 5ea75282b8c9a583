/*
 * fd_shared: special files shared through dup() and fork().
 *
 *  efd   eventfd (counter 2), dup'ed to efd2; inherited by a child
 *  ep    epoll watching efd (EPOLLIN, data 99); inherited by the child
 *  tfd   timerfd armed 60 s; inherited by the child
 * After restore the parent adds 5 through efd2 and signals the child, which
 * must read 7 from its efd (the same eventfd), see its epoll report
 * nothing more, and find the timer still armed; the parent then checks that
 * the child's read emptied its own eventfd.
 */
#include "zdtm.h"
#include <fcntl.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/wait.h>

int main(void)
{
	struct itimerspec its = { .it_value = { .tv_sec = 60 } };
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 99 }, out[4];
	int efd, efd2, ep, tfd, st, n;
	uint64_t v;
	pid_t child;

	zdtm_setup();
	efd = eventfd(2, EFD_NONBLOCK);
	efd2 = dup(efd);
	ep = epoll_create1(0);
	tfd = timerfd_create(CLOCK_MONOTONIC, 0);
	if (efd < 0 || efd2 < 0 || ep < 0 || tfd < 0)
		zdtm_fail("setup: %s", strerror(errno));
	if (epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev) || timerfd_settime(tfd, 0, &its, NULL))
		zdtm_fail("epoll_ctl/settime: %s", strerror(errno));
	child = fork();
	if (child < 0)
		zdtm_fail("fork: %s", strerror(errno));
	if (child == 0) {
		zdtm_wait_usr1();
		n = epoll_wait(ep, out, 4, 0);
		if (n != 1 || out[0].data.u64 != 99)
			zdtm_fail("child: epoll reports %d events", n);
		if (read(efd, &v, 8) != 8 || v != 7)
			zdtm_fail("child: eventfd holds %llu, want 7", (unsigned long long)v);
		if (epoll_wait(ep, out, 4, 0) != 0)
			zdtm_fail("child: epoll still reports the eventfd");
		if (timerfd_gettime(tfd, &its) || its.it_value.tv_sec < 5)
			zdtm_fail("child: timer not armed");
		_exit(0);
	}

	zdtm_ready();
	zdtm_wait_usr1();

	v = 5;
	if (write(efd2, &v, 8) != 8)
		zdtm_fail("write efd2: %s", strerror(errno));
	kill(child, SIGUSR1);
	if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st))
		exit(1); /* the child printed FAIL */
	if (read(efd, &v, 8) != -1 || errno != EAGAIN)
		zdtm_fail("parent: eventfd not emptied by the child's read");
	zdtm_pass();
	return 0;
}
