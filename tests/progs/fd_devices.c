/*
 * fd_devices: /dev/zero and /dev/urandom as plain device files.
 *
 *  z  /dev/zero O_RDWR, mapped MAP_PRIVATE (anonymous-like) and written
 *  u  /dev/urandom O_RDONLY|O_CLOEXEC
 * After restore: the fds lead to the same devices (st_rdev), read works,
 * the private /dev/zero mapping keeps what was written.
 */
#include "zdtm.h"
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

int main(void)
{
	unsigned char buf[64], *map;
	struct stat sz, su;
	int z, u, nz = 0;

	zdtm_setup();
	z = open("/dev/zero", O_RDWR);
	u = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (z < 0 || u < 0)
		zdtm_fail("open: %s", strerror(errno));
	map = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE, z, 0);
	if (map == MAP_FAILED)
		zdtm_fail("mmap: %s", strerror(errno));
	map[4097] = 9;

	zdtm_ready();
	zdtm_wait_usr1();

	if (fstat(z, &sz) || fstat(u, &su) || sz.st_rdev != makedev(1, 5) || su.st_rdev != makedev(1, 9))
		zdtm_fail("devices differ");
	if ((fcntl(z, F_GETFL) & O_ACCMODE) != O_RDWR || fcntl(u, F_GETFD) != FD_CLOEXEC)
		zdtm_fail("flags lost");
	memset(buf, 1, sizeof(buf));
	if (read(z, buf, sizeof(buf)) != sizeof(buf))
		zdtm_fail("read zero");
	for (size_t i = 0; i < sizeof(buf); i++)
		nz |= buf[i];
	if (nz)
		zdtm_fail("/dev/zero gave non-zero bytes");
	if (read(u, buf, sizeof(buf)) != sizeof(buf))
		zdtm_fail("read urandom");
	if (map[4097] != 9 || map[0] != 0)
		zdtm_fail("private /dev/zero mapping lost");
	zdtm_pass();
	return 0;
}
