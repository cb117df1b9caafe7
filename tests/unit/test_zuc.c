/* Known-answer tests for ZUC-128, 128-EEA3, 128-EIA3, ZUC-256 and the
 * ZUC-256 MAC, plus round-trip and argument-validation properties.
 *
 * Sources of the vectors (each cross-checked between at least two
 * independent published copies):
 *  - ZUC-128 keystream: ETSI/SAGE "128-EEA3 & 128-EIA3 Document 3:
 *    Implementor's Test Data" v1.1, section 3 (test sets 1-4); copies in
 *    Intel ipsec-mb test/zuc_test_vectors.h, GmSSL tests/zuctest.c and the
 *    Galois cryptol-specs ZUC document (z2000 of set 4).
 *  - 128-EEA3 test sets 1-5: Document 3 section 4; copies in ipsec-mb and
 *    srsRAN unittests/security/security_test.cpp (sets 1, 2, 5 also in
 *    GmSSL).
 *  - 128-EIA3 test sets 1-5: Document 3 section 5; copies in ipsec-mb and
 *    srsRAN (sets 1, 3, 5 also in GmSSL).
 *  - ZUC-256 keystream (all-zero and all-one key/IV) and the 32/64/128-bit
 *    MAC tags: "The ZUC-256 Stream Cipher" (2018), section 4; copies in
 *    GmSSL, ipsec-mb and jOceanus.
 *  - ZUC-256 keystream with non-uniform keys/IVs: Intel ipsec-mb
 *    test256EEA3 sets 3-5 (not in the paper; they exercise the byte
 *    positions of key loading, which uniform keys cannot). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "qwave/zuc.h"

#define MAXBUF 768

/* Decode a hex string into out; returns the number of bytes. */
static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
	size_t n = 0;

	while (hex[0] && hex[1]) {
		unsigned v = 0;
		int k;

		for (k = 0; k < 2; k++) {
			char c = hex[k];

			v <<= 4;
			if (c >= '0' && c <= '9')
				v |= (unsigned)(c - '0');
			else if (c >= 'a' && c <= 'f')
				v |= (unsigned)(c - 'a' + 10);
			else if (c >= 'A' && c <= 'F')
				v |= (unsigned)(c - 'A' + 10);
			else
				fail_msg("bad hex digit '%c'", c);
		}
		assert_true(n < cap);
		out[n++] = (uint8_t)v;
		hex += 2;
	}
	assert_int_equal(hex[0], '\0');
	return n;
}

static void unhex_exact(const char *hex, uint8_t *out, size_t len)
{
	assert_int_equal(unhex(hex, out, len), len);
}

/* ---- ZUC-128 keystream (Document 3, section 3) ---- */

struct ks_vec {
	const char *key, *iv;
	uint32_t z1, z2;
	uint32_t z2000; /* 0: not given */
};

static const struct ks_vec ks128[] = {
	{ "00000000000000000000000000000000", "00000000000000000000000000000000",
	  0x27bede74, 0x018082da, 0 },
	{ "ffffffffffffffffffffffffffffffff", "ffffffffffffffffffffffffffffffff",
	  0x0657cfa0, 0x7096398b, 0 },
	{ "3d4c4be96a82fdaeb58f641db17b455b", "84319aa8de6915ca1f6bda6bfbd8c766",
	  0x14f1c272, 0x3279c419, 0 },
	{ "4d320bfad4c285bfd6b8bd00f39d8b41", "52959daba0bf176ece2dc315049eb574",
	  0xed4400e7, 0x0633e5c5, 0x7a574cdb },
};

static void test_zuc128_keystream(void **state)
{
	static uint32_t z[2000];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(ks128) / sizeof(ks128[0]); i++) {
		struct qw_zuc st;
		uint8_t key[16], iv[16];

		unhex_exact(ks128[i].key, key, 16);
		unhex_exact(ks128[i].iv, iv, 16);
		qw_zuc128_init(&st, key, iv);
		qw_zuc_keystream(&st, z, ks128[i].z2000 ? 2000 : 2);
		assert_int_equal(z[0], ks128[i].z1);
		assert_int_equal(z[1], ks128[i].z2);
		if (ks128[i].z2000)
			assert_int_equal(z[1999], ks128[i].z2000);
		qw_zuc_wipe(&st);
	}
}

/* Generating in uneven pieces must give the same stream as one call (the
 * generator realigns its LFSR window after partial blocks). */
