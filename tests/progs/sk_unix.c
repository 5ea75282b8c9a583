/*
 * sk_unix: unix sockets of every type and their queues.
 *
 *  st[2]   socketpair(SOCK_STREAM): 3000 bytes queued a->b, 5 bytes b->a;
 *          st[0] is O_NONBLOCK and has a dup
 *  dg[2]   socketpair(SOCK_DGRAM): 3 datagrams a->b, 2 b->a (boundaries kept)
 *  sp[2]   socketpair(SOCK_SEQPACKET): 2 records a->b; a then shut down for
 *          writing (b reads the records, then EOF)
 *  lp      listening stream socket bound to a path, mode 0640, backlog 5
 *  la      listening seqpacket socket on an abstract name
 *  db      dgram socket bound to a path, 2 datagrams queued by a sender
 *          that is closed since
 *  dc      dgram socket connected to db (sends reach db)
 *  pc      a stream socket whose peer wrote "bye" and closed: the data,
 *          then end-of-file
 *  ch      a forked child holds st[1]'s dup too and just waits
 * After SIGUSR1 every byte, boundary, flag and name is checked, and the
 * listeners accept new connections.
 */
#include "zdtm.h"
#include <fcntl.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

static void xsend(int fd, const void *b, size_t n, const char *what)
{
	if (send(fd, b, n, 0) != (ssize_t)n)
		zdtm_fail("send %s: %s", what, strerror(errno));
}

static void expect_msg(int fd, const char *want, const char *what)
{
	char buf[4096];
	ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

	if (n < 0)
		zdtm_fail("%s: recv: %s", what, strerror(errno));
	if ((size_t)n != strlen(want) || memcmp(buf, want, n))
		zdtm_fail("%s: got %zd bytes \"%.*s\", want \"%s\"", what, n, (int)(n > 0 ? n : 0), buf, want);
}

static void expect_empty(int fd, const char *what)
{
	char c;
	ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);

	if (n >= 0 || errno != EAGAIN)
		zdtm_fail("%s: queue not empty (recv %zd, %s)", what, n, strerror(errno));
}

static socklen_t un_addr(struct sockaddr_un *a, const char *path, int abstract)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	if (abstract) {
		strncpy(a->sun_path + 1, path, sizeof(a->sun_path) - 2);
		return offsetof(struct sockaddr_un, sun_path) + 1 + strlen(path);
	}
	strncpy(a->sun_path, path, sizeof(a->sun_path) - 1);
	return sizeof(*a);
}

static void check_listener(int l, int type, const char *name, int abstract)
{
	struct sockaddr_un a;
	socklen_t len = un_addr(&a, name, abstract);
	int c = socket(AF_UNIX, type, 0), s, t;
	socklen_t tl = sizeof(t);

	if (getsockopt(l, SOL_SOCKET, SO_TYPE, &t, &tl) || t != type)
		zdtm_fail("listener %s: type %d, want %d", name, t, type);
	if (getsockopt(l, SOL_SOCKET, SO_ACCEPTCONN, &t, &tl) || !t)
		zdtm_fail("listener %s is not listening", name);
	if (connect(c, (struct sockaddr *)&a, len))
		zdtm_fail("connect to %s: %s", name, strerror(errno));
	s = accept(l, NULL, NULL);
	if (s < 0)
		zdtm_fail("accept on %s: %s", name, strerror(errno));
	xsend(c, "ping", 4, name);
	expect_msg(s, "ping", name);
	close(c);
	close(s);
}

