// subreaper: run a command as a child subreaper. Orphans of the command (the
// children of killed or dumped trees, trees restored with --detach) are
// reparented here and reaped at once, so their PIDs are free again when the
// next restore wants them (pid 1 in some VMs reaps late). When the command
// exits, every remaining descendant is killed. Exit status = the command's.
// Usage: subreaper CMD [ARGS...]
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t cmd_pid;

static void forward(int sig) { if (cmd_pid > 0) kill(cmd_pid, sig); }

// SIGKILL every direct child; returns how many were found.
static int kill_children(void)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	int n = 0;
	pid_t self = getpid();
	if (!d) return 0;
	while ((e = readdir(d))) {
		char path[64], buf[512];
		pid_t pid = (pid_t)atoi(e->d_name);
		if (pid <= 0) continue;
		snprintf(path, sizeof path, "/proc/%d/stat", pid);
		FILE *f = fopen(path, "r");
		if (!f) continue;
		size_t r = fread(buf, 1, sizeof buf - 1, f);
		fclose(f);
		buf[r] = 0;
		char *p = strrchr(buf, ')');
		int ppid;
		if (p && sscanf(p + 2, "%*c %d", &ppid) == 1 && ppid == self) {
			kill(pid, SIGKILL);
			n++;
		}
	}
	closedir(d);
	return n;
}

int main(int argc, char **argv)
{
	if (argc < 2) { fprintf(stderr, "usage: subreaper CMD [ARGS...]\n"); return 2; }
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) { perror("PR_SET_CHILD_SUBREAPER"); return 1; }
	cmd_pid = fork();
	if (cmd_pid < 0) { perror("fork"); return 1; }
	if (cmd_pid == 0) {
		execvp(argv[1], argv + 1);
		perror(argv[1]);
		_exit(127);
	}
	struct sigaction sa = { .sa_handler = forward };
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	int status = 0, code = -1;
	for (;;) {
		int st;
		pid_t pid = waitpid(-1, &st, 0);
		if (pid < 0) {
			if (errno == EINTR) continue;
			break; // ECHILD
		}
		if (pid == cmd_pid) {
			status = st;
			code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		}
		if (code >= 0) kill_children();
	}
	(void)status;
	return code < 0 ? 1 : code;
}
