/* HTTPS client of the KSC API for the CLI (`qwave ksc`, `qwave device`):
 * libcurl with mutual TLS, one kept-alive connection per client. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "qwave/ksc.h"
#include "qwave/secmem.h"

#define MAX_RESPONSE (64u << 20)

struct qw_ksc_client {
	CURL *curl;
	char *base;
};

struct buf {
	char *p;
	size_t n, cap;
	int overflow;
};

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct buf *b = arg;
	size_t n = size * nmemb;

	if (b->n + n + 1 > MAX_RESPONSE) {
		b->overflow = 1;
		return 0;
	}
	if (b->n + n + 1 > b->cap) {
		size_t cap = (b->n + n + 1) * 2;
		char *q = malloc(cap);

		if (!q)
			return 0;
		if (b->p) {
			memcpy(q, b->p, b->n);
			qw_free_secret(b->p, b->cap); /* responses may hold keys */
		}
		b->p = q;
		b->cap = cap;
	}
	memcpy(b->p + b->n, ptr, n);
	b->n += n;
	b->p[b->n] = '\0';
	return n;
}

struct qw_ksc_client *qw_ksc_client_new(const char *base_url, const char *cert, const char *key,
					const char *ca, int *err)
{
	struct qw_ksc_client *c;
	int ret = QW_EINVAL;

	if (!base_url || strncmp(base_url, "https://", 8) || !cert || !key || !ca)
		goto fail;
	ret = QW_ENOMEM;
	c = calloc(1, sizeof(*c));
	if (!c)
		goto fail;
	c->base = strdup(base_url);
	c->curl = curl_easy_init();
	if (!c->base || !c->curl) {
		qw_ksc_client_free(c);
		goto fail;
	}
	{
		size_t n = strlen(c->base);

		while (n && c->base[n - 1] == '/')
			c->base[--n] = '\0';
	}
	if (curl_easy_setopt(c->curl, CURLOPT_SSLCERT, cert) != CURLE_OK ||
	    curl_easy_setopt(c->curl, CURLOPT_SSLKEY, key) != CURLE_OK ||
	    curl_easy_setopt(c->curl, CURLOPT_CAINFO, ca) != CURLE_OK ||
	    curl_easy_setopt(c->curl, CURLOPT_PROTOCOLS_STR, "https") != CURLE_OK ||
	    curl_easy_setopt(c->curl, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2) !=
		    CURLE_OK ||
	    curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS, 30000L) != CURLE_OK ||
	    curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
	    curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, on_data) != CURLE_OK) {
		qw_ksc_client_free(c);
		ret = QW_EINVAL;
		goto fail;
	}
	return c;
fail:
	if (err)
		*err = ret;
	return NULL;
}

void qw_ksc_client_free(struct qw_ksc_client *c)
{
	if (!c)
		return;
	if (c->curl)
		curl_easy_cleanup(c->curl);
	free(c->base);
	free(c);
}

int qw_ksc_client_call(struct qw_ksc_client *c, const char *method, const char *path,
		       const char *body, int *status, char **resp, size_t *resp_len, char *msg)
{
	struct buf b = { 0 };
	struct curl_slist *hdr = NULL;
	char *url;
	size_t n;
	long code = 0;
	CURLcode rc;
	int ret = QW_ENOMEM;

	*resp = NULL;
	*resp_len = 0;
	*status = 0;
	n = strlen(c->base) + strlen("/api/v1/ksc") + strlen(path) + 1;
	url = malloc(n);
	if (!url)
		return QW_ENOMEM;
	snprintf(url, n, "%s/api/v1/ksc%s", c->base, path);
	hdr = curl_slist_append(NULL, "Content-Type: application/json");
	if (!hdr)
		goto out;
	curl_easy_setopt(c->curl, CURLOPT_URL, url);
	curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, hdr);
	curl_easy_setopt(c->curl, CURLOPT_CUSTOMREQUEST, method);
	if (body) {
		curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
		curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, body);
	} else if (!strcmp(method, "POST")) {
		curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE, 0L);
		curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, "");
	} else {
		curl_easy_setopt(c->curl, CURLOPT_HTTPGET, 1L);
		curl_easy_setopt(c->curl, CURLOPT_CUSTOMREQUEST, method);
	}
	rc = curl_easy_perform(c->curl);
	curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, (char *)NULL);
	curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
	if (rc != CURLE_OK) {
		if (msg)
			snprintf(msg, 256, "%s: %s", c->base,
				 b.overflow ? "response too large" : curl_easy_strerror(rc));
		ret = rc == CURLE_OPERATION_TIMEDOUT ? QW_ETIMEOUT :
		      rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE ? QW_EAUTH :
											   QW_EIO;
		goto out;
	}
	curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &code);
	*status = (int)code;
	if (!b.p) {
		b.p = calloc(1, 1);
		b.cap = 1;
		if (!b.p)
			goto out;
	}
	/* hand over a buffer of exactly n + 1 bytes, as the contract says */
	*resp = malloc(b.n + 1);
	if (!*resp)
		goto out;
	memcpy(*resp, b.p, b.n + 1);
	*resp_len = b.n;
	ret = 0;
out:
	if (b.p)
		qw_free_secret(b.p, b.cap);
	curl_slist_free_all(hdr);
	free(url);
	return ret;
}
