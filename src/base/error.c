#include <stdio.h>
#include <stdlib.h>

#include "qwave/error.h"

const char *qw_strerror(int err)
{
	switch (err) {
	case QW_OK: return "success";
	case QW_EINVAL: return "invalid argument";
	case QW_ENOMEM: return "out of memory";
	case QW_EIO: return "input/output error";
	case QW_ECRYPTO: return "cryptographic library failure";
	case QW_EAUTH: return "authentication failed";
	case QW_ERANGE: return "value out of range";
	case QW_EPARSE: return "parse error";
	case QW_ENOTFOUND: return "not found";
	case QW_EEXIST: return "already exists";
	case QW_EHEALTH: return "entropy source failed its health tests";
	case QW_EUNSUPPORTED: return "not supported";
	case QW_EAGAIN: return "not enough key material";
	case QW_ESTATE: return "invalid state";
	case QW_EABORT: return "protocol aborted";
	case QW_ETIMEOUT: return "timed out";
	case QW_EPROTO: return "protocol violation";
	case QW_EDB: return "key store failure";
	case QW_EPERM: return "permission denied";
	case QW_ECLOSED: return "connection closed";
	default: return "unknown error";
	}
}

void qw_misuse(const char *what)
{
	/* The one place the library writes to stderr: a contract violation is
	 * a bug in the caller, and aborting with the reason beats corrupting
	 * key material. */
	fprintf(stderr, "qwave: misuse: %s\n", what);
	abort();
}
