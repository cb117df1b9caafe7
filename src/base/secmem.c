#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <openssl/crypto.h>

#include "qwave/secmem.h"

void qw_wipe(void *p, size_t n)
{
	if (p && n)
		OPENSSL_cleanse(p, n);
}

int qw_ct_equal(const void *a, const void *b, size_t n)
{
	return CRYPTO_memcmp(a, b, n) == 0;
}

void *qw_calloc(size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size)
		return NULL;
	return calloc(n ? n : 1, size ? size : 1);
}

void qw_free_secret(void *p, size_t n)
{
	if (!p)
		return;
	qw_wipe(p, n);
	free(p);
}

/* Secret allocations are page-aligned so that mlock/madvise cover exactly
 * the pages holding them and nothing else shares those pages' fate. */
void *qw_secure_alloc(size_t n)
{
	void *p = NULL;
	size_t len = n ? n : 1;

	if (posix_memalign(&p, 4096, len) != 0)
		return NULL;
	memset(p, 0, len);
	(void)mlock(p, len);
#ifdef MADV_DONTDUMP
	(void)madvise(p, (len + 4095) & ~(size_t)4095, MADV_DONTDUMP);
#endif
	return p;
}

void qw_secure_free(void *p, size_t n)
{
	size_t len = n ? n : 1;

	if (!p)
		return;
	qw_wipe(p, len);
	(void)munlock(p, len);
	free(p);
}
