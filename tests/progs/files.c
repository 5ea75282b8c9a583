/*
 * files: open file descriptions and their state.
 *
 *  fd A   a regular file O_RDWR|O_CLOEXEC, 1000 bytes written, offset 777
 *  fd A2  dup(A): shares A's offset
 *  fd 100 a second file O_WRONLY|O_APPEND|O_NONBLOCK (dup2 to a high number)
 *  fd N   /dev/null O_RDONLY
 *  pipe   both ends kept, 10 KiB buffered, read end O_NONBLOCK
 * After SIGUSR1: offsets, F_GETFL/F_GETFD, fd numbers, the shared offset,
 * append behaviour, /dev/null, and the pipe's exact content are checked.
 */
#include "zdtm.h"
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#define PIPE_BYTES (10 * 1024)
#define HIGH_FD 100

static void expect_fl(int fd, int want_fl, int want_fd, const char *what)
{
	int fl = fcntl(fd, F_GETFL), fdf = fcntl(fd, F_GETFD);

	if (fl < 0 || fdf < 0)
		zdtm_fail("%s (fd %d) is not open: %s", what, fd, strerror(errno));
	/* The kernel adds O_LARGEFILE (0100000 on x86_64, 0 in glibc's headers). */
	fl &= ~0100000;
	if (fl != want_fl)
		zdtm_fail("%s: F_GETFL %#o, want %#o", what, fl, want_fl);
	if (fdf != want_fd)
		zdtm_fail("%s: F_GETFD %#x, want %#x", what, fdf, want_fd);
}

static unsigned char pat(size_t i)
{
	return (unsigned char)(i * 31 + (i >> 8) + 7);
}

int main(void)
{
	char a_path[4096], b_path[4096];
	unsigned char buf[PIPE_BYTES + 16];
	int a, a2, b, devnull, p[2];
	struct stat st;
	off_t off;
	size_t i;

	zdtm_setup();

	snprintf(a_path, sizeof(a_path), "%s/stasis-files-a-XXXXXX", zdtm_tmpdir());
	a = mkostemp(a_path, O_CLOEXEC);
	if (a < 0)
		zdtm_fail("mkostemp: %s", strerror(errno));
	for (i = 0; i < 1000; i++)
		buf[i] = pat(i);
	if (write(a, buf, 1000) != 1000)
		zdtm_fail("write a: %s", strerror(errno));
	if (lseek(a, 777, SEEK_SET) != 777)
		zdtm_fail("lseek: %s", strerror(errno));
	a2 = dup(a);

	snprintf(b_path, sizeof(b_path), "%s/stasis-files-b-XXXXXX", zdtm_tmpdir());
	b = mkstemp(b_path);
	if (b < 0)
		zdtm_fail("mkstemp: %s", strerror(errno));
	close(b);
	b = open(b_path, O_WRONLY | O_APPEND | O_NONBLOCK);
	if (b < 0 || dup2(b, HIGH_FD) != HIGH_FD)
		zdtm_fail("open b: %s", strerror(errno));
	close(b);
	if (write(HIGH_FD, "first,", 6) != 6)
		zdtm_fail("write b: %s", strerror(errno));

	devnull = open("/dev/null", O_RDONLY);
	if (devnull < 0)
		zdtm_fail("open /dev/null: %s", strerror(errno));

	if (pipe(p))
		zdtm_fail("pipe: %s", strerror(errno));
	for (i = 0; i < PIPE_BYTES; i++)
		buf[i] = pat(i * 3);
	if (write(p[1], buf, PIPE_BYTES) != PIPE_BYTES)
		zdtm_fail("write pipe: %s", strerror(errno));
	fcntl(p[0], F_SETFL, O_NONBLOCK);

	zdtm_ready();
	zdtm_wait_usr1();

	expect_fl(a, O_RDWR, FD_CLOEXEC, "file a");
	expect_fl(a2, O_RDWR, 0, "dup of a");
	expect_fl(HIGH_FD, O_WRONLY | O_APPEND | O_NONBLOCK, 0, "file b");
	expect_fl(devnull, O_RDONLY, 0, "/dev/null");
	expect_fl(p[0], O_RDONLY | O_NONBLOCK, 0, "pipe read end");
	expect_fl(p[1], O_WRONLY, 0, "pipe write end");

	off = lseek(a, 0, SEEK_CUR);
	if (off != 777)
		zdtm_fail("file a offset %lld, want 777", (long long)off);
	if (read(a2, buf, 10) != 10)
		zdtm_fail("read dup of a: %s", strerror(errno));
	for (i = 0; i < 10; i++)
		if (buf[i] != pat(777 + i))
			zdtm_fail("file a content at %zu", 777 + i);
	if (lseek(a, 0, SEEK_CUR) != 787)
		zdtm_fail("a and its dup no longer share the offset");
	if (fstat(a, &st) || st.st_size != 1000)
		zdtm_fail("file a size %lld", (long long)st.st_size);

	if (write(HIGH_FD, "second", 6) != 6)
		zdtm_fail("write b: %s", strerror(errno));
	{
		char got[32] = { 0 };
		int fd = open(b_path, O_RDONLY);
		ssize_t n = read(fd, got, sizeof(got) - 1);
		if (n != 12 || strcmp(got, "first,second"))
			zdtm_fail("file b holds \"%s\"", got);
		close(fd);
	}

	if (fstat(devnull, &st) || !S_ISCHR(st.st_mode) || st.st_rdev != makedev(1, 3))
		zdtm_fail("/dev/null fd is not /dev/null");

	{
		size_t got = 0;
		ssize_t n;
		while ((n = read(p[0], buf + got, sizeof(buf) - got)) > 0)
			got += n;
		if (n < 0 && errno != EAGAIN)
			zdtm_fail("read pipe: %s", strerror(errno));
		if (got != PIPE_BYTES)
			zdtm_fail("pipe held %zu bytes, want %d", got, PIPE_BYTES);
		for (i = 0; i < PIPE_BYTES; i++)
			if (buf[i] != pat(i * 3))
				zdtm_fail("pipe byte %zu differs", i);
	}
	if (write(p[1], "x", 1) != 1 || read(p[0], buf, 1) != 1 || buf[0] != 'x')
		zdtm_fail("pipe ends are not connected");

	unlink(a_path);
	unlink(b_path);
	zdtm_pass();
	return 0;
}
