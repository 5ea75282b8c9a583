/*
 * sk_scm: a unix socketpair with an fd in flight (SCM_RIGHTS queued, not
 * received yet). The dump must be refused with a clear error and the
 * program must run on untouched: after SIGUSR1 it receives the fd and
 * reads through it.
 */
#include "zdtm.h"
#include <sys/socket.h>

int main(void)
{
	int sp[2], p[2], got = -1;
	char cbuf[CMSG_SPACE(sizeof(int))], c = 'x', buf[8];
	struct iovec iov = { .iov_base = &c, .iov_len = 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm;

	zdtm_setup();
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) || pipe(p))
		zdtm_fail("socketpair/pipe: %s", strerror(errno));
	if (write(p[1], "inflight", 8) != 8)
		zdtm_fail("write pipe");
	cm = CMSG_FIRSTHDR(&m);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &p[0], sizeof(int));
	if (sendmsg(sp[0], &m, 0) != 1)
		zdtm_fail("sendmsg: %s", strerror(errno));
	close(p[0]);

	zdtm_ready();
	zdtm_wait_usr1();

	memset(cbuf, 0, sizeof(cbuf));
	m.msg_controllen = sizeof(cbuf);
	if (recvmsg(sp[1], &m, 0) != 1)
		zdtm_fail("recvmsg: %s", strerror(errno));
	cm = CMSG_FIRSTHDR(&m);
	if (!cm || cm->cmsg_type != SCM_RIGHTS)
		zdtm_fail("no fd received");
	memcpy(&got, CMSG_DATA(cm), sizeof(int));
	if (read(got, buf, 8) != 8 || memcmp(buf, "inflight", 8))
		zdtm_fail("reading through the received fd");
	zdtm_pass();
}
