/*
 * sk_tcp [6]: an established TCP connection on 127.0.0.1 (or [::1] with
 * "6") with data queued both ways, both ends in this process (dumped with
 * --tcp-established).
 *
 *  c -> s  the client writes (non-blocking) until the connection is full:
 *          bytes wait in s's receive queue and in c's send queue
 *  s -> c  100 bytes, unread
 *  also a listening socket (the one s was accepted from)
 * After SIGUSR1: every byte arrives in order on both sides, then a new
 * exchange works both ways and the listener still accepts.
 */
#include "zdtm.h"
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

static unsigned char pat(size_t i)
{
	return (unsigned char)(i * 13 + (i >> 10));
}

static void read_all(int fd, unsigned char *buf, size_t n, const char *what)
{
	size_t off = 0;

	while (off < n) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t r;

		if (poll(&p, 1, 10000) != 1)
			zdtm_fail("%s: timed out after %zu of %zu bytes", what, off, n);
		r = read(fd, buf + off, n - off);
		if (r <= 0)
			zdtm_fail("%s: read after %zu of %zu bytes: %s", what, off, n, r ? strerror(errno) : "EOF");
		off += r;
	}
}

int main(int argc, char **argv)
{
	int v6 = argc > 1 && !strcmp(argv[1], "6"), fam = v6 ? AF_INET6 : AF_INET;
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr *a = v6 ? (struct sockaddr *)&a6 : (struct sockaddr *)&a4;
	socklen_t alen = v6 ? sizeof(a6) : sizeof(a4), al = alen;
	static unsigned char buf[8 << 20], got[8 << 20];
	size_t sent = 0, i;
	int l, c, s, one = 1;

	zdtm_setup();
	l = socket(fam, SOCK_STREAM, 0);
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(l, a, alen) || listen(l, 4) || getsockname(l, a, &al))
		zdtm_fail("listen: %s", strerror(errno));
	c = socket(fam, SOCK_STREAM, 0);
	if (connect(c, a, alen))
		zdtm_fail("connect: %s", strerror(errno));
	s = accept(l, NULL, NULL);
	if (s < 0)
		zdtm_fail("accept: %s", strerror(errno));
	setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	for (i = 0; i < sizeof(buf); i++)
		buf[i] = pat(i);
	fcntl(c, F_SETFL, O_NONBLOCK);
	for (;;) {
		ssize_t w = write(c, buf + sent, 65536);
		if (w < 0 && errno == EAGAIN) {
			usleep(20000);
			w = write(c, buf + sent, 65536);
			if (w < 0 && errno == EAGAIN)
				break;
		}
		if (w <= 0)
			zdtm_fail("write: %s", strerror(errno));
		sent += w;
		if (sent + 65536 > sizeof(buf))
			zdtm_fail("the connection never filled up");
	}
	fcntl(c, F_SETFL, 0);
	if (write(s, buf, 100) != 100)
		zdtm_fail("write s: %s", strerror(errno));
	usleep(50000);
	zdtm_say("queued %zu bytes c->s", sent);

	zdtm_ready();
	zdtm_wait_usr1();

	read_all(c, got, 100, "s->c queued");
	if (memcmp(got, buf, 100))
		zdtm_fail("s->c data differs");
	read_all(s, got, sent, "c->s queued");
	for (i = 0; i < sent; i++)
		if (got[i] != pat(i))
			zdtm_fail("c->s byte %zu differs", i);
	if (write(c, "more", 4) != 4 || write(s, "back", 4) != 4)
		zdtm_fail("write after restore: %s", strerror(errno));
	read_all(s, got, 4, "c->s after restore");
	read_all(c, got + 4, 4, "s->c after restore");
	if (memcmp(got, "moreback", 8))
		zdtm_fail("data after restore");
	al = sizeof(one);
	if (!(fcntl(c, F_GETFL) == O_RDWR) || getsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, &al) || !one)
		zdtm_fail("client flags/TCP_NODELAY lost");
	close(c);
	c = socket(fam, SOCK_STREAM, 0);
	if (connect(c, a, alen) || accept(l, NULL, NULL) < 0)
		zdtm_fail("listener after restore: %s", strerror(errno));
	zdtm_pass();
}