static void test_zuc_keystream_chunking(void **state)
{
	static const size_t pieces[] = { 1, 15, 16, 17, 3, 33, 2, 0, 64, 7 };
	uint32_t whole[158], part[158];
	uint8_t key[16], iv[16], bytes[158 * 4], xored[158 * 4];
	struct qw_zuc st;
	size_t i, off = 0;

	(void)state;
	unhex_exact(ks128[3].key, key, 16);
	unhex_exact(ks128[3].iv, iv, 16);
	qw_zuc128_init(&st, key, iv);
	qw_zuc_keystream(&st, whole, 158);
	qw_zuc128_init(&st, key, iv);
	for (i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
		qw_zuc_keystream(&st, part + off, pieces[i]);
		off += pieces[i];
	}
	assert_int_equal(off, 158);
	assert_memory_equal(whole, part, sizeof(whole));

	/* qw_zuc_xor over zeros yields the big-endian keystream bytes. */
	memset(bytes, 0, sizeof(bytes));
	qw_zuc128_init(&st, key, iv);
	qw_zuc_xor(&st, bytes, xored, sizeof(bytes));
	for (i = 0; i < 158; i++) {
		assert_int_equal(xored[4 * i], (uint8_t)(whole[i] >> 24));
		assert_int_equal(xored[4 * i + 1], (uint8_t)(whole[i] >> 16));
		assert_int_equal(xored[4 * i + 2], (uint8_t)(whole[i] >> 8));
		assert_int_equal(xored[4 * i + 3], (uint8_t)whole[i]);
	}
	qw_zuc_wipe(&st);
}

static void test_zuc_wipe(void **state)
{
	struct qw_zuc st, zero;
	uint8_t key[16] = { 1 }, iv[16] = { 2 };

	(void)state;
	memset(&zero, 0, sizeof(zero));
	qw_zuc128_init(&st, key, iv);
	assert_memory_not_equal(&st, &zero, sizeof(st));
	qw_zuc_wipe(&st);
	assert_memory_equal(&st, &zero, sizeof(st));
}

/* ---- 128-EEA3 (Document 3, section 4) ---- */

struct eea3_vec {
	const char *key;
	uint32_t count;
	uint8_t bearer, direction;
	size_t bits;
	const char *pt, *ct;
};

