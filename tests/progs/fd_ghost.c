/*
 * fd_ghost: files opened and then unlinked.
 *
 *  g1  O_RDWR, 100000 bytes of a pattern, offset 1234, unlinked
 *  g2  O_WRONLY|O_APPEND, "abc", unlinked (fd 150)
 *  g3  a second fd of g1 via dup (shared offset)
 * After restore: both are still unlinked (st_nlink 0), contents, offsets
 * and flags are intact, g1 and g3 share the offset.
 */
#include "zdtm.h"
#include <fcntl.h>
#include <sys/stat.h>

#define LEN 100000

static unsigned char pat(size_t i) { return (unsigned char)(i * 13 + (i >> 9)); }

int main(void)
{
	static unsigned char buf[LEN];
	char p1[4096], p2[4096];
	struct stat st;
	int g1, g2, g3;

	zdtm_setup();
	snprintf(p1, sizeof(p1), "%s/stasis-ghost1-XXXXXX", zdtm_tmpdir());
	snprintf(p2, sizeof(p2), "%s/stasis-ghost2-XXXXXX", zdtm_tmpdir());
	g1 = mkstemp(p1);
	g2 = mkstemp(p2);
	if (g1 < 0 || g2 < 0)
		zdtm_fail("mkstemp: %s", strerror(errno));
	for (size_t i = 0; i < LEN; i++)
		buf[i] = pat(i);
	if (write(g1, buf, LEN) != LEN)
		zdtm_fail("write: %s", strerror(errno));
	lseek(g1, 1234, SEEK_SET);
	g3 = dup(g1);
	close(g2);
	g2 = open(p2, O_WRONLY | O_APPEND);
	if (g2 < 0 || dup2(g2, 150) != 150)
		zdtm_fail("open g2: %s", strerror(errno));
	close(g2);
	g2 = 150;
	if (write(g2, "abc", 3) != 3)
		zdtm_fail("write g2");
	if (unlink(p1) || unlink(p2))
		zdtm_fail("unlink: %s", strerror(errno));

	zdtm_ready();
	zdtm_wait_usr1();

	if (fstat(g1, &st) || st.st_nlink != 0 || st.st_size != LEN)
		zdtm_fail("g1: nlink %lu size %ld", (unsigned long)st.st_nlink, (long)st.st_size);
	if (lseek(g1, 0, SEEK_CUR) != 1234)
		zdtm_fail("g1 offset");
	if (lseek(g3, 10, SEEK_SET) != 10 || lseek(g1, 0, SEEK_CUR) != 10)
		zdtm_fail("g1 and g3 do not share the offset");
	memset(buf, 0, LEN);
	if (pread(g1, buf, LEN, 0) != LEN)
		zdtm_fail("read g1");
	for (size_t i = 0; i < LEN; i++)
		if (buf[i] != pat(i))
			zdtm_fail("g1[%zu]", i);
	if ((fcntl(g2, F_GETFL) & (O_ACCMODE | O_APPEND)) != (O_WRONLY | O_APPEND))
		zdtm_fail("g2 flags %#o", fcntl(g2, F_GETFL));
	if (write(g2, "de", 2) != 2 || fstat(g2, &st) || st.st_size != 5 || st.st_nlink != 0)
		zdtm_fail("g2 append/size/nlink");
	if (access(p1, F_OK) == 0)
		zdtm_fail("g1 reappeared at its path");
	zdtm_pass();
	return 0;
}
