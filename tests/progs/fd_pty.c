/*
 * fd_pty: a pseudo-terminal pair opened inside the process.
 *
 *  m  posix_openpt(O_RDWR|O_NOCTTY), unlocked
 *  s  its slave, O_RDWR|O_NOCTTY; raw mode except ISIG, VMIN 1, VTIME 3,
 *     window 33x111
 * After restore: ptsname(m) names the same device as s (st_rdev), the
 * slave path is unchanged, termios and window size are intact, and bytes
 * flow both ways.
 */
#include "zdtm.h"
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>

int main(void)
{
	char name[64], name2[64], buf[16];
	struct termios t, t2;
	struct winsize ws = { .ws_row = 33, .ws_col = 111 };
	struct stat a, b;
	int m, s;

	zdtm_setup();
	m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0 || grantpt(m) || unlockpt(m) || ptsname_r(m, name, sizeof(name)))
		zdtm_fail("posix_openpt: %s", strerror(errno));
	s = open(name, O_RDWR | O_NOCTTY);
	if (s < 0)
		zdtm_fail("open %s: %s", name, strerror(errno));
	if (tcgetattr(s, &t))
		zdtm_fail("tcgetattr: %s", strerror(errno));
	cfmakeraw(&t);
	t.c_lflag |= ISIG;
	t.c_cc[VMIN] = 1;
	t.c_cc[VTIME] = 3;
	if (tcsetattr(s, TCSANOW, &t) || ioctl(s, TIOCSWINSZ, &ws))
		zdtm_fail("tcsetattr: %s", strerror(errno));

	zdtm_ready();
	zdtm_wait_usr1();

	if (ptsname_r(m, name2, sizeof(name2)))
		zdtm_fail("ptsname: %s", strerror(errno));
	if (strcmp(name, name2))
		zdtm_fail("slave was %s, now %s", name, name2);
	if (fstat(s, &a) || stat(name2, &b) || a.st_rdev != b.st_rdev)
		zdtm_fail("the slave fd is not %s", name2);
	memset(&t2, 0, sizeof(t2));
	if (tcgetattr(s, &t2) || t2.c_lflag != t.c_lflag || t2.c_iflag != t.c_iflag || t2.c_oflag != t.c_oflag ||
	    t2.c_cc[VMIN] != 1 || t2.c_cc[VTIME] != 3)
		zdtm_fail("termios differ");
	memset(&ws, 0, sizeof(ws));
	if (ioctl(s, TIOCGWINSZ, &ws) || ws.ws_row != 33 || ws.ws_col != 111)
		zdtm_fail("window size %dx%d", ws.ws_row, ws.ws_col);
	if (write(m, "abc", 3) != 3 || read(s, buf, 3) != 3 || memcmp(buf, "abc", 3))
		zdtm_fail("master -> slave");
	if (write(s, "xyz", 3) != 3 || read(m, buf, 3) != 3 || memcmp(buf, "xyz", 3))
		zdtm_fail("slave -> master");
	zdtm_pass();
	return 0;
}
