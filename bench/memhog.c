// memhog: map MIB MiB of private anonymous memory, fill every page with a
// pattern derived from its index, print READY and wait. On SIGUSR1 it checks
// every page and prints "VERIFY OK" or "VERIFY BAD page N"; used by
// bench/run.sh to check a restored copy. Usage: memhog [MIB]  (default 1024)
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile sig_atomic_t verify_requested;

static void on_usr1(int sig) { (void)sig; verify_requested = 1; }

static uint64_t page_word(size_t page) { return 0x9e3779b97f4a7c15ULL * (page + 1); }

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
	size_t len = mib << 20, psz = (size_t)sysconf(_SC_PAGESIZE), npages = len / psz;
	uint64_t *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) { perror("mmap"); return 1; }
	size_t words = psz / sizeof(uint64_t);
	for (size_t p = 0; p < npages; p++) {
		uint64_t w = page_word(p), *pg = mem + p * words;
		for (size_t i = 0; i < words; i++) pg[i] = w + i;
	}
	struct sigaction sa = { .sa_handler = on_usr1 };
	sigaction(SIGUSR1, &sa, NULL);
	printf("READY %zu MiB at %p\n", mib, (void *)mem);
	fflush(stdout);
	for (;;) {
		pause();
		if (!verify_requested) continue;
		verify_requested = 0;
		size_t bad = npages;
		for (size_t p = 0; p < npages && bad == npages; p++) {
			uint64_t w = page_word(p), *pg = mem + p * words;
			for (size_t i = 0; i < words; i++)
				if (pg[i] != w + i) { bad = p; break; }
		}
		if (bad == npages) printf("VERIFY OK\n");
		else printf("VERIFY BAD page %zu\n", bad);
		fflush(stdout);
	}
}
