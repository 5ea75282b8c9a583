/*
 * fd_unsupported MODE: holds an fd of a kind Stasis refuses to dump
 * (MODE io_uring or perf), prints READY and keeps counting in a loop so a
 * test can see it still runs after the refused dump; exits 0 on SIGUSR1
 * after checking the fd is still there.
 */
#include "zdtm.h"
#include <fcntl.h>
#include <linux/perf_event.h>
#include <sys/syscall.h>

int main(int argc, char **argv)
{
	int fd = -1;

	zdtm_setup();
	if (argc > 1 && !strcmp(argv[1], "io_uring")) {
		unsigned char params[120];
		memset(params, 0, sizeof(params));
		fd = syscall(__NR_io_uring_setup, 4, params);
	} else {
		struct perf_event_attr a;
		memset(&a, 0, sizeof(a));
		a.size = sizeof(a);
		a.type = PERF_TYPE_SOFTWARE;
		a.config = PERF_COUNT_SW_TASK_CLOCK;
		a.exclude_kernel = 1;
		fd = syscall(__NR_perf_event_open, &a, 0, -1, -1, 0);
	}
	if (fd < 0)
		zdtm_fail("SKIP %s: %s", argc > 1 ? argv[1] : "perf", strerror(errno));
	zdtm_ready();
	zdtm_wait_usr1();
	if (fcntl(fd, F_GETFD) < 0)
		zdtm_fail("fd %d closed", fd);
	zdtm_pass();
	return 0;
}
