/*
 * fd_locks: flock and POSIX locks on regular files.
 *
 *  a  flock(LOCK_EX) on file A
 *  b  flock(LOCK_SH) on file B
 *  c  POSIX write lock on bytes 10..19 and read lock from 100 to EOF, file C
 * After restore, checked from a forked child (other locks conflict with the
 * parent's): flock(A, LOCK_SH|LOCK_NB) fails, flock(B, LOCK_SH|LOCK_NB)
 * works, F_GETLK on C shows the parent's locks with their ranges.
 */
#include "zdtm.h"
#include <fcntl.h>
#include <sys/file.h>
#include <sys/wait.h>

static int mk(const char *name, char *path, size_t len)
{
	int fd;

	snprintf(path, len, "%s/stasis-lock-%s-XXXXXX", zdtm_tmpdir(), name);
	fd = mkstemp(path);
	if (fd < 0)
		zdtm_fail("mkstemp: %s", strerror(errno));
	return fd;
}

static int setlk(int fd, short type, off_t start, off_t len)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len };
	return fcntl(fd, F_SETLK, &fl);
}

int main(void)
{
	char pa[4096], pb[4096], pc[4096];
	int a, b, c, st;
	pid_t child, me = getpid();

	zdtm_setup();
	a = mk("a", pa, sizeof(pa));
	b = mk("b", pb, sizeof(pb));
	c = mk("c", pc, sizeof(pc));
	if (flock(a, LOCK_EX) || flock(b, LOCK_SH))
		zdtm_fail("flock: %s", strerror(errno));
	if (setlk(c, F_WRLCK, 10, 10) || setlk(c, F_RDLCK, 100, 0))
		zdtm_fail("F_SETLK: %s", strerror(errno));

	zdtm_ready();
	zdtm_wait_usr1();

	child = fork();
	if (child == 0) {
		struct flock fl;
		int a2 = open(pa, O_RDONLY), b2 = open(pb, O_RDONLY), c2 = open(pc, O_RDWR);

		if (flock(a2, LOCK_SH | LOCK_NB) != -1 || errno != EWOULDBLOCK)
			zdtm_fail("A is not flock()ed exclusively");
		if (flock(b2, LOCK_SH | LOCK_NB))
			zdtm_fail("B: shared flock refused: %s", strerror(errno));
		if (flock(b2, LOCK_EX | LOCK_NB) != -1)
			zdtm_fail("B is not flock()ed");
		memset(&fl, 0, sizeof(fl));
		fl.l_type = F_RDLCK;
		fl.l_start = 0;
		fl.l_len = 50;
		if (fcntl(c2, F_GETLK, &fl) || fl.l_type != F_WRLCK || fl.l_start != 10 || fl.l_len != 10 || fl.l_pid != me)
			zdtm_fail("C: write lock 10..19 of %d missing (type %d start %ld len %ld pid %d)", me, fl.l_type,
				  (long)fl.l_start, (long)fl.l_len, fl.l_pid);
		memset(&fl, 0, sizeof(fl));
		fl.l_type = F_WRLCK;
		fl.l_start = 200;
		fl.l_len = 1;
		if (fcntl(c2, F_GETLK, &fl) || fl.l_type != F_RDLCK || fl.l_start != 100 || fl.l_len != 0)
			zdtm_fail("C: read lock from 100 missing");
		if (setlk(c2, F_RDLCK, 100, 5))
			zdtm_fail("C: a read lock should be shared");
		_exit(0);
	}
	if (child < 0 || waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st))
		exit(1); /* the child printed FAIL */
	unlink(pa);
	unlink(pb);
	unlink(pc);
	zdtm_pass();
	return 0;
}
