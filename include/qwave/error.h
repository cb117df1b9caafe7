/* Error codes shared by every qwave module.
 *
 * Library functions return 0 on success or one of the negative QW_E* codes
 * below; they never print. The text for a person is produced once, at the
 * edge (CLI, HTTP response, log), with qw_strerror(). */
#ifndef QWAVE_ERROR_H
#define QWAVE_ERROR_H

#define QW_WUR __attribute__((warn_unused_result))
#define QW_NORETURN _Noreturn

enum {
	QW_OK = 0,
	QW_EINVAL = -1,       /* invalid argument or malformed input */
	QW_ENOMEM = -2,       /* allocation failed */
	QW_EIO = -3,          /* read/write/socket failure */
	QW_ECRYPTO = -4,      /* the crypto library reported a failure */
	QW_EAUTH = -5,        /* MAC, signature or verification hash mismatch */
	QW_ERANGE = -6,       /* value out of the permitted range */
	QW_EPARSE = -7,       /* text could not be parsed */
	QW_ENOTFOUND = -8,    /* no such object */
	QW_EEXIST = -9,       /* object already exists */
	QW_EHEALTH = -10,     /* entropy source failed its health tests */
	QW_EUNSUPPORTED = -11,/* algorithm or feature not available */
	QW_EAGAIN = -12,      /* not enough key material (yet) */
	QW_ESTATE = -13,      /* operation not valid in the current state */
	QW_EABORT = -14,      /* protocol aborted (e.g. QBER above threshold) */
	QW_ETIMEOUT = -15,    /* peer did not answer in time */
	QW_EPROTO = -16,      /* peer violated the protocol */
	QW_EDB = -17,         /* key store / database failure */
	QW_EPERM = -18,       /* not authorised */
	QW_ECLOSED = -19,     /* connection closed by the peer */
};

/* Human-readable text for a QW_E* code (or "success" for 0). Never NULL. */
const char *qw_strerror(int err);

/* Report a programming error (a contract violation such as NULL where the
 * API forbids it) and abort. Runtime failures are returned, never routed
 * here. */
QW_NORETURN void qw_misuse(const char *what);

#define QW_STR_(x) #x
#define QW_STR(x) QW_STR_(x)
/* Contract check: aborts through qw_misuse() when cond is false. */
#define QW_REQUIRE(cond)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			qw_misuse(__FILE__ ":" QW_STR(__LINE__) ": " #cond);   \
	} while (0)

#endif