static const struct eea3_vec eea3[] = {
	{ "173d14ba5003731d7a60049470f00a29", 0x66035492, 0x0f, 0, 193,
	  "6cf65340735552ab0c9752fa6f9025fe0bd675d9005875b200",
	  "a6c85fc66afb8533aafc2518dfe784940ee1e4b030238cc800" },
	{ "e5bd3ea0eb55ade866c6ac58bd54302a", 0x00056823, 0x18, 1, 800,
	  "14a8ef693d678507bbe7270a7f67ff5006c3525b9807e467c4e56000ba338f5d"
	  "429559036751822246c80d3b38f07f4be2d8ff5805f5132229bde93bbbdcaf38"
	  "2bf1ee972fbf9977bada8945847a2a6c9ad34a667554e04d1f7fa2c33241bd8f"
	  "01ba220d",
	  "131d43e0dea1be5c5a1bfd971d852cbf712d7b4f57961fea3208afa8bca433f4"
	  "56ad09c7417e58bc69cf8866d1353f74865e80781d202dfb3ecff7fcbc3b190f"
	  "e82a204ed0e350fc0f6f2613b2f2bca6df5a473a57a4a00d985ebad880d6f238"
	  "64a07b01" },
	{ "d4552a8fd6e61cc81a2009141a29c10b", 0x76452ec1, 0x02, 1, 1570,
	  "38f07f4be2d8ff5805f5132229bde93bbbdcaf382bf1ee972fbf9977bada8945"
	  "847a2a6c9ad34a667554e04d1f7fa2c33241bd8f01ba220d3ca4ec41e074595f"
	  "54ae2b454fd971432043601965cca85c2417ed6cbec3bada84fc8a579aea7837"
	  "b0271177242a64dc0a9de71a8edee86ca3d47d033d6bf539804eca86c584a905"
	  "2de46ad3fced65543bd90207372b27afb79234f5ff43ea870820e2c2b78a8aae"
	  "61cce52a0515e348d196664a3456b182a07c406e4a20791271cfeda165d535ec"
	  "5ea2d4df40",
	  "8383b0229fcc0b9d2295ec41c977e9c2bb72e220378141f9c8318f3a270dfbcd"
	  "ee6411c2b3044f176dc6e00f8960f97afacd131ad6a3b49b16b7babcf2a509eb"
	  "b16a75dcab14ff275dbeeea1a2b155f9d52c26452d0187c310a4ee55beaa78ab"
	  "4024615ba9f5d5adc7728f73560671f013e5e550085d3291df7d5fecedded559"
	  "641b6c2f585233bc71e9602bd2305855bbd25ffa7f17ecbc042daae38c1f57ad"
	  "8e8ebd37346f71befdbb7432e0e0bb2cfc09bcd96570cb0c0c39df5e29294e82"
	  "703a637f80" },
	{ "db84b4fbccda563b66227bfe456f0f77", 0xe4850fe1, 0x10, 1, 2798,
	  "e539f3b8973240da03f2b8aa05ee0a00dbafc0e182055dfe3d7383d92cef40e9"
	  "2928605d52d05f4f9018a1f189ae3997ce19155fb1221db8bb0951a853ad852c"
	  "e16cff07382c93a157de00ddb125c7539fd85045e4ee07e0c43f9e9d6f414fc4"
	  "d1c62917813f74c00fc83f3e2ed7c45ba5835264b43e0b20afda6b3053bfb642"
	  "3b7fce25479ff5f139dd9b5b995558e2a56be18dd581cd017c735e6f0d0d97c4"
	  "ddc1d1da70c6db4a12cc92778e2fbbd6f3ba52af91c9c6b64e8da4f7a2c266d0"
	  "2d001753df08960393c5d56888bf49eb5c16d9a80427a416bcb597df5bfe6f13"
	  "890a07ee1340e6476b0d9aa8f822ab0fd1ab0d204f40b7ce6f2e136eb67485e5"
	  "07804d504588ad37ffd816568b2dc40311dfb654cdead47e2385c3436203dd83"
	  "6f9c64d97462ad5dfa63b5cfe08acb9532866f5ca787566fca93e6b1693ee15c"
	  "f6f7a2d689d9741798dc1c238e1be650733b18fb34ff880e16bbd21b47ac",
	  "4bbfa91ba25d47db9a9f190d962a19ab323926b351fbd39e351e05da8b8925e3"
	  "0b1cce0d1221101095815cc7cb6319509ec0d67940491987e13f0affac332aa6"
	  "aa64626d3e9a1917519e0b97b655c6a165e44ca9feac0790d2a321ad3d86b79c"
	  "5138739fa38d887ec7def449ce8abdd3e7f8dc4ca9e7b73314ad310f9025e619"
	  "46b3a56dc649ec0da0d63943dff592cf962a7efb2c8524e35a2a6e7879d62604"
	  "ef268695fa4003027e22e6083077522064bd4a5b906b5f531274f235ed506cff"
	  "0154c754928a0ce5476f2cb1020a1222d32c1455ecaef1e368fb344d1735bfbe"
	  "deb71d0a33a2a54b1da5a294e679144ddf11eb1a3de8cf0cc061917974f35c1d"
	  "9ca0ac81807f8fcce6199a6c7712da865021b04ce0439516f1a526ccda9fd9ab"
	  "bd53c3a684f9ae1e7ee6b11da138ea826c5516b5aadf1abbe36fa7fff92e3a11"
	  "76064e8d95f2e4882b5500b93228b2194a475c1a27f63f9ffd264989a1bc" },
	{ "e13fed21b46e4e7ec31253b2bb17b3e0", 0x2738cdaa, 0x1a, 0, 4019,
	  "8d74e20d54894e06d3cb13cb3933065e8674be62adb1c72b3a646965ab63cb7b"
	  "7854dfdc27e84929f49c64b872a490b13f957b64827e71f41fbd4269a42c97f8"
	  "24537027f86e9f4ad82d1df451690fdd98b6d03f3a0ebe3a312d6b840ba5a182"
	  "0b2a2c9709c090d245ed267cf845ae41fa975d3333ac3009fd40eba9eb5b8857"
	  "14b768b697138baf21380eca49f644d48689e4215760b906739f0d2b3f091133"
	  "ca15d981cbe401baf72d05ace05cccb2d297f4ef6a5f58d91246cfa77215b892"
	  "ab441d5278452795ccb7f5d79057a1c4f77f80d46db2033cb79bedf8e60551ce"
	  "10c667f62a97abafabbcd6772018df96a282ea737ce2cb331211f60d5354ce78"
	  "f9918d9c206ca042c9b62387dd709604a50af16d8d35a8906be484cf2e74a928"
	  "9940364353249b27b4c9ae29eddfc7da6418791a4e7baa0660fa64511f2d685c"
	  "c3a5ff70e0d2b74292e3b8a0cd6b04b1c790b8ead2703708540dea2fc09c3da7"
	  "70f65449e84d817a4f551055e19ab85018a0028b71a144d96791e9a357793350"
	  "4eee0060340c69d274e1bf9d805dcbcc1a6faa976800b6ff2b671dc463652fa8"
	  "a33ee50974c1c21be01eabb2167430269d72ee511c9dde30797c9a25d86ce74f"
	  "5b961be5fdfb6807814039e7137636bd1d7fa9e09efd2007505906a5ac45dfde"
	  "ed7757bbee745749c29633350bee0ea6f409df45801600",
	  "94eaa4aa30a57137ddf09b97b25618a20a13e2f10fa5bf8161a879cc2ae797a6"
	  "b4cf2d9df31debb9905ccfec97de605d21c61ab8531b7f3c9da5f03931f8a064"
	  "2de48211f5f52ffea10f392a047669985da454a28f080961a6c2b62daa17f33c"
	  "d60a4971f48d2d909394a55f48117ace43d708e6b77d3dc46d8bc017d4d1abb7"
	  "7b7428c042b06f2f99d8d07c9879d99600127a31985f1099bbd7d6c1519ede8f"
	  "5eeb4a610b349ac01ea2350691756bd105c974a53eddb35d1d4100b012e522ab"
	  "41f4c5f2fde76b59cb8b96d885cfe4080d1328a0d636cc0edc05800b76acca8f"
	  "ef672084d1f52a8bbd8e0993320992c7ffbae17c408441e0ee883fc8a8b05e22"
	  "f5ff7f8d1b48c74c468c467a028f09fd7ce91109a570a2d5c4d5f4fa18c5dd3e"
	  "4562afe24ef771901f59af645898acef088abae07e92d52eb2de55045bb1b7c4"
	  "164ef2d7a6cac15eeb926d7ea2f08b66e1f759f3aee44614725aa3c7482b3084"
	  "4c143ff85b53f1e583c501257dddd096b81268daa303f17234c2333541f0bb8e"
	  "190648c5807c866d7193228609adb948686f7de294a802cc38f7fe5208f5ea31"
	  "96d0167b9bdd02f0d2a5221ca508f893af5c4b4bb9f4f520fd84289b3dbe7e61"
	  "497a7e2a584037ea637b6981127174af57b471df4b2768fd79c1540fb3edf2ea"
	  "22cb69bec0cf8d933d9c6fdd645e850591cca3d62c0cc0" },
};

