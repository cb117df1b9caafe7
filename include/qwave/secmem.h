/* Secret memory: wiping, locked allocations and constant-time comparison. */
#ifndef QWAVE_SECMEM_H
#define QWAVE_SECMEM_H

#include <stddef.h>
#include <stdint.h>

/* Overwrite n bytes at p with zeros in a way the compiler may not elide
 * (OPENSSL_cleanse). p may be NULL when n is 0. */
void qw_wipe(void *p, size_t n);

/* Allocate n zeroed bytes for secrets: mlock()ed where the system allows
 * (failure to lock is not an error; RLIMIT_MEMLOCK is often small) and
 * excluded from core dumps (MADV_DONTDUMP) where available. Returns NULL on
 * allocation failure. Free with qw_secure_free(), which wipes first. */
void *qw_secure_alloc(size_t n);
void qw_secure_free(void *p, size_t n);

/* Constant-time equality of two n-byte buffers: 1 if equal, 0 otherwise. */
int qw_ct_equal(const void *a, const void *b, size_t n);

/* malloc/calloc wrappers that return NULL on overflow of n*size. */
void *qw_calloc(size_t n, size_t size);

/* Wipe then free a heap buffer of n bytes (NULL accepted). */
void qw_free_secret(void *p, size_t n);

#endif
