/*
 * fd_eventfd: eventfds with their counters and flags.
 *
 *  fd a  eventfd(5, EFD_NONBLOCK), then +10: counter 15
 *  fd b  eventfd(3, EFD_SEMAPHORE|EFD_NONBLOCK|EFD_CLOEXEC): reads 1, 1, 1, EAGAIN
 *  fd c  eventfd(0, 0), +0x100000005: a counter above 32 bits, blocking
 *  fd d  eventfd(0, EFD_NONBLOCK), empty: read gives EAGAIN
 */
#include "zdtm.h"
#include <fcntl.h>
#include <stdint.h>
#include <sys/eventfd.h>

static uint64_t rd(int fd, const char *what)
{
	uint64_t v;

	if (read(fd, &v, 8) != 8)
		zdtm_fail("read %s: %s", what, strerror(errno));
	return v;
}

int main(void)
{
	uint64_t v;
	int a, b, c, d;

	zdtm_setup();
	a = eventfd(5, EFD_NONBLOCK);
	b = eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC);
	c = eventfd(0, 0);
	d = eventfd(0, EFD_NONBLOCK);
	if (a < 0 || b < 0 || c < 0 || d < 0)
		zdtm_fail("eventfd: %s", strerror(errno));
	v = 10;
	if (write(a, &v, 8) != 8)
		zdtm_fail("write a: %s", strerror(errno));
	v = 0x100000005ULL;
	if (write(c, &v, 8) != 8)
		zdtm_fail("write c: %s", strerror(errno));

	zdtm_ready();
	zdtm_wait_usr1();

	if (!(fcntl(a, F_GETFL) & O_NONBLOCK) || (fcntl(c, F_GETFL) & O_NONBLOCK))
		zdtm_fail("O_NONBLOCK flags lost");
	if (fcntl(b, F_GETFD) != FD_CLOEXEC || fcntl(a, F_GETFD) != 0)
		zdtm_fail("FD_CLOEXEC flags lost");
	if ((v = rd(a, "a")) != 15)
		zdtm_fail("a: counter %llu, want 15", (unsigned long long)v);
	for (int i = 0; i < 3; i++)
		if ((v = rd(b, "b")) != 1)
			zdtm_fail("b: semaphore read %d gave %llu", i, (unsigned long long)v);
	if (read(b, &v, 8) != -1 || errno != EAGAIN)
		zdtm_fail("b: a 4th read should give EAGAIN");
	if ((v = rd(c, "c")) != 0x100000005ULL)
		zdtm_fail("c: counter %#llx", (unsigned long long)v);
	if (read(d, &v, 8) != -1 || errno != EAGAIN)
		zdtm_fail("d: should be empty");
	/* Still a working eventfd. */
	v = 7;
	if (write(d, &v, 8) != 8 || rd(d, "d") != 7)
		zdtm_fail("d: write/read after restore");
	zdtm_pass();
	return 0;
}
