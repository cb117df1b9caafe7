/* libFuzzer harness for the relay and routing parsers (include/qwave/relay.h,
 * include/qwave/routing.h): every input goes through qw_relay_parse,
 * qw_relay_ack_parse, qw_relay_pad_parse (both kinds) and qw_lsa_parse.
 * Properties checked: whatever a parser accepts re-encodes to exactly the
 * input bytes (one encoding per message: the relay tag is checked over the
 * re-encoding) and parses again;
 * an accepted RELAY opens to QW_EAUTH or QW_ESTATE under a pad nobody sent
 * (or, with the all-zero pad and hash key, only when the tag is h_0 = 0)
 * and never writes plaintext on failure. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qwave/relay.h"
#include "qwave/routing.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_relay(const uint8_t *data, size_t size)
{
	struct qw_relay_msg m, again;
	struct qw_relay_mac mk;
	struct qw_buf b;
	uint8_t *pad, *keys;
	size_t padlen;
	int ret;

	ret = qw_relay_parse(data, size, &m);
	if (ret == QW_EPARSE || ret == QW_ENOMEM)
		return;
	if (ret)
		abort();
	qw_buf_init(&b, 0);
	if (qw_relay_encode(&m, &b) || b.len != size || memcmp(b.data, data, size))
		abort();
	if (qw_relay_parse(b.data, b.len, &again) || again.ct_len != m.ct_len ||
	    qw_relay_payload_bits(&again) != qw_relay_payload_bits(&m))
		abort();
	qw_relay_msg_clear(&again);
	padlen = qw_relay_hop_pad_bits(&m) / 8;
	pad = calloc(padlen, 1);
	keys = malloc(m.ct_len + 1);
	if (pad && keys) {
		memset(keys, 0x5a, m.ct_len + 1);
		qw_relay_mac_init(&mk, 0);
		ret = qw_relay_open_hop(&m, pad, padlen, &mk, keys, m.ct_len);
		if (ret == 0) {
			/* zero hash key and zero pad: tag must be all zero */
			for (size_t i = 0; i < sizeof(m.tag); i++)
				if (m.tag[i])
					abort();
		} else if (ret == QW_EAUTH || ret == QW_ESTATE) {
			for (size_t i = 0; i <= m.ct_len; i++)
				if (keys[i] != 0x5a)
					abort();
		} else if (ret != QW_ENOMEM) {
			abort();
		}
		qw_relay_mac_reset(&mk);
	}
	free(pad);
	free(keys);
	qw_buf_free(&b);
	qw_relay_msg_clear(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct qw_relay_ack a, a2;
	struct qw_lsa l, l2;
	struct qw_buf b;

	check_relay(data, size);

	if (qw_relay_ack_parse(data, size, &a) == 0) {
		qw_buf_init(&b, 0);
		if (qw_relay_ack_encode(&a, &b) || b.len != size || memcmp(b.data, data, size) ||
		    qw_relay_ack_parse(b.data, b.len, &a2))
			abort();
		qw_buf_free(&b);
	}
	for (int grant = 0; grant < 2; grant++) {
		struct qw_relay_pad p, p2;

		if (qw_relay_pad_parse(data, size, grant, &p))
			continue;
		qw_buf_init(&b, 0);
		if (qw_relay_pad_encode(&p, grant, &b) || b.len != size ||
		    memcmp(b.data, data, size) || qw_relay_pad_parse(b.data, b.len, grant, &p2))
			abort();
		qw_buf_free(&b);
	}
	if (qw_lsa_parse(data, size, &l) == 0) {
		qw_buf_init(&b, 0);
		if (qw_lsa_encode(&l, &b) || b.len != size || memcmp(b.data, data, size) ||
		    qw_lsa_parse(b.data, b.len, &l2) || l2.seq != l.seq || l2.n_links != l.n_links)
			abort();
		qw_buf_free(&b);
	}
	return 0;
}
