/*
 * fd_unsupported MODE: holds an fd of a kind Stasis refuses to dump
 * (MODE io_uring, perf, or userfaultfd with a registered area: pre-dumps
 * refuse it too), prints READY and keeps counting in a loop so a
 * test can see it still runs after the refused dump; exits 0 on SIGUSR1
 * after checking the fd is still there.
 */
#include "zdtm.h"
#include <fcntl.h>
#include <linux/perf_event.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>

int main(int argc, char **argv)
{
	int fd = -1;

	zdtm_setup();
	if (argc > 1 && !strcmp(argv[1], "io_uring")) {
		unsigned char params[120];
		memset(params, 0, sizeof(params));
		fd = syscall(__NR_io_uring_setup, 4, params);
	} else if (argc > 1 && !strcmp(argv[1], "userfaultfd")) {
		/* 1 = UFFD_USER_MODE_ONLY: allowed without privileges. */
		fd = syscall(__NR_userfaultfd, O_CLOEXEC | 1);
		if (fd >= 0) {
			struct uffdio_api api = { .api = UFFD_API };
			size_t len = 1 << 20;
			char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			struct uffdio_register r = { .range = { (unsigned long)p, len },
						     .mode = UFFDIO_REGISTER_MODE_MISSING };
			memset(p, 1, len);
			if (ioctl(fd, UFFDIO_API, &api) || ioctl(fd, UFFDIO_REGISTER, &r))
				zdtm_fail("userfaultfd setup: %s", strerror(errno));
		}
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
