/* test_rmtree: see test_rmtree.h. */
#include "test_rmtree.h"

#include <ftw.h>
#include <stdio.h>
#include <sys/stat.h>

/* Made writable first: some tests leave files or directories they made
 * unreadable on purpose. */
static int remove_entry(const char *path, const struct stat *st, int flag,
			struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag != FTW_SL)
		(void)chmod(path, 0700);
	return remove(path);
}

int test_rmtree(const char *dir)
{
	return nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}
