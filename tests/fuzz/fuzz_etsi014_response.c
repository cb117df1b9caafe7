/* libFuzzer harness for the ETSI GS QKD 014 client's response parsers
 * (etsi014_client.h): what a KME - possibly a hostile or broken one - sends
 * back. Byte 0 selects the parser (0: Status, 1: Key container, 2..: Error
 * with HTTP status 400/401/503/500), the rest is the body. Properties
 * checked: a refusal is QW_EPROTO with a message and no result; an
 * accepted Key container has distinct UUID key IDs and non-empty keys; an
 * accepted Status has terminated IDs; an Error maps to its documented code
 * and its message reaches a terminal without control characters.
 *
 *   CC=clang cmake -S . -B build-fuzz -DQW_FUZZ=ON && cmake --build build-fuzz -j2
 *   build-fuzz/tests/fuzz/fuzz_etsi014_response -max_total_time=60 \
 *       tests/fuzz/corpus/etsi014_response */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "qwave/etsi014_client.h"
#include "qwave/uuid.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void printable(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const int statuses[] = { 400, 401, 503, 500 };
	struct qw_etsi_error err;
	const char *body;
	size_t len;
	int rc;

	if (size < 1)
		return 0;
	body = (const char *)data + 1;
	len = size - 1;
	memset(&err, 0, sizeof(err));
	if (data[0] == 0) {
		struct qw_etsi_status st;

		rc = qw_etsi_client_parse_status(body, len, &st, &err);
		if (rc) {
			if (rc != QW_EPROTO && rc != QW_ENOMEM)
				abort();
			if (!err.message[0] || st.status_extension || st.source_kme_id[0])
				abort();
			return 0;
		}
		if (memchr(st.source_kme_id, 0, sizeof(st.source_kme_id)) == NULL ||
		    memchr(st.slave_sae_id, 0, sizeof(st.slave_sae_id)) == NULL)
			abort();
		qw_etsi_status_clear(&st);
	} else if (data[0] == 1) {
		struct qw_etsi_keys *k;
		struct qw_uuid u;

		rc = qw_etsi_client_parse_keys(body, len, &k, &err);
		if (rc) {
			if ((rc != QW_EPROTO && rc != QW_ENOMEM) || k || !err.message[0])
				abort();
			printable(err.message);
			return 0;
		}
		for (size_t i = 0; i < k->n; i++) {
			if (qw_uuid_parse(&u, k->keys[i].key_id) || !k->keys[i].len || !k->keys[i].key)
				abort();
			for (size_t j = 0; j < i; j++)
				if (!strcasecmp(k->keys[i].key_id, k->keys[j].key_id))
					abort();
		}
		qw_etsi_keys_free(k);
	} else {
		int status = statuses[data[0] % 4];

		rc = qw_etsi_client_http_error(status, body, len, &err);
		if (err.http_status != status || !err.message[0])
			abort();
		printable(err.message);
		printable(err.details);
		if ((status == 400 && rc != QW_EINVAL && rc != QW_ENOTFOUND) ||
		    (status == 401 && rc != QW_EPERM) || (status == 503 && rc != QW_EAGAIN) ||
		    (status == 500 && rc != QW_EPROTO))
			abort();
	}
	return 0;
}
