/* A small certificate authority for a qwave network: one CA per network,
 * certificates for nodes (KMEs) and SAEs (applications) that the ETSI GS
 * QKD 014 server and the KM links authenticate with mutual TLS.
 *
 * Layout of a PKI directory:
 *   ca.crt  the CA certificate (PEM, 0644): self-signed, CA:TRUE, keyCertSign
 *   ca.key  its private key (PEM PKCS#8, 0600)
 * Issued certificates default to <kind>-<id>.crt / <kind>-<id>.key in the
 * same directory (keys 0600).
 *
 * Identity: an issued certificate's subject CN is the node or SAE ID, and a
 * subjectAltName URI "urn:qwave:node:<id>" or "urn:qwave:sae:<id>" says
 * which kind of entity it names; a TLS peer is only known by that pair
 * (qw_pki_cert_identity). Node certificates also carry SAN IP 127.0.0.1
 * and DNS localhost so clients checking host names succeed on loopback.
 *
 * Algorithms: ECDSA P-256 with SHA-256 (default; what TLS 1.3 negotiates
 * everywhere) or SM2 with SM3. OpenSSL 3.0 signs and verifies SM2 X.509
 * certificates, but its TLS 1.3 does not offer the RFC 8998 SM2 suites, so
 * SM2 certificates are for the Key Service Center and devices, ECDSA ones
 * for TLS. */
#ifndef QWAVE_PKI_H
#define QWAVE_PKI_H

#include <stddef.h>

#include <openssl/x509.h>

#include "qwave/error.h"
#include "qwave/sm2.h"

/* Longest node/SAE ID (equals QW_KME_ID_MAX of kme.h). IDs are 1..64
 * characters from [A-Za-z0-9._-], so they never need URL encoding and
 * embed in a URN as they are. */
#define QW_PKI_ID_MAX 64
#define QW_PKI_DEFAULT_CA_DAYS 3650u
#define QW_PKI_DEFAULT_DAYS 365u

enum qw_pki_kind {
	QW_PKI_NODE = 1,
	QW_PKI_SAE = 2,
};

/* "node" / "sae". */
const char *qw_pki_kind_name(enum qw_pki_kind kind);
/* 1 when id is a valid node/SAE ID (see QW_PKI_ID_MAX). */
int qw_pki_id_valid(const char *id);

/* Create dir (mode 0700 if missing) and in it a new CA: key (alg), and a
 * self-signed certificate with subject CN name (NULL: "qwave CA") valid
 * for days (0: QW_PKI_DEFAULT_CA_DAYS). Refuses to replace an existing
 * ca.key or ca.crt (QW_EEXIST). 0, QW_EEXIST, QW_EINVAL (name empty or
 * longer than 64), QW_EIO, QW_ECRYPTO, QW_ENOMEM. */
QW_WUR int qw_pki_ca_init(const char *dir, enum qw_sm2_alg alg, const char *name,
			  unsigned days);

struct qw_pki_issue_opts {
	enum qw_pki_kind kind;
	const char *id;         /* subject CN; qw_pki_id_valid() */
	enum qw_sm2_alg alg;    /* key of the new certificate (0: ECDSA P-256) */
	unsigned days;          /* 0: QW_PKI_DEFAULT_DAYS */
	const char *cert_path;  /* NULL: <dir>/<kind>-<id>.crt */
	const char *key_path;   /* NULL: <dir>/<kind>-<id>.key */
};

/* Issue a certificate signed by the CA in dir: a fresh key pair, random
 * 127-bit serial, EKU serverAuth + clientAuth, keyUsage digitalSignature,
 * CA:FALSE, the SAN described above. The key file is written 0600 (an
 * existing key file readable by group/others is refused: QW_EPERM). 0,
 * QW_EINVAL (bad ID or kind), QW_ENOTFOUND (no CA in dir), QW_EPERM,
 * QW_EIO, QW_ECRYPTO, QW_ENOMEM. */
QW_WUR int qw_pki_issue(const char *dir, const struct qw_pki_issue_opts *o);

/* The identity a certificate names: subject CN checked against a SAN URI
 * urn:qwave:<kind>:<CN>. It does NOT verify the chain: call it on a peer
 * certificate that TLS (or qw_pki_verify_file) already verified. 0 and
 * *kind, id; QW_EPERM when the certificate names no qwave identity (no or
 * several CNs, invalid ID, no matching SAN URI). */
QW_WUR int qw_pki_cert_identity(X509 *cert, enum qw_pki_kind *kind,
				char id[QW_PKI_ID_MAX + 1]);

/* Verify the PEM certificate in cert_file against the CA certificate in
 * ca_file (chain, validity dates, EKU clientAuth), then return its identity
 * as qw_pki_cert_identity. 0, QW_EIO (unreadable), QW_EPARSE (not a PEM
 * certificate), QW_EAUTH (does not verify), QW_EPERM, QW_ENOMEM. */
QW_WUR int qw_pki_verify_file(const char *ca_file, const char *cert_file,
			      enum qw_pki_kind *kind, char id[QW_PKI_ID_MAX + 1]);

#endif