static void test_eea3_vectors(void **state)
{
	static uint8_t pt[MAXBUF], ct[MAXBUF], out[MAXBUF];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(eea3) / sizeof(eea3[0]); i++) {
		const struct eea3_vec *v = &eea3[i];
		size_t n = (v->bits + 7) / 8;
		uint8_t key[16];

		unhex_exact(v->key, key, 16);
		unhex_exact(v->pt, pt, n);
		unhex_exact(v->ct, ct, n);
		memset(out, 0xa5, sizeof(out));
		assert_int_equal(qw_zuc_eea3(key, v->count, v->bearer, v->direction,
					     pt, v->bits, out), 0);
		assert_memory_equal(out, ct, n);
		assert_int_equal(out[n], 0xa5); /* nothing written past the end */
		/* Decryption is the same operation, here in place. */
		assert_int_equal(qw_zuc_eea3(key, v->count, v->bearer, v->direction,
					     out, v->bits, out), 0);
		assert_memory_equal(out, pt, n);
	}
}

/* decrypt(encrypt(x)) == x for lengths that end inside a byte or word,
 * with the bits past the length zeroed in both directions. */
static void test_eea3_roundtrip_odd_lengths(void **state)
{
	static const size_t lens[] = { 1, 7, 9, 31, 33, 63, 65, 127, 255, 1001, 4093 };
	uint8_t key[16], pt[520], ct[520], back[520];
	size_t i, j;

	(void)state;
	for (j = 0; j < sizeof(key); j++)
		key[j] = (uint8_t)(0x3c ^ (j * 29));
	for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		size_t bits = lens[i], n = (bits + 7) / 8;
		uint8_t tailmask = bits % 8 ? (uint8_t)(0xff << (8 - bits % 8)) : 0xff;

		for (j = 0; j < n; j++)
			pt[j] = (uint8_t)(j * 131 + 7 + bits);
		assert_int_equal(qw_zuc_eea3(key, 0x12345678u + (uint32_t)i, 0x15, 1,
					     pt, bits, ct), 0);
		assert_int_equal(ct[n - 1] & (uint8_t)~tailmask, 0);
		assert_int_equal(qw_zuc_eea3(key, 0x12345678u + (uint32_t)i, 0x15, 1,
					     ct, bits, back), 0);
		assert_memory_equal(back, pt, n - 1);
		assert_int_equal(back[n - 1], pt[n - 1] & tailmask);
		/* A different COUNT must give a different keystream. */
		assert_int_equal(qw_zuc_eea3(key, 0x12345678u + (uint32_t)i + 1, 0x15, 1,
					     ct, bits, back), 0);
		if (bits > 32)
			assert_memory_not_equal(back, pt, n - 1);
	}
	/* Zero length: nothing to do, NULL buffers allowed. */
	assert_int_equal(qw_zuc_eea3(key, 0, 0, 0, NULL, 0, NULL), 0);
}

