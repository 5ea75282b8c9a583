/*
 * fd_inotify: an inotify instance with watches.
 *
 *  dir   $TMPDIR/stasis-inotify-XXXXXX watched IN_CREATE|IN_DELETE (wd 1)
 *  file  dir/f watched IN_MODIFY (wd 3: a watch on dir/g took wd 2, then
 *        was removed and g unlinked), non-blocking instance
 * After restore: the wds are 1 and 3 (inotify_add_watch on the same inode
 * returns the existing wd); creating dir/new gives IN_CREATE on wd 1 and
 * writing f gives IN_MODIFY on wd 3.
 */
#include "zdtm.h"
#include <fcntl.h>
#include <sys/inotify.h>

static int next_event(int fd, struct inotify_event *ev, size_t size)
{
	for (int i = 0; i < 200; i++) {
		ssize_t n = read(fd, ev, size);
		if (n > 0)
			return 1;
		if (n < 0 && errno != EAGAIN)
			zdtm_fail("read inotify: %s", strerror(errno));
		usleep(10000);
	}
	return 0;
}

int main(void)
{
	char dir[4096], f[4200], g[4200], nw[4200];
	union { struct inotify_event ev; char buf[4096]; } u;
	int in, wd1, wd2, wd3, fd;

	zdtm_setup();
	snprintf(dir, sizeof(dir), "%s/stasis-inotify-XXXXXX", zdtm_tmpdir());
	if (!mkdtemp(dir))
		zdtm_fail("mkdtemp: %s", strerror(errno));
	snprintf(f, sizeof(f), "%s/f", dir);
	snprintf(g, sizeof(g), "%s/g", dir);
	snprintf(nw, sizeof(nw), "%s/new", dir);
	close(open(f, O_CREAT | O_WRONLY, 0644));
	close(open(g, O_CREAT | O_WRONLY, 0644));
	in = inotify_init1(IN_NONBLOCK);
	if (in < 0)
		zdtm_fail("inotify_init1: %s", strerror(errno));
	wd1 = inotify_add_watch(in, dir, IN_CREATE | IN_DELETE);
	wd2 = inotify_add_watch(in, g, IN_MODIFY);
	wd3 = inotify_add_watch(in, f, IN_MODIFY);
	if (wd1 != 1 || wd2 != 2 || wd3 != 3)
		zdtm_fail("wds %d %d %d", wd1, wd2, wd3);
	inotify_rm_watch(in, wd2);
	unlink(g);
	while (read(in, u.buf, sizeof(u.buf)) > 0)
		; /* drop IN_IGNORED and IN_DELETE */

	zdtm_ready();
	zdtm_wait_usr1();

	if (!(fcntl(in, F_GETFL) & O_NONBLOCK))
		zdtm_fail("O_NONBLOCK lost");
	if (read(in, u.buf, sizeof(u.buf)) != -1 || errno != EAGAIN)
		zdtm_fail("events queued after restore (wd %d mask %#x)", u.ev.wd, u.ev.mask);
	if (inotify_add_watch(in, f, IN_MODIFY) != 3)
		zdtm_fail("f is not watched by wd 3");
	if (inotify_add_watch(in, dir, IN_CREATE | IN_DELETE) != 1)
		zdtm_fail("dir is not watched by wd 1");
	close(open(nw, O_CREAT | O_WRONLY, 0644));
	if (!next_event(in, &u.ev, sizeof(u.buf)) || u.ev.wd != 1 || !(u.ev.mask & IN_CREATE) || strcmp(u.ev.name, "new"))
		zdtm_fail("no IN_CREATE for new on wd 1 (wd %d mask %#x)", u.ev.wd, u.ev.mask);
	fd = open(f, O_WRONLY);
	if (fd < 0 || write(fd, "x", 1) != 1)
		zdtm_fail("write f");
	close(fd);
	if (!next_event(in, &u.ev, sizeof(u.buf)) || u.ev.wd != 3 || !(u.ev.mask & IN_MODIFY))
		zdtm_fail("no IN_MODIFY on wd 3 (wd %d mask %#x)", u.ev.wd, u.ev.mask);
	unlink(nw);
	unlink(f);
	rmdir(dir);
	zdtm_pass();
	return 0;
}
