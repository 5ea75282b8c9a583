/*
 * fd_fifo: a named FIFO with buffered data.
 *
 *  r   $TMPDIR/stasis-fifo-XXXXXX opened O_RDONLY|O_NONBLOCK
 *  w   the same FIFO opened O_WRONLY; 3000 bytes written, 1000 read back
 *  rw  a third open, O_RDWR (fd 120)
 * After restore: r reads exactly the 2000 remaining bytes, then EAGAIN;
 * bytes written on w come out of rw; flags are intact.
 */
#include "zdtm.h"
#include <fcntl.h>
#include <sys/stat.h>

static unsigned char pat(size_t i) { return (unsigned char)(i * 5 + 1); }

int main(void)
{
	char path[4096];
	unsigned char buf[4096];
	int r, w, rw;

	zdtm_setup();
	snprintf(path, sizeof(path), "%s/stasis-fifo-%d", zdtm_tmpdir(), getpid());
	if (mkfifo(path, 0600))
		zdtm_fail("mkfifo: %s", strerror(errno));
	r = open(path, O_RDONLY | O_NONBLOCK);
	w = open(path, O_WRONLY);
	rw = open(path, O_RDWR);
	if (r < 0 || w < 0 || rw < 0 || dup2(rw, 120) != 120)
		zdtm_fail("open fifo: %s", strerror(errno));
	close(rw);
	rw = 120;
	for (size_t i = 0; i < 3000; i++)
		buf[i] = pat(i);
	if (write(w, buf, 3000) != 3000 || read(r, buf, 1000) != 1000)
		zdtm_fail("fill fifo: %s", strerror(errno));

	zdtm_ready();
	zdtm_wait_usr1();

	if (!(fcntl(r, F_GETFL) & O_NONBLOCK) || (fcntl(w, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) != O_WRONLY ||
	    (fcntl(rw, F_GETFL) & O_ACCMODE) != O_RDWR)
		zdtm_fail("flags lost");
	if (read(r, buf, sizeof(buf)) != 2000)
		zdtm_fail("FIFO does not hold 2000 bytes");
	for (size_t i = 0; i < 2000; i++)
		if (buf[i] != pat(i + 1000))
			zdtm_fail("byte %zu", i);
	if (read(r, buf, 1) != -1 || errno != EAGAIN)
		zdtm_fail("FIFO not empty");
	if (write(w, "ping", 4) != 4 || read(rw, buf, 4) != 4 || memcmp(buf, "ping", 4))
		zdtm_fail("w -> rw");
	unlink(path);
	zdtm_pass();
	return 0;
}
