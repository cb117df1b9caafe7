#include <stdlib.h>

#include "qwave/kme.h"
#include "qwave/secmem.h"

void qw_kme_keys_free(struct qw_kme_key *keys, size_t n)
{
	if (!keys)
		return;
	for (size_t i = 0; i < n; i++)
		qw_free_secret(keys[i].key, keys[i].size_bits / 8);
	qw_wipe(keys, n * sizeof(*keys));
	free(keys);
}