static void test_eea3_einval(void **state)
{
	uint8_t key[16] = { 0 }, buf[8] = { 0x11 }, out[8];

	(void)state;
	memset(out, 0x77, sizeof(out));
	assert_int_equal(qw_zuc_eea3(key, 0, 32, 0, buf, 64, out), QW_EINVAL);
	assert_int_equal(qw_zuc_eea3(key, 0, 255, 0, buf, 64, out), QW_EINVAL);
	assert_int_equal(qw_zuc_eea3(key, 0, 0, 2, buf, 64, out), QW_EINVAL);
	assert_int_equal(out[0], 0x77); /* untouched on error */
	assert_int_equal(qw_zuc_eea3(key, 0, 31, 1, buf, 64, out), 0);
}

/* ---- 128-EIA3 (Document 3, section 5) ---- */

struct eia3_vec {
	const char *key;
	uint32_t count;
	uint8_t bearer, direction;
	size_t bits;
	const char *msg;
	uint32_t mac;
};

static const struct eia3_vec eia3[] = {
	{ "00000000000000000000000000000000", 0, 0, 0, 1, "00000000", 0xc8a9595e },
	{ "47054125561eb2dda94059da05097850", 0x561eb2dd, 0x14, 0, 90,
	  "000000000000000000000000", 0x6719a088 },
	{ "c9e6cec4607c72db000aefa88385ab0a", 0xa94059da, 0x0a, 1, 577,
	  "983b41d47d780c9e1ad11d7eb70391b1de0b35da2dc62f83e7b78d6306ca0ea0"
	  "7e941b7be91348f9fcb170e2217fecd97f9f68adb16e5d7d21e569d280ed775c"
	  "ebde3f4093c5388100",
	  0xfae8ff0b },
	{ "c8a48262d0c2e2bac4b96ef77e80ca59", 0x05097850, 0x10, 1, 2079,
	  "b546430bf87b4f1ee834704cd6951c36e26f108cf731788f48dc34f1678c0522"
	  "1c8fa7ff2f39f477e7e49ef60a4ec2c3de24312a96aa26e1cfba57563838b297"
	  "f47e8510c779fd6654b143386fa639d31edbd6c06e47d159d94362f26aeeedee"
	  "0e4f49d9bf8412995415bfad56ee82d1ca7463abf085b082b09904d6d990d43c"
	  "f2e062f40839d93248b1eb92cdfed5300bc148280430b6d0caa094b6ec8911ab"
	  "7dc36824b824dc0af6682b0935fde7b492a14dc2f43648038da2cf79170d2d50"
	  "133fd49416cb6e33bea90b8bf4559b03732a01ea290e6d074f79bb83c10e5800"
	  "15cc1a85b36b5501046e9c4bdcae5135690b8666bd54b7a703ea7b6f220a5469"
	  "a568027e",
	  0x004ac4d6 },
	{ "6b8b08ee79e0b5982d6d128ea9f220cb", 0x561eb2dd, 0x1c, 0, 5670,
	  "5bad724710ba1c56d5a315f8d40f6e093780be8e8de07b6992432018e08ed96a"
	  "5734af8bad8a575d3a1f162f85045cc770925571d9f5b94e454a77c16e72936b"
	  "f016ae157499f0543b5d52caa6dbeab697d2bb73e41b8075dce79b4b86044f66"
	  "1d4485a543dd78606e0419e8059859d3cb2b67ce0977603f81ff839e33185954"
	  "4cfbc8d00fef1a4c8510fb547d6b06c611ef44f1bce107cfa45a06aab360152b"
	  "28dc1ebe6f7fe09b0516f9a5b02a1bd84bb0181e2e89e19bd8125930d178682f"
	  "3862dc51b636f04e720c47c3ce51ad70d94b9b2255fbae906549f499f8c6d399"
	  "47ed5e5df8e2def113253e7b08d0a76b6bfc68c812f375c79b8fe5fd85976aa6"
	  "d46b4a2339d8ae5147f680fbe70f978b38effd7b2f7866a22554e193a94e98a6"
	  "8b74bd25bb2b3f5fb0a5fd59887f9ab68159b7178d5b7b677cb546bf41eadca2"
	  "16fc10850128f8bdef5c8d89f96afa4fa8b54885565ed838a950fee5f1c3b0a4"
	  "f6fb71e54dfd169e82cecc7266c850e67c5ef0ba960f5214060e71eb172a75fc"
	  "1486835cbea6534465b055c96a72e4105224182325d830414b40214daa8091d2"
	  "e0fb010ae15c6de90850973bdf1e423be148a237b87a0c9f34d4b47605b803d7"
	  "43a86a90399a4af396d3a1200a62f3d9507962e8e5bee6d3da2bb3f7237664ac"
	  "7a292823900bc63503b29e80d63f6067bf8e1716ac25beba350deb62a99fe031"
	  "85eb4f69937ecd387941fda544ba67db0911774938b01827bcc69c92b3f772a9"
	  "d2859ef003398b1f6bbad7b574f7989a1d10b2df798e0dbf30d6587464d24878"
	  "cd00c0eaee8a1a0cc753a27979e11b41db1de3d5038afaf49f5c682c3748d8a3"
	  "a9ec54e6a371275f1683510f8e4f90938f9ab6e134c2cfdf4841cba88e0cff2b"
	  "0bcc8e6adcb71109b5198fecf1bb7e5c531aca50a56a8a3b6de59862d41fa113"
	  "d9cd957808f08571d9a4bb792af271f6cc6dbb8dc7ec36e36be1ed308164c31c"
	  "7c0afc541c",
	  0x0ca12792 },
};

