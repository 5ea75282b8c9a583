/*
 * fd_epoll: an epoll instance with three registrations.
 *
 *  pipe p  read end registered EPOLLIN, data 0x1122334455667788, 5 bytes buffered
 *  efd     eventfd (counter 0) registered EPOLLIN|EPOLLET, data 42
 *  efd2    eventfd (counter 1) registered EPOLLOUT only, data 7 (fd 200)
 * After restore: epoll_wait reports exactly the pipe (IN) and efd2 (OUT)
 * with their data; then efd becomes readable and is reported once (ET).
 */
#include "zdtm.h"
#include <fcntl.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

int main(void)
{
	struct epoll_event ev, out[8];
	int ep, p[2], efd, efd2, n, seen_pipe = 0, seen_efd2 = 0;
	uint64_t v = 1;

	zdtm_setup();
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0 || pipe(p) || (efd = eventfd(0, EFD_NONBLOCK)) < 0)
		zdtm_fail("setup: %s", strerror(errno));
	efd2 = eventfd(1, 0);
	if (efd2 < 0 || dup2(efd2, 200) != 200)
		zdtm_fail("eventfd: %s", strerror(errno));
	close(efd2);
	efd2 = 200;
	ev.events = EPOLLIN;
	ev.data.u64 = 0x1122334455667788ULL;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev))
		zdtm_fail("epoll_ctl pipe: %s", strerror(errno));
	ev.events = EPOLLIN | EPOLLET;
	ev.data.u64 = 42;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev))
		zdtm_fail("epoll_ctl efd: %s", strerror(errno));
	ev.events = EPOLLOUT;
	ev.data.u64 = 7;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, efd2, &ev))
		zdtm_fail("epoll_ctl efd2: %s", strerror(errno));
	if (write(p[1], "hello", 5) != 5)
		zdtm_fail("write: %s", strerror(errno));

	zdtm_ready();
	zdtm_wait_usr1();

	if (fcntl(ep, F_GETFD) != FD_CLOEXEC)
		zdtm_fail("epoll lost FD_CLOEXEC");
	n = epoll_wait(ep, out, 8, 0);
	if (n != 2)
		zdtm_fail("epoll_wait: %d events, want 2 (%s)", n, n < 0 ? strerror(errno) : "");
	for (int i = 0; i < n; i++) {
		if (out[i].data.u64 == 0x1122334455667788ULL && out[i].events == EPOLLIN)
			seen_pipe = 1;
		else if (out[i].data.u64 == 7 && out[i].events == EPOLLOUT)
			seen_efd2 = 1;
		else
			zdtm_fail("unexpected event %#x data %#llx", out[i].events, (unsigned long long)out[i].data.u64);
	}
	if (!seen_pipe || !seen_efd2)
		zdtm_fail("missing events");
	if (write(efd, &v, 8) != 8)
		zdtm_fail("write efd: %s", strerror(errno));
	n = epoll_wait(ep, out, 8, 0);
	if (n != 3)
		zdtm_fail("after efd write: %d events, want 3", n);
	n = epoll_wait(ep, out, 8, 0);
	if (n != 2)
		zdtm_fail("edge-triggered efd reported twice (%d events)", n);
	zdtm_pass();
	return 0;
}
