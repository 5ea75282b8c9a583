/*
 * dirty SIZE_MB [PAGES_PER_MS]: memory that keeps changing, for pre-dumps
 * and incremental dumps; verified byte for byte. SIGUSR2 asks for one
 * "bounce" (below), answered with the line BOUNCED.
 *
 *  - SIZE_MB of private anonymous memory; page p holds a pattern derived
 *    from (p, version[p]), version 0 meaning "reads as zeros". The version
 *    array lives in our own anonymous memory, so it is dumped too.
 *  - After READY, until SIGUSR1: about PAGES_PER_MS (default 1) pseudo-
 *    random pages per millisecond are rewritten whole with version + 1.
 *  - Every 100 ms (and once right after READY) the writes that tracking
 *    must also catch:
 *      - a page filled by read() from a pipe (the kernel writes it);
 *      - a page dropped with MADV_DONTNEED (must read as zeros);
 *      - a 1 MiB region mapped again over itself (MAP_FIXED: a new VMA at
 *        addresses an earlier dump stored), filled whole or only its first
 *        half (the second half must read as zeros, one page of it mapped
 *        by a read of the zero page);
 *      - two 1 MiB regions swapped with mremap (each address then holds
 *        the bytes the other one held before);
 *      - 32 pages of the 1 MiB "neighbour" region rewritten.
 *
 * The layout is fixed, inside one reservation:
 *     guard | memory (SIZE_MB) | guard | neighbour | slot | bouncer | guard
 *     | swap 0 | swap 1 | guard
 * where guard is a PROT_NONE page and slot a PROT_NONE 1 MiB placeholder.
 * The bouncer was mapped in the slot together with the neighbour (one VMA)
 * and moved out. A bounce (on SIGUSR2) moves it back into the slot, which
 * merges the two again, and home. When a dump has registered both for
 * write tracking (one uffd), that merge hands mremap (without
 * UFFD_FEATURE_EVENT_REMAP) the merged VMA to unregister: the kernel drops
 * the neighbour's tracking too, and its pages keep uffd-wp bits that later
 * writes no longer clear. The next dump must store what the neighbour
 * wrote, whatever its uffd-wp bits say; and a pre-dump that tracks it
 * again must not trust those stale bits afterwards either. The guard pages
 * keep this away from the big region.
 * After SIGUSR1 the writes stop and every page is compared, then PASS.
 */
#include "zdtm.h"
#include <stdint.h>
#include <sys/mman.h>
#include <time.h>

#define PAGE 4096UL
#define WORDS (PAGE / 8)
#define FRESH_PAGES 256UL
#define FRESH_REGION 0xf7e5ULL
#define SWAP_PAGES 256UL
#define SWAP_REGION 0x5a4bULL
#define NB_PAGES 256UL
#define NB_REGION 0x7e1bULL
#define BOUNCE_PAGES 256UL
#define BOUNCE_REGION 0xb0c3ULL

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static inline uint64_t word(uint64_t page, uint64_t version, uint64_t i)
{
	uint64_t x = (page * 0x9e3779b97f4a7c15ULL) ^ (version * 0xc2b2ae3d27d4eb4fULL + 0x5354415349530002ULL) ^
		     (i * 0xff51afd7ed558ccdULL);
	x ^= x >> 31;
	x *= 0xbf58476d1ce4e5b9ULL;
	return x ^ (x >> 29);
}

static void fill_page(uint64_t *w, uint64_t page, uint64_t version)
{
	uint64_t i;

	for (i = 0; i < WORDS; i++)
		w[i] = word(page, version, i);
}