static void test_eia3_vectors(void **state)
{
	static uint8_t msg[MAXBUF];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(eia3) / sizeof(eia3[0]); i++) {
		const struct eia3_vec *v = &eia3[i];
		uint8_t key[16];
		uint32_t mac = 0;
		size_t n;

		unhex_exact(v->key, key, 16);
		n = unhex(v->msg, msg, sizeof(msg));
		assert_true(n >= (v->bits + 7) / 8);
		assert_int_equal(qw_zuc_eia3(key, v->count, v->bearer, v->direction,
					     msg, v->bits, &mac), 0);
		assert_int_equal(mac, v->mac);
	}
}

/* The MAC covers exactly length_bits: bits after it are ignored, any bit
 * inside it matters. */
static void test_eia3_bit_exact(void **state)
{
	static uint8_t msg[MAXBUF];
	const struct eia3_vec *v = &eia3[3]; /* 2079 bits: ends inside a byte */
	uint8_t key[16];
	uint32_t mac;
	size_t last = v->bits / 8;

	(void)state;
	unhex_exact(v->key, key, 16);
	(void)unhex(v->msg, msg, sizeof(msg));
	msg[last] ^= 0x01; /* bit 2079 is past the end */
	assert_int_equal(qw_zuc_eia3(key, v->count, v->bearer, v->direction, msg,
				     v->bits, &mac), 0);
	assert_int_equal(mac, v->mac);
	msg[last] ^= 0x02; /* bit 2078 is the last one covered */
	assert_int_equal(qw_zuc_eia3(key, v->count, v->bearer, v->direction, msg,
				     v->bits, &mac), 0);
	assert_int_not_equal(mac, v->mac);
	/* Direction and bearer are bound into the MAC. */
	msg[last] ^= 0x02;
	assert_int_equal(qw_zuc_eia3(key, v->count, v->bearer, 0, msg, v->bits, &mac), 0);
	assert_int_not_equal(mac, v->mac);
	assert_int_equal(qw_zuc_eia3(key, v->count, v->bearer ^ 1, v->direction, msg,
				     v->bits, &mac), 0);
	assert_int_not_equal(mac, v->mac);
	/* Empty message: defined (L = 2 keystream words), NULL allowed. */
	assert_int_equal(qw_zuc_eia3(key, 0, 0, 0, NULL, 0, &mac), 0);
}

