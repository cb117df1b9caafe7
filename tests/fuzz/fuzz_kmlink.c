/* libFuzzer harness for the KM-link message parser (include/qwave/kmlink.h):
 * any byte string goes through qw_kmlink_frame_len and qw_kmlink_parse.
 * Properties checked: the parser accepts only whole frames; whatever it
 * accepts re-encodes to exactly the same bytes (the wire format has one
 * encoding per message) and parses again to the same message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qwave/kmlink.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct qw_kmlink_msg m, again;
	struct qw_buf b;
	size_t flen;
	int ret;

	ret = qw_kmlink_frame_len(data, size, &flen);
	if (ret != 0 && ret != QW_EAGAIN && ret != QW_EPARSE)
		abort();
	ret = qw_kmlink_parse(data, size, &m);
	if (ret == QW_EPARSE || ret == QW_ENOMEM)
		return 0;
	if (ret != 0 || qw_kmlink_frame_len(data, size, &flen) || flen != size)
		abort();
	qw_buf_init(&b, 0);
	if (qw_kmlink_encode(&m, &b))
		abort();
	if (b.len != size || memcmp(b.data, data, size))
		abort();
	if (qw_kmlink_parse(b.data, b.len, &again) || again.type != m.type || again.seq != m.seq)
		abort();
	qw_kmlink_msg_clear(&again);
	qw_kmlink_msg_clear(&m);
	qw_buf_free(&b);
	return 0;
}
