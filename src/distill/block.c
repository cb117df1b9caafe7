#include <stdlib.h>

#include "qwave/distill.h"
#include "qwave/secmem.h"

struct qw_key_block *qw_block_new(uint64_t id, enum qw_role role, struct qw_bitvec *key)
{
	struct qw_key_block *b = calloc(1, sizeof(*b));

	if (!b)
		return NULL;
	b->id = id;
	b->role = role;
	b->state = QW_BLOCK_RAW;
	b->key = key;
	return b;
}

void qw_block_free(struct qw_key_block *b)
{
	if (!b)
		return;
	qw_bitvec_free(b->key);
	qw_wipe(b, sizeof(*b));
	free(b);
}
