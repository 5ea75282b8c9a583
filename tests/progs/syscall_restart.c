/*
 * syscall_restart: system calls in progress at dump time.
 *
 * A thread sits in read() on an empty pipe; the main thread prints READY
 * and sleeps 5 s in nanosleep(). The harness dumps during that sleep.
 * After the restore the sleep must complete (EINTR with the remaining time
 * is retried, as nanosleep's contract allows; elapsed CLOCK_MONOTONIC time
 * must be >= 5 s), then after SIGUSR1 the main thread writes to the pipe and
 * the reader must get exactly that data from its one original read() call:
 * no error, no early return.
 */
#include "zdtm.h"
#include <pthread.h>
#include <time.h>

static int p[2];
static volatile int reader_started, reader_done;
static volatile ssize_t reader_ret;
static volatile int reader_errno;
static char reader_buf[64];

static void *reader(void *arg)
{
	(void)arg;
	reader_started = 1;
	reader_ret = read(p[0], reader_buf, sizeof(reader_buf) - 1);
	reader_errno = errno;
	reader_done = 1;
	return NULL;
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(void)
{
	struct timespec req = { 5, 0 }, rem;
	pthread_t tid;
	double start, slept;
	int eintr = 0;

	zdtm_setup();
	if (pipe(p))
		zdtm_fail("pipe: %s", strerror(errno));
	if (pthread_create(&tid, NULL, reader, NULL))
		zdtm_fail("pthread_create");
	while (!reader_started)
		usleep(1000);
	usleep(50000); /* let it enter read() */

	zdtm_ready();
	start = now();
	while (nanosleep(&req, &rem)) {
		if (errno != EINTR)
			zdtm_fail("nanosleep: %s", strerror(errno));
		eintr++;
		req = rem;
	}
	slept = now() - start;
	if (slept < 4.999)
		zdtm_fail("nanosleep(5 s) returned after %.3f s", slept);
	if (reader_done)
		zdtm_fail("read() on the empty pipe returned %zd (%s) before data was written",
			  reader_ret, strerror(reader_errno));

	zdtm_wait_usr1();

	if (write(p[1], "wake up", 7) != 7)
		zdtm_fail("write: %s", strerror(errno));
	pthread_join(tid, NULL);
	if (reader_ret != 7 || memcmp(reader_buf, "wake up", 7))
		zdtm_fail("read() returned %zd (%s), data \"%.7s\"", reader_ret,
			  reader_ret < 0 ? strerror(reader_errno) : "ok", reader_buf);
	if (eintr)
		zdtm_say("note: nanosleep was interrupted %d time(s) and resumed", eintr);
	zdtm_pass();
	return 0;
}