static void *map(void *at, size_t len, int flags, const char *what)
{
	void *p = mmap(at, len, PROT_READ | PROT_WRITE, flags | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		zdtm_fail("mmap %s: %s", what, strerror(errno));
	return p;
}

static uint8_t *mem;
static uint32_t *versions;
static size_t npages;
static int pipefd[2];

/* The 1 MiB region: its generation and how many leading pages it filled. */
static uint8_t *fresh;
static uint64_t fresh_gen;
static size_t fresh_filled;
static volatile uint64_t sink;

/* Two regions at fixed addresses; which of the two is at each address. */
static uint8_t *swap_at[2];
static int swap_id[2] = { 0, 1 };

/* The neighbour region (see the top), and the version of each page. */
static uint8_t *nb;
static uint32_t nb_version[NB_PAGES];
/* The bouncer's home, and the slot it visits (next to the neighbour). */
static uint8_t *bouncer, *slot;

static void write_page(size_t pg)
{
	versions[pg]++;
	fill_page((uint64_t *)(mem + pg * PAGE), pg, versions[pg]);
}

/* The kernel writes the page: read() from a pipe into it. */
static void pipe_page(size_t pg)
{
	static uint64_t buf[WORDS];
	ssize_t n;
	size_t got = 0;

	fill_page(buf, pg, versions[pg] + 1);
	if (write(pipefd[1], buf, PAGE) != (ssize_t)PAGE)
		zdtm_fail("write to pipe: %s", strerror(errno));
	while (got < PAGE) {
		n = read(pipefd[0], mem + pg * PAGE + got, PAGE - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			zdtm_fail("read from pipe: %s", n ? strerror(errno) : "EOF");
		got += n;
	}
	versions[pg]++;
}

static void drop_page(size_t pg)
{
	if (madvise(mem + pg * PAGE, PAGE, MADV_DONTNEED))
		zdtm_fail("madvise(DONTNEED): %s", strerror(errno));
	versions[pg] = 0;
}

/* A new VMA over the old 1 MiB region, filled whole or half. */
static void remap_fresh(void)
{
	size_t pg;

	fresh = map(fresh, FRESH_PAGES * PAGE, fresh ? MAP_FIXED : 0, "fresh region");
	fresh_gen++;
	fresh_filled = fresh_gen % 2 ? FRESH_PAGES : FRESH_PAGES / 2;
	for (pg = 0; pg < fresh_filled; pg++)
		fill_page((uint64_t *)(fresh + pg * PAGE), FRESH_REGION + pg, fresh_gen);
	if (fresh_filled < FRESH_PAGES) /* maps the zero page there */
		sink += *(volatile uint64_t *)(fresh + (FRESH_PAGES - 1) * PAGE);
}

static void move(void *from, void *to, size_t len)
{
	if (mremap(from, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, to) == MAP_FAILED)
		zdtm_fail("mremap %p to %p: %s", from, to, strerror(errno));
}

static void placeholder(void *at, size_t len)
{
	if (mmap(at, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) == MAP_FAILED)
		zdtm_fail("mmap placeholder: %s", strerror(errno));
}

/* The layout described at the top; fills every region. */
static void make_layout(void)
{
	size_t mem_len = npages * PAGE, region = SWAP_PAGES * PAGE, bounce = BOUNCE_PAGES * PAGE, pg, k;
	size_t total = PAGE + mem_len + PAGE + NB_PAGES * PAGE + 2 * bounce + PAGE + 2 * region + PAGE;
	uint8_t *base = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (base == MAP_FAILED)
		zdtm_fail("mmap reservation: %s", strerror(errno));
	mem = map(base + PAGE, mem_len, MAP_FIXED, "memory");
	/* The neighbour and the bouncer, one VMA until the bouncer leaves. */
	nb = map(mem + mem_len + PAGE, NB_PAGES * PAGE + bounce, MAP_FIXED, "neighbour");
	slot = nb + NB_PAGES * PAGE;
	bouncer = slot + bounce;
	swap_at[0] = bouncer + bounce + PAGE;
	swap_at[1] = swap_at[0] + region;
	for (k = 0; k < 2; k++)
		map(swap_at[k], region, MAP_FIXED, "swap region");
	for (pg = 0; pg < npages; pg++)
		write_page(pg);
	for (pg = 0; pg < NB_PAGES; pg++)
		fill_page((uint64_t *)(nb + pg * PAGE), NB_REGION + pg, ++nb_version[pg]);
	for (pg = 0; pg < BOUNCE_PAGES; pg++)
		fill_page((uint64_t *)(slot + pg * PAGE), BOUNCE_REGION + pg, 1);
	move(slot, bouncer, bounce);
	placeholder(slot, bounce);
	for (k = 0; k < 2; k++)
		for (pg = 0; pg < SWAP_PAGES; pg++)
			fill_page((uint64_t *)(swap_at[k] + pg * PAGE), SWAP_REGION + k * SWAP_PAGES + pg, 1);
}

/* The bouncer visits the slot and comes back. */
static void bounce(void)
{
	move(bouncer, slot, BOUNCE_PAGES * PAGE);
	move(slot, bouncer, BOUNCE_PAGES * PAGE);
	placeholder(slot, BOUNCE_PAGES * PAGE);
}

static void write_neighbour(void)
{
	int n;

	for (n = 0; n < 32; n++) {
		size_t pg = next_rand() % NB_PAGES;
		fill_page((uint64_t *)(nb + pg * PAGE), NB_REGION + pg, ++nb_version[pg]);
	}
}

/* The regions at swap_at[0] and swap_at[1] trade places, through a spare. */
static void swap_regions(void)
{
	void *spare = mmap(NULL, SWAP_PAGES * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int id;

	if (spare == MAP_FAILED)
		zdtm_fail("mmap spare: %s", strerror(errno));
	move(swap_at[0], spare, SWAP_PAGES * PAGE);
	move(swap_at[1], swap_at[0], SWAP_PAGES * PAGE);
	move(spare, swap_at[1], SWAP_PAGES * PAGE);
	id = swap_id[0];
	swap_id[0] = swap_id[1];
	swap_id[1] = id;
}

static void kernel_paths(void)
{
	pipe_page(next_rand() % npages);
	drop_page(next_rand() % npages);
	remap_fresh();
	swap_regions();
	write_neighbour();
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void verify(void)
{
	size_t pg, i, k;

	for (pg = 0; pg < npages; pg++) {
		const uint64_t *w = (const uint64_t *)(mem + pg * PAGE);
		for (i = 0; i < WORDS; i++) {
			uint64_t want = versions[pg] ? word(pg, versions[pg], i) : 0;
			if (w[i] != want)
				zdtm_fail("page %zu (version %u) word %zu is %016llx, not %016llx", pg,
					  versions[pg], i, (unsigned long long)w[i], (unsigned long long)want);
		}
	}
	for (pg = 0; pg < FRESH_PAGES; pg++) {
		const uint64_t *w = (const uint64_t *)(fresh + pg * PAGE);
		for (i = 0; i < WORDS; i++) {
			uint64_t want = pg < fresh_filled ? word(FRESH_REGION + pg, fresh_gen, i) : 0;
			if (w[i] != want)
				zdtm_fail("1 MiB region (generation %llu, %zu pages filled) page %zu word %zu is %016llx, not %016llx",
					  (unsigned long long)fresh_gen, fresh_filled, pg, i,
					  (unsigned long long)w[i], (unsigned long long)want);
		}
	}
	for (pg = 0; pg < NB_PAGES; pg++) {
		const uint64_t *w = (const uint64_t *)(nb + pg * PAGE);
		for (i = 0; i < WORDS; i++) {
			uint64_t want = word(NB_REGION + pg, nb_version[pg], i);
			if (w[i] != want)
				zdtm_fail("neighbour region page %zu (version %u) word %zu is %016llx, not %016llx", pg,
					  nb_version[pg], i, (unsigned long long)w[i], (unsigned long long)want);
		}
	}
	for (pg = 0; pg < BOUNCE_PAGES; pg++) {
		const uint64_t *w = (const uint64_t *)(bouncer + pg * PAGE);
		for (i = 0; i < WORDS; i++)
			if (w[i] != word(BOUNCE_REGION + pg, 1, i))
				zdtm_fail("bouncer page %zu word %zu is %016llx", pg, i, (unsigned long long)w[i]);
	}
	for (k = 0; k < 2; k++) {
		for (pg = 0; pg < SWAP_PAGES; pg++) {
			const uint64_t *w = (const uint64_t *)(swap_at[k] + pg * PAGE);
			for (i = 0; i < WORDS; i++) {
				uint64_t want = word(SWAP_REGION + swap_id[k] * SWAP_PAGES + pg, 1, i);
				if (w[i] != want)
					zdtm_fail("swapped region %d at %p page %zu word %zu is %016llx, not %016llx",
						  swap_id[k], (void *)swap_at[k], pg, i, (unsigned long long)w[i],
						  (unsigned long long)want);
			}
		}
	}
}

int main(int argc, char **argv)
{
	struct timespec tick = { 0, 1000000 };
	uint64_t writes = 0, rounds = 0, last;
	long rate;
	sigset_t wanted;
	int sig;

	if (argc < 2 || atol(argv[1]) <= 0) {
		fprintf(stderr, "usage: %s SIZE_MB [PAGES_PER_MS]\n", argv[0]);
		return 2;
	}
	npages = ((size_t)atol(argv[1]) << 20) / PAGE;
	rate = argc > 2 ? atol(argv[2]) : 1;
	if (rate < 0)
		rate = 0;
	zdtm_setup();
	sigemptyset(&wanted);
	sigaddset(&wanted, SIGUSR1);
	sigaddset(&wanted, SIGUSR2);
	if (sigprocmask(SIG_BLOCK, &wanted, NULL))
		zdtm_fail("sigprocmask: %s", strerror(errno));
	if (pipe(pipefd))
		zdtm_fail("pipe: %s", strerror(errno));

	versions = map(NULL, npages * sizeof(*versions), 0, "versions");
	make_layout();

	zdtm_ready();
	kernel_paths();
	last = now_ms();
	for (;;) {
		long k;

		for (k = 0; k < rate; k++, writes++)
			write_page(next_rand() % npages);
		if (now_ms() - last >= 100) {
			kernel_paths();
			last = now_ms();
			rounds++;
		}
		/* Sleeps 1 ms, or returns at once when a signal is pending. */
		sig = sigtimedwait(&wanted, NULL, &tick);
		if (sig == SIGUSR1)
			break;
		if (sig == SIGUSR2) {
			bounce();
			zdtm_say("BOUNCED");
			continue;
		}
		if (sig < 0 && errno != EAGAIN && errno != EINTR)
			zdtm_fail("sigtimedwait: %s", strerror(errno));
	}
	verify();
	zdtm_say("dirty: %llu page writes, %llu rounds of pipe/DONTNEED/remap/swap", (unsigned long long)writes,
		 (unsigned long long)rounds);
	zdtm_pass();
	return 0;
}
