/*
 * mem SIZE_MB [SEED]: memory of every common kind, verified byte for byte.
 *
 *  - SIZE_MB of private anonymous memory, every page filled with a pattern
 *    derived from its index and the seed;
 *  - 16 MiB of private anonymous memory never touched (must read as zeros
 *    and need not be dumped);
 *  - 4 MiB MAP_SHARED|MAP_ANONYMOUS, filled;
 *  - a private mapping of a temp file with some pages written (COW): written
 *    pages keep the new data, the others show the file;
 *  - a shared mapping of a file that is then unlinked;
 *  - a MAP_GROWSDOWN region, filled.
 * After SIGUSR1 every byte is compared (8 bytes at a time), then PASS.
 */
#include "zdtm.h"
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define PAGE 4096UL

static uint64_t seed;

static inline uint64_t word(uint64_t region, uint64_t page, uint64_t i)
{
	uint64_t x = seed ^ (region << 56) ^ (page * 0x9e3779b97f4a7c15ULL) ^ (i * 0xff51afd7ed558ccdULL);
	return x ^ (x >> 29);
}

static void fill(void *p, size_t len, uint64_t region)
{
	uint64_t *w = p;
	size_t pages = len / PAGE, pg, i;

	for (pg = 0; pg < pages; pg++)
		for (i = 0; i < PAGE / 8; i++)
			w[pg * (PAGE / 8) + i] = word(region, pg, i);
}

static void verify(const char *what, const void *p, size_t len, uint64_t region,
		   size_t first_page)
{
	const uint64_t *w = p;
	size_t pages = len / PAGE, pg, i;

	for (pg = 0; pg < pages; pg++)
		for (i = 0; i < PAGE / 8; i++)
			if (w[pg * (PAGE / 8) + i] != word(region, pg + first_page, i))
				zdtm_fail("%s: page %zu word %zu differs (%016llx)", what,
					  pg + first_page, i,
					  (unsigned long long)w[pg * (PAGE / 8) + i]);
}

static void verify_zero(const char *what, const void *p, size_t len)
{
	const uint64_t *w = p;
	size_t i;

	for (i = 0; i < len / 8; i++)
		if (w[i])
			zdtm_fail("%s: word %zu is not zero", what, i);
}

static void *map(size_t len, int prot, int flags, int fd, const char *what)
{
	void *p = mmap(NULL, len, prot, flags, fd, 0);
	if (p == MAP_FAILED)
		zdtm_fail("mmap %s: %s", what, strerror(errno));
	return p;
}

/* A temp file of `pages` pages filled with region `region`'s pattern. */
static int make_file(char *path, size_t size, size_t pages, uint64_t region)
{
	int fd;
	void *buf;

	snprintf(path, size, "%s/stasis-mem-XXXXXX", zdtm_tmpdir());
	fd = mkstemp(path);
	if (fd < 0)
		zdtm_fail("mkstemp %s: %s", path, strerror(errno));
	buf = map(pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, "buf");
	fill(buf, pages * PAGE, region);
	if (write(fd, buf, pages * PAGE) != (ssize_t)(pages * PAGE))
		zdtm_fail("write %s: %s", path, strerror(errno));
	munmap(buf, pages * PAGE);
	return fd;
}

int main(int argc, char **argv)
{
	size_t big_len, untouched_len = 16UL << 20, shared_len = 4UL << 20;
	size_t file_pages = 64, del_pages = 32, gd_len = 64 * PAGE, i;
	char file_path[4096], del_path[4096];
	uint8_t *big, *untouched, *shared, *fmap, *dmap, *gd;
	int fd, dfd;

	if (argc < 2 || atol(argv[1]) <= 0) {
		fprintf(stderr, "usage: %s SIZE_MB [SEED]\n", argv[0]);
		return 2;
	}
	big_len = (size_t)atol(argv[1]) << 20;
	seed = argc > 2 ? strtoull(argv[2], NULL, 0) : 0x5354415349530001ULL;
	zdtm_setup();

	big = map(big_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, "big");
	fill(big, big_len, 1);
	untouched = map(untouched_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, "untouched");
	shared = map(shared_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, "shared");
	fill(shared, shared_len, 2);

	/* Private file mapping; every fourth page written (COW copies). */
	fd = make_file(file_path, sizeof(file_path), file_pages, 3);
	fmap = map(file_pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, "file");
	close(fd);
	for (i = 0; i < file_pages; i += 4)
		fill(fmap + i * PAGE, PAGE, 4 + i);

	/* Shared mapping of a file that no longer has a name. */
	dfd = make_file(del_path, sizeof(del_path), del_pages, 5);
	dmap = map(del_pages * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, dfd, "deleted");
	close(dfd);
	if (unlink(del_path))
		zdtm_fail("unlink %s: %s", del_path, strerror(errno));
	fill(dmap + 8 * PAGE, 8 * PAGE, 6);

	gd = map(gd_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN, -1, "growsdown");
	fill(gd, gd_len, 7);

	zdtm_ready();
	zdtm_wait_usr1();

	verify("anonymous", big, big_len, 1, 0);
	verify_zero("untouched", untouched, untouched_len);
	verify("shared anonymous", shared, shared_len, 2, 0);
	for (i = 0; i < file_pages; i++) {
		if (i % 4 == 0)
			verify("private file (written page)", fmap + i * PAGE, PAGE, 4 + i, 0);
		else
			verify("private file (file page)", fmap + i * PAGE, PAGE, 3, i);
	}
	verify("deleted file", dmap, 8 * PAGE, 5, 0);
	verify("deleted file (written)", dmap + 8 * PAGE, 8 * PAGE, 6, 0);
	verify("deleted file", dmap + 16 * PAGE, (del_pages - 16) * PAGE, 5, 16);
	verify("growsdown", gd, gd_len, 7, 0);
	unlink(file_path);
	zdtm_pass();
	return 0;
}
