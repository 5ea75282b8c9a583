/*
 * threads_avx: four threads each hold a distinct pattern in ymm2..ymm5 and
 * count in a loop (with a 1 ms nanosleep per round, so a thread may be in a
 * syscall or in user code at dump time). The loop is one asm block, so the
 * compiler never touches those registers. After SIGUSR1 each thread stores
 * its registers; they must be unchanged, and every counter must have kept
 * increasing across the checkpoint. Build with -mavx.
 */
#include "zdtm.h"
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#define NTHREADS 4
#define NREGS 4

struct worker {
	pthread_t tid;
	uint64_t in[NREGS * 4];  /* 4 ymm registers of 4 u64 */
	uint64_t out[NREGS * 4];
	volatile uint64_t counter;
	volatile int stop;
};

static struct worker workers[NTHREADS];

static void *run(void *arg)
{
	struct worker *w = arg;
	struct timespec ts = { 0, 1000000 };

	asm volatile(
		"vmovdqu   0(%[in]), %%ymm2\n\t"
		"vmovdqu  32(%[in]), %%ymm3\n\t"
		"vmovdqu  64(%[in]), %%ymm4\n\t"
		"vmovdqu  96(%[in]), %%ymm5\n\t"
		"1:\n\t"
		"incq (%[cnt])\n\t"
		"movl $35, %%eax\n\t"          /* nanosleep(&ts, NULL) */
		"syscall\n\t"
		"cmpl $0, (%[stop])\n\t"
		"je 1b\n\t"
		"vmovdqu %%ymm2,   0(%[out])\n\t"
		"vmovdqu %%ymm3,  32(%[out])\n\t"
		"vmovdqu %%ymm4,  64(%[out])\n\t"
		"vmovdqu %%ymm5,  96(%[out])\n\t"
		"vzeroupper\n\t"
		:
		: [in] "r"(w->in), [out] "r"(w->out), [cnt] "r"(&w->counter),
		  [stop] "r"(&w->stop), "D"(&ts), "S"(0L)
		: "rax", "rcx", "r11", "memory", "cc",
		  "xmm2", "xmm3", "xmm4", "xmm5");
	return NULL;
}

static uint64_t snap(int i)
{
	return __atomic_load_n(&workers[i].counter, __ATOMIC_RELAXED);
}

int main(void)
{
	uint64_t before[NTHREADS], mid[NTHREADS], after[NTHREADS];
	struct timespec pause = { 0, 300000000 };
	int i, j;

	zdtm_setup();
	for (i = 0; i < NTHREADS; i++) {
		for (j = 0; j < NREGS * 4; j++)
			workers[i].in[j] = 0x5741535400000000ULL ^
					   ((uint64_t)(i + 1) << 40) ^
					   ((uint64_t)j * 0x9e3779b97f4a7c15ULL);
		if (pthread_create(&workers[i].tid, NULL, run, &workers[i]))
			zdtm_fail("pthread_create");
	}
	/* Wait until every thread has started counting. */
	for (i = 0; i < NTHREADS; i++)
		while (snap(i) < 3)
			nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
	for (i = 0; i < NTHREADS; i++)
		before[i] = snap(i);

	zdtm_ready();
	zdtm_wait_usr1();

	for (i = 0; i < NTHREADS; i++)
		mid[i] = snap(i);
	while (nanosleep(&pause, &pause) && errno == EINTR)
		;
	for (i = 0; i < NTHREADS; i++)
		after[i] = snap(i);
	for (i = 0; i < NTHREADS; i++) {
		workers[i].stop = 1;
		pthread_join(workers[i].tid, NULL);
	}
	for (i = 0; i < NTHREADS; i++) {
		if (mid[i] < before[i])
			zdtm_fail("thread %d counter went back: %llu -> %llu", i,
				  (unsigned long long)before[i], (unsigned long long)mid[i]);
		if (after[i] <= mid[i])
			zdtm_fail("thread %d counter stopped at %llu", i,
				  (unsigned long long)mid[i]);
		for (j = 0; j < NREGS * 4; j++)
			if (workers[i].in[j] != workers[i].out[j])
				zdtm_fail("thread %d ymm%d lane %d: %016llx != %016llx",
					  i, 2 + j / 4, j % 4,
					  (unsigned long long)workers[i].out[j],
					  (unsigned long long)workers[i].in[j]);
	}
	zdtm_pass();
	return 0;
}
