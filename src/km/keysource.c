/* Dispatch of the key-source interface (keysource.h). */
#include <stddef.h>

#include "qwave/keysource.h"

int qw_key_source_start(struct qw_key_source *s)
{
	QW_REQUIRE(s && s->ops && s->ops->start);
	return s->ops->start(s);
}

void qw_key_source_stop(struct qw_key_source *s)
{
	QW_REQUIRE(s && s->ops && s->ops->stop);
	s->ops->stop(s);
}

void qw_key_source_free(struct qw_key_source *s)
{
	if (!s)
		return;
	QW_REQUIRE(s->ops && s->ops->free);
	s->ops->free(s);
}
