/*
 * test_rmtree: remove a test's temporary directory and everything in it,
 * for the group teardown of the tests that make one. Linked into every
 * test binary.
 */
#ifndef TEST_RMTREE_H
#define TEST_RMTREE_H

/* 0 when dir and all it held are gone; -1 (errno set) otherwise. Makes
 * each entry writable before removing it; follows no symbolic link. */
int test_rmtree(const char *dir);

#endif
