/*
 * tree_session: a session of five processes.
 *
 *   root (setsid: session and group leader)
 *    |- child 0            (root's group)
 *    |- child 1            (root's group)
 *    `- child 2            (setpgid(0,0): its own group)
 *        `- grandchild     (in child 2's group)
 *
 * Each records (pid, ppid, pgrp, sid) before READY and checks them again
 * after SIGUSR1, which the root forwards to its children and child 2 to the
 * grandchild. Parents collect exit codes with waitpid(); the root prints
 * PASS only if every process passed. The root's own ppid is not checked: it
 * is the restorer's business after a restore.
 */
#include "zdtm.h"
#include <sys/wait.h>

struct ids {
	pid_t pid, ppid, pgrp, sid;
};

static struct ids record(void)
{
	struct ids r = { getpid(), getppid(), getpgrp(), getsid(0) };
	return r;
}

static void check(const char *who, const struct ids *a, int check_ppid)
{
	struct ids b = record();

	if (a->pid != b.pid || (check_ppid && a->ppid != b.ppid) ||
	    a->pgrp != b.pgrp || a->sid != b.sid)
		zdtm_fail("%s: ids (pid %d ppid %d pgrp %d sid %d) became "
			  "(pid %d ppid %d pgrp %d sid %d)", who, a->pid, a->ppid,
			  a->pgrp, a->sid, b.pid, b.ppid, b.pgrp, b.sid);
}

static int wait_child(pid_t pid)
{
	int status;

	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void tell_ready(int fd)
{
	if (write(fd, "r", 1) != 1)
		zdtm_fail("ready pipe: %s", strerror(errno));
	close(fd);
}

/* A child of the root: wait for the signal, verify, forward it, exit. */
static void member(const char *who, int ready_fd, pid_t child, pid_t root, pid_t want_pgrp)
{
	struct ids me = record();

	if (me.ppid != root || me.sid != root || me.pgrp != want_pgrp)
		zdtm_fail("%s: bad initial ids ppid %d pgrp %d sid %d", who, me.ppid, me.pgrp, me.sid);
	tell_ready(ready_fd);
	zdtm_wait_usr1();
	check(who, &me, 1);
	if (child > 0) {
		kill(child, SIGUSR1);
		int rc = wait_child(child);
		if (rc != 0)
			zdtm_fail("%s: grandchild exited with %d", who, rc);
	}
	exit(0);
}

int main(void)
{
	pid_t kids[3], root;
	struct ids me;
	int p[2], i;
	char c;

	if (getpid() == getpgrp()) {
		/* setsid() refuses group leaders: continue in a child. */
		pid_t pid = fork();
		if (pid < 0)
			zdtm_fail("fork: %s", strerror(errno));
		if (pid > 0)
			exit(wait_child(pid));
	}
	if (setsid() < 0)
		zdtm_fail("setsid: %s", strerror(errno));
	zdtm_setup();
	root = getpid();
	if (pipe(p))
		zdtm_fail("pipe: %s", strerror(errno));

	for (i = 0; i < 3; i++) {
		kids[i] = fork();
		if (kids[i] < 0)
			zdtm_fail("fork: %s", strerror(errno));
		if (kids[i] > 0)
			continue;
		close(p[0]);
		if (i < 2)
			member(i ? "child1" : "child0", p[1], 0, root, root);
		/* child 2: its own group, and a grandchild in it */
		if (setpgid(0, 0))
			zdtm_fail("setpgid: %s", strerror(errno));
		pid_t me2 = getpid();
		pid_t g = fork();
		if (g < 0)
			zdtm_fail("fork: %s", strerror(errno));
		if (g == 0) {
			struct ids gi = record();
			if (gi.ppid != me2 || gi.pgrp != me2 || gi.sid != root)
				zdtm_fail("grandchild: bad initial ids");
			tell_ready(p[1]);
			zdtm_wait_usr1();
			check("grandchild", &gi, 1);
			exit(0);
		}
		member("child2", p[1], g, root, me2);
	}
	close(p[1]);
	for (i = 0; i < 4; i++)
		if (read(p[0], &c, 1) != 1)
			zdtm_fail("a child died before it was ready");
	close(p[0]);

	me = record();
	if (me.pid != me.sid || me.pid != me.pgrp)
		zdtm_fail("root is not session and group leader");

	zdtm_ready();
	zdtm_wait_usr1();

	check("root", &me, 0);
	for (i = 0; i < 3; i++)
		kill(kids[i], SIGUSR1);
	for (i = 0; i < 3; i++) {
		int rc = wait_child(kids[i]);
		if (rc != 0)
			zdtm_fail("child%d exited with %d", i, rc);
	}
	zdtm_pass();
	return 0;
}
