/*
 * fd_signalfd: a signalfd for SIGUSR2 and SIGRTMIN+1 (non-blocking), both
 * signals blocked; SIGUSR2 queued before the dump.
 * After restore: the signalfd's mask is intact (SIGUSR2 read from it, then
 * a freshly raised SIGRTMIN+1 with its value), and SIGTERM is not in it.
 */
#include "zdtm.h"
#include <fcntl.h>
#include <sys/signalfd.h>

int main(void)
{
	struct signalfd_siginfo si;
	union sigval sv;
	sigset_t set;
	int sfd;

	zdtm_setup();
	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	sigaddset(&set, SIGRTMIN + 1);
	if (sigprocmask(SIG_BLOCK, &set, NULL))
		zdtm_fail("sigprocmask: %s", strerror(errno));
	sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sfd < 0)
		zdtm_fail("signalfd: %s", strerror(errno));
	kill(getpid(), SIGUSR2);

	zdtm_ready();
	zdtm_wait_usr1();

	if (!(fcntl(sfd, F_GETFL) & O_NONBLOCK) || fcntl(sfd, F_GETFD) != FD_CLOEXEC)
		zdtm_fail("flags lost");
	if (read(sfd, &si, sizeof(si)) != sizeof(si) || si.ssi_signo != SIGUSR2)
		zdtm_fail("no SIGUSR2 from the signalfd: %s", strerror(errno));
	if (read(sfd, &si, sizeof(si)) != -1 || errno != EAGAIN)
		zdtm_fail("signalfd should be empty now");
	sv.sival_int = 4242;
	if (sigqueue(getpid(), SIGRTMIN + 1, sv))
		zdtm_fail("sigqueue: %s", strerror(errno));
	if (read(sfd, &si, sizeof(si)) != sizeof(si) || (int)si.ssi_signo != SIGRTMIN + 1 || si.ssi_int != 4242)
		zdtm_fail("SIGRTMIN+1 not read back");
	{
		char path[64], buf[256];
		FILE *f;
		int ok = 0;
		snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", sfd);
		f = fopen(path, "r");
		while (f && fgets(buf, sizeof(buf), f)) {
			unsigned long long m;
			if (sscanf(buf, "sigmask: %llx", &m) == 1)
				ok = m == ((1ULL << (SIGUSR2 - 1)) | (1ULL << (SIGRTMIN + 1 - 1)));
		}
		if (f)
			fclose(f);
		if (!ok)
			zdtm_fail("sigmask in fdinfo differs");
	}
	zdtm_pass();
	return 0;
}
