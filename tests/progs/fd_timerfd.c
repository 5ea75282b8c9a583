/*
 * fd_timerfd: timerfds in their three states.
 *
 *  t1  CLOCK_MONOTONIC, armed: first expiry in 30 s, interval 10 s
 *  t2  CLOCK_REALTIME, TFD_NONBLOCK, a 1 ms one-shot that expired before the
 *      dump: 1 tick pending, disarmed
 *  t3  CLOCK_BOOTTIME, disarmed
 *  t4  CLOCK_MONOTONIC, TFD_TIMER_ABSTIME, 40 s from now
 * After restore: t1 has 20..30 s left and a 10 s interval; t2 reads its
 * tick; t3 is disarmed, then fires when armed; t4 has <= 40 s left.
 */
#include "zdtm.h"
#include <fcntl.h>
#include <stdint.h>
#include <sys/timerfd.h>
#include <time.h>

int main(void)
{
	struct itimerspec its, cur;
	struct timespec now;
	uint64_t ticks, ticks_before;
	int t1, t2, t3, t4;

	zdtm_setup();
	t1 = timerfd_create(CLOCK_MONOTONIC, 0);
	t2 = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK);
	t3 = timerfd_create(CLOCK_BOOTTIME, TFD_CLOEXEC);
	t4 = timerfd_create(CLOCK_MONOTONIC, 0);
	if (t1 < 0 || t2 < 0 || t3 < 0 || t4 < 0)
		zdtm_fail("timerfd_create: %s", strerror(errno));
	memset(&its, 0, sizeof(its));
	its.it_value.tv_sec = 30;
	its.it_interval.tv_sec = 10;
	if (timerfd_settime(t1, 0, &its, NULL))
		zdtm_fail("settime t1: %s", strerror(errno));
	memset(&its, 0, sizeof(its));
	its.it_value.tv_nsec = 1000000;
	if (timerfd_settime(t2, 0, &its, NULL)) /* one-shot: expires once */
		zdtm_fail("settime t2: %s", strerror(errno));
	usleep(20000);
	clock_gettime(CLOCK_MONOTONIC, &now);
	its.it_value.tv_sec = now.tv_sec + 40;
	its.it_value.tv_nsec = now.tv_nsec;
	if (timerfd_settime(t4, TFD_TIMER_ABSTIME, &its, NULL))
		zdtm_fail("settime t4: %s", strerror(errno));
	/* ticks pending on t2 (read through fdinfo would consume nothing) */
	{
		char path[64], buf[512];
		FILE *f;
		snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", t2);
		f = fopen(path, "r");
		ticks_before = 0;
		while (f && fgets(buf, sizeof(buf), f))
			sscanf(buf, "ticks: %llu", (unsigned long long *)&ticks_before);
		if (f)
			fclose(f);
		if (ticks_before != 1)
			zdtm_fail("t2 has only %llu ticks", (unsigned long long)ticks_before);
	}

	zdtm_ready();
	zdtm_wait_usr1();

	if (timerfd_gettime(t1, &cur))
		zdtm_fail("gettime t1: %s", strerror(errno));
	if (cur.it_interval.tv_sec != 10 || cur.it_interval.tv_nsec != 0)
		zdtm_fail("t1 interval %ld.%09ld", (long)cur.it_interval.tv_sec, cur.it_interval.tv_nsec);
	if (cur.it_value.tv_sec >= 30 || cur.it_value.tv_sec < 5)
		zdtm_fail("t1 has %ld s left", (long)cur.it_value.tv_sec);
	if (!(fcntl(t2, F_GETFL) & O_NONBLOCK) || fcntl(t3, F_GETFD) != FD_CLOEXEC)
		zdtm_fail("flags lost");
	if (read(t2, &ticks, 8) != 8)
		zdtm_fail("read t2: %s", strerror(errno));
	if (ticks != ticks_before)
		zdtm_fail("t2: %llu ticks, want %llu", (unsigned long long)ticks, (unsigned long long)ticks_before);
	if (timerfd_gettime(t3, &cur) || cur.it_value.tv_sec || cur.it_value.tv_nsec)
		zdtm_fail("t3 is armed");
	if (timerfd_gettime(t4, &cur) || cur.it_value.tv_sec > 40 || cur.it_value.tv_sec < 5)
		zdtm_fail("t4 has %ld s left", (long)cur.it_value.tv_sec);
	memset(&its, 0, sizeof(its));
	its.it_value.tv_nsec = 1000000;
	if (timerfd_settime(t3, 0, &its, NULL))
		zdtm_fail("settime t3: %s", strerror(errno));
	if (read(t3, &ticks, 8) != 8 || ticks != 1)
		zdtm_fail("t3 does not fire");
	zdtm_pass();
	return 0;
}
