/*
 * sk_inet: inet sockets that are not connections.
 *
 *  l4   TCP listening on 127.0.0.1 (ephemeral port), SO_REUSEADDR,
 *       SO_KEEPALIVE, TCP_NODELAY, backlog 7
 *  l6   TCP listening on [::1], IPV6_V6ONLY, SO_REUSEPORT, O_NONBLOCK
 *  ub   UDP bound to 127.0.0.1, SO_RCVBUF set to 100000 (locked)
 *  uc   UDP connected to ub
 *  un   TCP socket, never bound (CLOSE)
 * After SIGUSR1: the same local ports, options and flags; clients connect
 * and are accepted on both listeners; uc's datagram reaches ub.
 */
#include "zdtm.h"
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static int opt(int fd, int level, int name)
{
	int v = -1;
	socklen_t l = sizeof(v);

	if (getsockopt(fd, level, name, &v, &l))
		zdtm_fail("getsockopt(%d, %d): %s", level, name, strerror(errno));
	return v;
}

static void on(int fd, int level, int name)
{
	int one = 1;

	if (setsockopt(fd, level, name, &one, sizeof(one)))
		zdtm_fail("setsockopt(%d, %d): %s", level, name, strerror(errno));
}

static int port_of(int fd)
{
	struct sockaddr_storage ss;
	socklen_t l = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &l))
		zdtm_fail("getsockname: %s", strerror(errno));
	return ntohs(((struct sockaddr_in *)&ss)->sin_port); /* same offset in sin6 */
}

static void check_accept(int l, int family, int port, const char *what)
{
	struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
	int c = socket(family, SOCK_STREAM, 0), s, fl;
	char buf[8];

	a4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a6.sin6_addr = in6addr_loopback;
	if (connect(c, family == AF_INET ? (struct sockaddr *)&a4 : (struct sockaddr *)&a6,
		    family == AF_INET ? sizeof(a4) : sizeof(a6)))
		zdtm_fail("%s: connect: %s", what, strerror(errno));
	fl = fcntl(l, F_GETFL);
	fcntl(l, F_SETFL, fl & ~O_NONBLOCK);
	s = accept(l, NULL, NULL);
	fcntl(l, F_SETFL, fl);
	if (s < 0)
		zdtm_fail("%s: accept: %s", what, strerror(errno));
	if (write(c, "ping", 4) != 4 || read(s, buf, 4) != 4 || memcmp(buf, "ping", 4))
		zdtm_fail("%s: data through the accepted connection", what);
	close(c);
	close(s);
}

int main(void)
{
	struct sockaddr_in a4 = { .sin_family = AF_INET };
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6 };
	int l4, l6, ub, uc, un, p4, p6, pu, rcv, rcv_after;
	char buf[16];

	zdtm_setup();
	a4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a6.sin6_addr = in6addr_loopback;

	l4 = socket(AF_INET, SOCK_STREAM, 0);
	on(l4, SOL_SOCKET, SO_REUSEADDR);
	on(l4, SOL_SOCKET, SO_KEEPALIVE);
	on(l4, IPPROTO_TCP, TCP_NODELAY);
	if (bind(l4, (struct sockaddr *)&a4, sizeof(a4)) || listen(l4, 7))
		zdtm_fail("l4: %s", strerror(errno));
	p4 = port_of(l4);

	l6 = socket(AF_INET6, SOCK_STREAM, 0);
	on(l6, IPPROTO_IPV6, IPV6_V6ONLY);
	on(l6, SOL_SOCKET, SO_REUSEPORT);
	if (bind(l6, (struct sockaddr *)&a6, sizeof(a6)) || listen(l6, 16))
		zdtm_fail("l6: %s", strerror(errno));
	fcntl(l6, F_SETFL, O_NONBLOCK);
	p6 = port_of(l6);

	ub = socket(AF_INET, SOCK_DGRAM, 0);
	rcv = 100000;
	setsockopt(ub, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
	rcv = opt(ub, SOL_SOCKET, SO_RCVBUF);
	if (bind(ub, (struct sockaddr *)&a4, sizeof(a4)))
		zdtm_fail("ub: %s", strerror(errno));
	pu = port_of(ub);
	a4.sin_port = htons(pu);
	uc = socket(AF_INET, SOCK_DGRAM, 0);
	if (connect(uc, (struct sockaddr *)&a4, sizeof(a4)))
		zdtm_fail("uc: %s", strerror(errno));
	un = socket(AF_INET, SOCK_STREAM, 0);

	zdtm_ready();
	zdtm_wait_usr1();

	if (port_of(l4) != p4 || port_of(l6) != p6 || port_of(ub) != pu)
		zdtm_fail("ports changed: %d/%d %d/%d %d/%d", port_of(l4), p4, port_of(l6), p6, port_of(ub), pu);
	if (!opt(l4, SOL_SOCKET, SO_REUSEADDR) || !opt(l4, SOL_SOCKET, SO_KEEPALIVE) ||
	    !opt(l4, IPPROTO_TCP, TCP_NODELAY) || !opt(l4, SOL_SOCKET, SO_ACCEPTCONN))
		zdtm_fail("l4 options lost");
	if (!opt(l6, IPPROTO_IPV6, IPV6_V6ONLY) || !opt(l6, SOL_SOCKET, SO_REUSEPORT) ||
	    opt(l6, SOL_SOCKET, SO_REUSEADDR) || !(fcntl(l6, F_GETFL) & O_NONBLOCK))
		zdtm_fail("l6 options lost");
	rcv_after = opt(ub, SOL_SOCKET, SO_RCVBUF);
	if (rcv_after != rcv)
		zdtm_fail("ub SO_RCVBUF %d, want %d", rcv_after, rcv);
	if (opt(un, SOL_SOCKET, SO_TYPE) != SOCK_STREAM || opt(un, SOL_SOCKET, SO_ACCEPTCONN))
		zdtm_fail("un");
	check_accept(l4, AF_INET, p4, "l4");
	check_accept(l6, AF_INET6, p6, "l6");
	if (send(uc, "dgram", 5, 0) != 5)
		zdtm_fail("uc send: %s", strerror(errno));
	if (recv(ub, buf, sizeof(buf), 0) != 5 || memcmp(buf, "dgram", 5))
		zdtm_fail("ub recv");
	zdtm_pass();
}
