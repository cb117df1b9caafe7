/* The node master key: 32 bytes in a file only its owner may read, or
 * derived from a passphrase with scrypt (RFC 7914). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include "qwave/rng.h"
#include "qwave/secmem.h"
#include "qwave/store.h"

/* write() until done or error. */
static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return QW_EIO;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int qw_store_masterkey_create(const char *path, uint8_t mk[static QW_STORE_MASTER_KEY_BYTES])
{
	int fd = -1, created = 0, ret;

	QW_REQUIRE(path && mk);
	ret = qw_random_bytes(mk, QW_STORE_MASTER_KEY_BYTES);
	if (ret)
		goto out;
	/* O_EXCL: never overwrite an existing master key (that would make
	 * every store sealed under it unreadable). */
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		ret = errno == EEXIST ? QW_EEXIST : QW_EIO;
		goto out;
	}
	created = 1;
	ret = QW_EIO;
	/* The umask can only clear bits of 0600, but be explicit. */
	if (fchmod(fd, 0600) != 0)
		goto out;
	if ((ret = write_all(fd, mk, QW_STORE_MASTER_KEY_BYTES)))
		goto out;
	if (fsync(fd) != 0) {
		ret = QW_EIO;
		goto out;
	}
	ret = close(fd) == 0 ? 0 : QW_EIO;
	fd = -1;
out:
	if (fd >= 0)
		close(fd);
	if (ret) {
		qw_wipe(mk, QW_STORE_MASTER_KEY_BYTES);
		if (created)
			unlink(path);
	}
	return ret;
}

int qw_store_masterkey_load(const char *path, uint8_t mk[static QW_STORE_MASTER_KEY_BYTES])
{
	uint8_t buf[QW_STORE_MASTER_KEY_BYTES + 1];
	struct stat st;
	size_t got = 0;
	int fd, ret = QW_EIO;

	QW_REQUIRE(path && mk);
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		ret = errno == ENOENT ? QW_ENOTFOUND : errno == ELOOP ? QW_EPERM : QW_EIO;
		goto out;
	}
	if (fstat(fd, &st) != 0)
		goto out;
	/* The same rule as ssh for private keys: anything another user could
	 * read or replace is refused rather than used. */
	if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077)) {
		ret = QW_EPERM;
		goto out;
	}
	while (got < sizeof(buf)) {
		ssize_t r = read(fd, buf + got, sizeof(buf) - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			goto out;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	if (got != QW_STORE_MASTER_KEY_BYTES) {
		ret = QW_EPARSE;
		goto out;
	}
	memcpy(mk, buf, QW_STORE_MASTER_KEY_BYTES);
	ret = 0;
out:
	if (fd >= 0)
		close(fd);
	qw_wipe(buf, sizeof(buf));
	if (ret)
		qw_wipe(mk, QW_STORE_MASTER_KEY_BYTES);
	return ret;
}

int qw_store_masterkey_derive(const char *pass, size_t passlen, const uint8_t *salt,
			      size_t saltlen, unsigned log2n,
			      uint8_t mk[static QW_STORE_MASTER_KEY_BYTES])
{
	EVP_KDF *kdf = NULL;
	EVP_KDF_CTX *ctx = NULL;
	OSSL_PARAM params[7], *p = params;
	uint64_t n, maxmem;
	uint32_t r = 8, par = 1;
	int ret = QW_EINVAL;

	QW_REQUIRE(mk && (pass || !passlen) && (salt || !saltlen));
	if (log2n < 10 || log2n > 22 || saltlen < 16)
		goto out;
	n = UINT64_C(1) << log2n;
	/* scrypt needs 128 * r * N bytes for V plus 128 * r * p for B;
	 * OpenSSL refuses anything above 32 MiB unless told otherwise. */
	maxmem = 2 * 128 * (uint64_t)r * n + (UINT64_C(1) << 20);
	ret = QW_ECRYPTO;
	kdf = EVP_KDF_fetch(NULL, "SCRYPT", NULL);
	if (!kdf)
		goto out;
	ctx = EVP_KDF_CTX_new(kdf);
	if (!ctx)
		goto out;
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD,
						 (void *)(passlen ? pass : ""), passlen);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, saltlen);
	*p++ = OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n);
	*p++ = OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &r);
	*p++ = OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &par);
	*p++ = OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM, &maxmem);
	*p = OSSL_PARAM_construct_end();
	if (EVP_KDF_derive(ctx, mk, QW_STORE_MASTER_KEY_BYTES, params) != 1)
		goto out;
	ret = 0;
out:
	EVP_KDF_CTX_free(ctx);
	EVP_KDF_free(kdf);
	if (ret)
		qw_wipe(mk, QW_STORE_MASTER_KEY_BYTES);
	return ret;
}