int main(void)
{
	int st[2], dg[2], sp[2], pc[2], lp, la, db, dc, tmp, st0dup;
	char path[200], dpath[200], abs_name[64], big[3000], got[3000];
	struct sockaddr_un a;
	struct stat sb;
	socklen_t len;
	pid_t ch;
	size_t i;

	zdtm_setup();
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, st) || socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp))
		zdtm_fail("socketpair: %s", strerror(errno));
	for (i = 0; i < sizeof(big); i++)
		big[i] = (char)(i * 7 + 3);
	xsend(st[0], big, sizeof(big), "stream a->b");
	xsend(st[1], "hello", 5, "stream b->a");
	fcntl(st[0], F_SETFL, O_NONBLOCK);
	st0dup = dup(st[0]);
	xsend(dg[0], "one", 3, "dgram");
	xsend(dg[0], "two2", 4, "dgram");
	xsend(dg[0], "three", 5, "dgram");
	xsend(dg[1], "back1", 5, "dgram");
	xsend(dg[1], "back22", 6, "dgram");
	xsend(sp[0], "rec-1", 5, "seqpacket");
	xsend(sp[0], "record-2", 8, "seqpacket");
	shutdown(sp[0], SHUT_WR);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, pc))
		zdtm_fail("socketpair: %s", strerror(errno));
	xsend(pc[1], "bye", 3, "closed peer");
	close(pc[1]);

	snprintf(path, sizeof(path), "%s/sk_unix-%d.sock", zdtm_tmpdir(), getpid());
	unlink(path);
	lp = socket(AF_UNIX, SOCK_STREAM, 0);
	len = un_addr(&a, path, 0);
	if (bind(lp, (struct sockaddr *)&a, len) || listen(lp, 5))
		zdtm_fail("bind/listen %s: %s", path, strerror(errno));
	chmod(path, 0640);

	snprintf(abs_name, sizeof(abs_name), "stasis-sk-unix-%d", getpid());
	la = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	len = un_addr(&a, abs_name, 1);
	if (bind(la, (struct sockaddr *)&a, len) || listen(la, 3))
		zdtm_fail("bind/listen @%s: %s", abs_name, strerror(errno));

	snprintf(dpath, sizeof(dpath), "%s/sk_unix-%d.dgram", zdtm_tmpdir(), getpid());
	unlink(dpath);
	db = socket(AF_UNIX, SOCK_DGRAM, 0);
	len = un_addr(&a, dpath, 0);
	if (bind(db, (struct sockaddr *)&a, len))
		zdtm_fail("bind %s: %s", dpath, strerror(errno));
	tmp = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (sendto(tmp, "q1", 2, 0, (struct sockaddr *)&a, len) != 2 ||
	    sendto(tmp, "queued-2", 8, 0, (struct sockaddr *)&a, len) != 8)
		zdtm_fail("sendto %s: %s", dpath, strerror(errno));
	close(tmp);
	dc = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (connect(dc, (struct sockaddr *)&a, len))
		zdtm_fail("connect %s: %s", dpath, strerror(errno));

	ch = fork();
	if (ch == 0) {
		for (;;)
			pause();
	}

	zdtm_ready();
	zdtm_wait_usr1();

	if (!(fcntl(st[0], F_GETFL) & O_NONBLOCK) || (fcntl(st[1], F_GETFL) & O_NONBLOCK))
		zdtm_fail("O_NONBLOCK flags of the stream pair");
	if (recv(st[1], got, sizeof(got), MSG_WAITALL) != (ssize_t)sizeof(got) || memcmp(got, big, sizeof(big)))
		zdtm_fail("stream a->b data");
	expect_empty(st[1], "stream b");
	expect_msg(st0dup, "hello", "stream b->a (through the dup)");
	xsend(st[1], "after", 5, "stream b->a after restore");
	expect_msg(st[0], "after", "stream after restore");

	expect_msg(dg[1], "one", "dgram 1");
	expect_msg(dg[1], "two2", "dgram 2");
	expect_msg(dg[1], "three", "dgram 3");
	expect_empty(dg[1], "dgram b");
	expect_msg(dg[0], "back1", "dgram back 1");
	expect_msg(dg[0], "back22", "dgram back 2");
	expect_empty(dg[0], "dgram a");

	expect_msg(sp[1], "rec-1", "seqpacket 1");
	expect_msg(sp[1], "record-2", "seqpacket 2");
	if (recv(sp[1], got, 1, MSG_DONTWAIT) != 0)
		zdtm_fail("seqpacket: no EOF after the records (shutdown lost)");
	if (send(sp[0], "x", 1, MSG_NOSIGNAL) != -1 || errno != EPIPE)
		zdtm_fail("seqpacket: send after SHUT_WR did not fail with EPIPE");

	expect_msg(pc[0], "bye", "data from a closed peer");
	if (recv(pc[0], got, 1, MSG_DONTWAIT) != 0)
		zdtm_fail("no EOF after the data of a closed peer");

	if (stat(path, &sb) || !S_ISSOCK(sb.st_mode) || (sb.st_mode & 0777) != 0640)
		zdtm_fail("%s: mode %o", path, sb.st_mode);
	check_listener(lp, SOCK_STREAM, path, 0);
	check_listener(la, SOCK_SEQPACKET, abs_name, 1);

	expect_msg(db, "q1", "bound dgram 1");
	expect_msg(db, "queued-2", "bound dgram 2");
	xsend(dc, "via-dc", 6, "connected dgram");
	expect_msg(db, "via-dc", "connected dgram to bound");

	kill(ch, SIGKILL);
	waitpid(ch, NULL, 0);
	unlink(path);
	unlink(dpath);
	zdtm_pass();
}