static void test_eia3_einval(void **state)
{
	uint8_t key[16] = { 0 }, msg[4] = { 0 };
	uint32_t mac = 0x5a5a5a5a;

	(void)state;
	assert_int_equal(qw_zuc_eia3(key, 0, 32, 0, msg, 32, &mac), QW_EINVAL);
	assert_int_equal(qw_zuc_eia3(key, 0, 0, 2, msg, 32, &mac), QW_EINVAL);
	assert_int_equal(qw_zuc_eia3(key, 0, 200, 7, msg, 32, &mac), QW_EINVAL);
	assert_int_equal(mac, 0x5a5a5a5a);
}

/* ---- ZUC-256 keystream ---- */

struct ks256_vec {
	const char *key, *iv; /* iv: 25 bytes, IV17..IV24 six-bit */
	const char *z;        /* first 20 keystream words */
};

static const struct ks256_vec ks256[] = {
	/* Paper, section 4.1: all-zero key and IV. */
	{ "0000000000000000000000000000000000000000000000000000000000000000",
	  "00000000000000000000000000000000000000000000000000",
	  "58d03ad62e032ce2dafc683a39bdcb0352a2bc67f1b7de74163ce3a101ef5558"
	  "9639d75b95fa681b7f090df756391ccc903b7612744d544c17bc3fad8b163b08"
	  "21787c0b97775bb84943c6bbe8ad8afd" },
	/* Paper, section 4.1: all-one key and IV. */
	{ "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
	  "ffffffffffffffffffffffffffffffffff3f3f3f3f3f3f3f3f",
	  "3356cbaed1a1c18b6baa4ffe343f777c9e15128f251ab65b949f7b26ef7157f2"
	  "96dd2fa9df95e3ee7a5be02ec32ba585505af316c2f9ded27cdbd935e441ce11"
	  "15fd0a80bb7aef6768989416b8fac8c2" },
	/* ipsec-mb test256EEA3 sets 3-5. */
	{ "67c6697351ff4aec29cdbaabf2fbe3467cc254f81be8e78d765a2e63339fc99a",
	  "ffffffffffffffffffffffffffffffffff3f3f3f3f3f3f3f3f",
	  "b7a0405ed0e5e447ba13f2b5a9ed8a25e43e8e62d7b3e646c571a1c6cd76ea59"
	  "3a493de2f9529100af206960cce84b380bb842cd1b12acd98950874685d15766"
	  "fa658598ffb7893f34ff9ff13d80e854" },
	{ "c254f81be8e78d765a2e63339fc99a66320db73158a35a255d051758e95ed4ab",
	  "67c6697351ff4aec29cdbaabf2fbe3467c3f3f3f3f3f3f3f3f",
	  "8d59003cb98fe279c7e88535efe5b551dea5ecb1cadc555a3cd3a9b4322234d9"
	  "42e2994a9b87fd467354dc68eae8d4badc1cb74413a0a0a218863f3592d11c8c"
	  "aeffa31b4ee86fc64937f98ac6907c36" },
	{ "8d765a2e63339fc99a66320db73158a35a255d051758e95ed4abb2cdc69bb454",
	  "67c6697351ff4aec29cdbaabf2fbe3467c30251338063e2327",
	  "d82e40782c03a71a90a505c58e61268be25f61f61fd46d040d9e487838f32f97"
	  "46004eaccc930943921a174238f88c9b7e90c29f4a160c2a433bbbd950ee85d9"
	  "7d1e3ab557fb56d8b4345c5c0b486737" },
};

static void test_zuc256_keystream(void **state)
{
	size_t i, j;

	(void)state;
	for (i = 0; i < sizeof(ks256) / sizeof(ks256[0]); i++) {
		struct qw_zuc st;
		uint8_t key[32], iv[25], zb[80];
		uint32_t z[20];

		unhex_exact(ks256[i].key, key, 32);
		unhex_exact(ks256[i].iv, iv, 25);
		unhex_exact(ks256[i].z, zb, 80);
		assert_int_equal(qw_zuc256_init(&st, key, iv), 0);
		qw_zuc_keystream(&st, z, 20);
		for (j = 0; j < 20; j++) {
			uint32_t want = ((uint32_t)zb[4 * j] << 24) | ((uint32_t)zb[4 * j + 1] << 16) |
					((uint32_t)zb[4 * j + 2] << 8) | zb[4 * j + 3];

			assert_int_equal(z[j], want);
		}
		qw_zuc_wipe(&st);
	}
}

