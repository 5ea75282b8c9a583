/*
 * fd_memfd: memfds with contents, seals and mappings.
 *
 *  m1  memfd "stasis-m1" (MFD_ALLOW_SEALING), 3 pages of a pattern, offset
 *      100, sealed F_SEAL_SHRINK|F_SEAL_GROW, mapped MAP_SHARED (rw)
 *  m1b a second open file of m1 via /proc/self/fd (O_RDONLY, offset 5)
 *  m2  memfd "stasis-m2": 1 page, mapped MAP_SHARED, then its fd closed
 *  m3  memfd "stasis-m3": mapped MAP_PRIVATE and written through (COW)
 * After restore: names, contents, offsets, seals; a write through m1's
 * mapping is seen by read(m1) (same memfd); m2's mapping keeps its bytes;
 * m3's private copy differs from its file.
 */
#include "zdtm.h"
#include <fcntl.h>
#include <sys/mman.h>

#define PG 4096

static unsigned char pat(size_t i) { return (unsigned char)(i * 7 + 3); }

int main(void)
{
	char path[64], link[256], buf[3 * PG];
	unsigned char *map1, *map2, *map3;
	int m1, m1b, m2, m3, seals;
	ssize_t n;

	zdtm_setup();
	m1 = memfd_create("stasis-m1", MFD_ALLOW_SEALING);
	m2 = memfd_create("stasis-m2", 0);
	m3 = memfd_create("stasis-m3", MFD_CLOEXEC);
	if (m1 < 0 || m2 < 0 || m3 < 0)
		zdtm_fail("memfd_create: %s", strerror(errno));
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = pat(i);
	if (write(m1, buf, sizeof(buf)) != sizeof(buf) || write(m2, buf, PG) != PG || write(m3, buf, PG) != PG)
		zdtm_fail("write: %s", strerror(errno));
	if (fcntl(m1, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW))
		zdtm_fail("F_ADD_SEALS: %s", strerror(errno));
	lseek(m1, 100, SEEK_SET);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", m1);
	m1b = open(path, O_RDONLY);
	if (m1b < 0)
		zdtm_fail("reopen m1: %s", strerror(errno));
	lseek(m1b, 5, SEEK_SET);
	map1 = mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, m1, 0);
	map2 = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, m2, 0);
	map3 = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, m3, 0);
	if (map1 == MAP_FAILED || map2 == MAP_FAILED || map3 == MAP_FAILED)
		zdtm_fail("mmap: %s", strerror(errno));
	close(m2);
	map2[10] = 0xee;
	map3[0] = 0x55;

	zdtm_ready();
	zdtm_wait_usr1();

	n = readlink(path, link, sizeof(link) - 1);
	link[n > 0 ? n : 0] = 0;
	if (strcmp(link, "/memfd:stasis-m1 (deleted)"))
		zdtm_fail("m1 links to %s", link);
	if (lseek(m1, 0, SEEK_CUR) != 100 || lseek(m1b, 0, SEEK_CUR) != 5)
		zdtm_fail("offsets lost");
	if ((fcntl(m1b, F_GETFL) & O_ACCMODE) != O_RDONLY)
		zdtm_fail("m1b is not read-only");
	seals = fcntl(m1, F_GET_SEALS);
	if (seals != (F_SEAL_SHRINK | F_SEAL_GROW))
		zdtm_fail("m1 seals %#x", seals);
	if (fcntl(m3, F_GET_SEALS) != F_SEAL_SEAL || fcntl(m3, F_GETFD) != FD_CLOEXEC)
		zdtm_fail("m3 seals or flags");
	for (size_t i = 0; i < 3 * PG; i++)
		if (map1[i] != pat(i))
			zdtm_fail("map1[%zu] = %#x", i, map1[i]);
	map1[200] = 0xab;
	if (pread(m1, buf, 3 * PG, 0) != 3 * PG || (unsigned char)buf[200] != 0xab || (unsigned char)buf[201] != pat(201))
		zdtm_fail("m1's mapping and fd are not the same memfd");
	if (pread(m1b, buf, 1, 200) != 1 || (unsigned char)buf[0] != 0xab)
		zdtm_fail("m1b is not m1");
	if (ftruncate(m1, PG) != -1)
		zdtm_fail("F_SEAL_SHRINK lost");
	if (map2[10] != 0xee || map2[11] != pat(11))
		zdtm_fail("map2 contents");
	if (map3[0] != 0x55 || map3[1] != pat(1))
		zdtm_fail("map3 contents");
	if (pread(m3, buf, 1, 0) != 1 || (unsigned char)buf[0] != pat(0))
		zdtm_fail("m3's private mapping leaked into the file");
	zdtm_pass();
	return 0;
}
