/* libFuzzer harness for the ETSI GS QKD 014 request parser: the input is
 * split into method, path, query and body, run through qw_etsi014_parse
 * and, when it parses, qw_etsi014_check_limits; the error body is rendered
 * too. Properties checked: a refusal always carries a 4xx status and a
 * message, an accepted request is internally consistent.
 *
 * Input layout: byte 0 selects the method; the rest is
 * "path\nquery\nbody" (missing parts are empty; an empty query is none). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qwave/etsi014.h"
#include "qwave/uuid.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const enum qw_http_method methods[] = { QW_HTTP_GET, QW_HTTP_POST, QW_HTTP_PUT,
					       QW_HTTP_DELETE, QW_HTTP_HEAD };

static char *part(const uint8_t **p, const uint8_t *end)
{
	const uint8_t *nl = memchr(*p, '\n', (size_t)(end - *p));
	size_t n = (size_t)((nl ? nl : end) - *p);
	char *s = malloc(n + 1);

	if (!s)
		abort();
	memcpy(s, *p, n);
	s[n] = '\0';
	*p = nl ? nl + 1 : end;
	return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct qw_kme_status st = { .key_size = 256, .max_key_per_request = 128,
					  .min_key_size = 64, .max_key_size = 1024,
					  .max_sae_id_count = 2 };
	struct qw_etsi014_request r;
	struct qw_etsi014_error e;
	const uint8_t *p, *end = data + size;
	char *path, *query;
	int ret;

	if (size < 1)
		return 0;
	p = data + 1;
	path = part(&p, end);
	query = part(&p, end);
	ret = qw_etsi014_parse(methods[data[0] % 5], path, *query ? query : NULL, p,
			       (size_t)(end - p), &r, &e);
	if (ret == QW_EINVAL) {
		char *txt = qw_etsi014_error_json(&e);

		if (e.status < 400 || e.status > 405 || !e.message[0] || !txt)
			abort();
		free(txt);
		qw_etsi014_error_clear(&e);
	} else if (ret == 0) {
		struct qw_uuid u;

		if (!r.sae_id[0] || strlen(r.sae_id) > QW_KME_ID_MAX || r.number < 1)
			abort();
		for (size_t i = 0; i < r.n_key_ids; i++)
			if (qw_uuid_parse(&u, r.key_ids[i]) != 0)
				abort();
		if (r.op == QW_ETSI014_DEC_KEYS && r.n_key_ids == 0)
			abort();
		if (qw_etsi014_check_limits(&r, &st, &e) == 0) {
			if (r.op == QW_ETSI014_ENC_KEYS &&
			    (r.size_bits % 8 || r.size_bits < 64 || r.size_bits > 1024 ||
			     r.number > 128 || r.n_additional > 2))
				abort();
		} else {
			qw_etsi014_error_clear(&e);
		}
		qw_etsi014_request_clear(&r);
	} else if (ret != QW_ENOMEM) {
		abort();
	}
	free(path);
	free(query);
	return 0;
}