static void test_zuc256_bad_iv(void **state)
{
	struct qw_zuc st, zero;
	uint8_t key[32] = { 0 }, iv[25] = { 0 };

	(void)state;
	memset(&zero, 0, sizeof(zero));
	iv[24] = 0x40; /* seven bits in a six-bit field */
	assert_int_equal(qw_zuc256_init(&st, key, iv), QW_EINVAL);
	assert_memory_equal(&st, &zero, sizeof(st));
}

/* ---- ZUC-256 MAC (paper, section 4.2) ---- */

struct mac256_vec {
	uint8_t fill;     /* key and IV bytes: 0x00 or 0xff (IV17..24: 0x3f) */
	uint8_t msgbyte;  /* message content */
	size_t bits;
	const char *t32, *t64, *t128;
};

static const struct mac256_vec mac256[] = {
	{ 0x00, 0x00, 400, "9b972a74", "673e54990034d38c",
	  "d85e54bbcb9600967084c952a1654b26" },
	{ 0x00, 0x11, 4000, "8754f5cf", "130dc225e72240cc",
	  "df1e8307b31cc62beca1ac6f8190c22f" },
	{ 0xff, 0x00, 400, "1f3079b4", "8c71394d39957725",
	  "a35bb274b567c48b28319f111af34fbd" },
	{ 0xff, 0x11, 4000, "5c7c8b88", "ea1dee544bb6223b",
	  "3a83b554be408ca5494124ed9d473205" },
};

static void test_zuc256_mac_vectors(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(mac256) / sizeof(mac256[0]); i++) {
		const struct mac256_vec *v = &mac256[i];
		uint8_t key[32], iv[25], msg[500], tag[16], want[16];

		memset(key, v->fill, sizeof(key));
		memset(iv, v->fill, 17);
		memset(iv + 17, v->fill & 0x3f, 8);
		memset(msg, v->msgbyte, sizeof(msg));

		unhex_exact(v->t32, want, 4);
		assert_int_equal(qw_zuc256_mac(key, iv, msg, v->bits, 32, tag), 0);
		assert_memory_equal(tag, want, 4);
		unhex_exact(v->t64, want, 8);
		assert_int_equal(qw_zuc256_mac(key, iv, msg, v->bits, 64, tag), 0);
		assert_memory_equal(tag, want, 8);
		unhex_exact(v->t128, want, 16);
		assert_int_equal(qw_zuc256_mac(key, iv, msg, v->bits, 128, tag), 0);
		assert_memory_equal(tag, want, 16);
	}
}

static void test_zuc256_mac_einval(void **state)
{
	uint8_t key[32] = { 0 }, iv[25] = { 0 }, msg[4] = { 0 }, tag[16];

	(void)state;
	memset(tag, 0x99, sizeof(tag));
	assert_int_equal(qw_zuc256_mac(key, iv, msg, 32, 48, tag), QW_EINVAL);
	assert_int_equal(qw_zuc256_mac(key, iv, msg, 32, 256, tag), QW_EINVAL);
	iv[17] = 0xff;
	assert_int_equal(qw_zuc256_mac(key, iv, msg, 32, 32, tag), QW_EINVAL);
	assert_int_equal(tag[0], 0x99);
	/* Bits past length_bits do not affect the tag. */
	iv[17] = 0;
	{
		uint8_t t1[16], t2[16];

		msg[1] = 0x00;
		assert_int_equal(qw_zuc256_mac(key, iv, msg, 9, 128, t1), 0);
		msg[1] = 0x7f;
		assert_int_equal(qw_zuc256_mac(key, iv, msg, 9, 128, t2), 0);
		assert_memory_equal(t1, t2, 16);
		msg[1] = 0x80;
		assert_int_equal(qw_zuc256_mac(key, iv, msg, 9, 128, t2), 0);
		assert_memory_not_equal(t1, t2, 16);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_zuc128_keystream),
		cmocka_unit_test(test_zuc_keystream_chunking),
		cmocka_unit_test(test_zuc_wipe),
		cmocka_unit_test(test_eea3_vectors),
		cmocka_unit_test(test_eea3_roundtrip_odd_lengths),
		cmocka_unit_test(test_eea3_einval),
		cmocka_unit_test(test_eia3_vectors),
		cmocka_unit_test(test_eia3_bit_exact),
		cmocka_unit_test(test_eia3_einval),
		cmocka_unit_test(test_zuc256_keystream),
		cmocka_unit_test(test_zuc256_bad_iv),
		cmocka_unit_test(test_zuc256_mac_vectors),
		cmocka_unit_test(test_zuc256_mac_einval),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
