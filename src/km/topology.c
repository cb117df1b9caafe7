/* Network topology files for `qwave net up` (include/qwave/km.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qwave/km.h"
#include "qwave/kmlink.h"
#include "qwave/secmem.h"

const char *const qw_km_topo_link_keys[] = {
	"attenuation_db_per_km", "detector_efficiency", "dark_count", "misalignment",
	"pulse_rate_hz", "mu", "nu", "vacuum", "p_signal", "p_decoy", "p_vacuum", "eve_fraction",
	"afterpulse", "block_bits", "blocks_per_session", "bounds", "ec", "qber_threshold", "pace",
	NULL
};

static int fail(struct qw_config_error *err, const struct qw_config *cfg, int line, int code,
		const char *what, const char *arg)
{
	snprintf(err->msg, sizeof(err->msg), "%.60s:%d: %.40s%.140s", qw_config_source(cfg), line, what,
		 arg ? arg : "");
	err->line = line;
	return code;
}

static int get_id(const struct qw_config *cfg, const struct qw_config_section *s, const char *key,
		  const char **out, struct qw_config_error *err)
{
	int ret, line;

	if ((ret = qw_config_require(s, key, out, err)))
		return ret;
	(void)qw_config_section_get(s, key, &line);
	if (!qw_kmlink_id_valid(*out))
		return fail(err, cfg, line, QW_EINVAL,
			    "not a valid ID (1-64 characters of A-Z a-z 0-9 . _ -): ", *out);
	return 0;
}

static int node_known(const struct qw_km_topo *t, const char *id)
{
	for (size_t i = 0; i < t->nnodes; i++)
		if (!strcmp(t->nodes[i], id))
			return 1;
	return 0;
}

/* The overrides must pass the node configuration's own checks: build a
 * throw-away node file around them. */
static int check_overrides(const struct qw_config *cfg, const struct qw_km_topo_link *l,
			   struct qw_config_error *err)
{
	char text[4096];
	size_t off = 0;
	struct qw_config *c = NULL;
	struct qw_km_conf kc;
	struct qw_config_error e;
	int ret;

	off += (size_t)snprintf(text, sizeof(text),
				"[node]\nid = %s\ndata_dir = x\nlisten = 127.0.0.1:0\ncert = c\nkey = k\nca = a\n"
				"[link]\npeer = %s\naddress = 127.0.0.1:1\npsk_file = p\ndistance_km = %.17g\n",
				l->a, l->b, l->length_km);
	for (size_t i = 0; i < qw_config_section_nkeys(l->sec) && off < sizeof(text); i++) {
		const char *k, *v;
		int line;
		qw_config_section_entry(l->sec, i, &k, &v, &line);
		if (!strcmp(k, "a") || !strcmp(k, "b") || !strcmp(k, "length_km"))
			continue;
		off += (size_t)snprintf(text + off, sizeof(text) - off, "%s = %s\n", k, v);
	}
	if (off >= sizeof(text))
		return fail(err, cfg, l->line, QW_ERANGE, "[link] too long", NULL);
	ret = qw_config_parse_string(text, "-", &c, &e);
	if (!ret)
		ret = qw_km_conf_load(c, &kc, &e);
	if (ret) {
		/* name the topology's line: find the key the message is about */
		int line = l->line;
		for (size_t i = 0; i < qw_config_section_nkeys(l->sec); i++) {
			const char *k, *v;
			int kl;
			char quoted[80];
			qw_config_section_entry(l->sec, i, &k, &v, &kl);
			snprintf(quoted, sizeof(quoted), "'%s'", k);
			if (strstr(e.msg, quoted))
				line = kl;
		}
		{
			const char *what = strstr(e.msg, ": ");
			fail(err, cfg, line, ret, "[link] ", what ? what + 2 : e.msg);
		}
	}
	qw_km_conf_clear(&kc);
	qw_config_free(c);
	return ret;
}

/* [routing], [relay] and [policy] are copied into every node's
 * configuration: check them as a node would, naming the topology's lines. */
static const char *const node_wide[] = { "routing", "relay", "policy", NULL };

static int check_node_wide(const struct qw_config *cfg, struct qw_config_error *err)
{
	char text[16384];
	int lines[512];
	size_t off, nl = 0;
	struct qw_config *c = NULL;
	struct qw_km_conf kc;
	struct qw_config_error e;
	int ret;

	off = (size_t)snprintf(text, sizeof(text), "[node]\nid = x\ndata_dir = x\n");
	lines[nl++] = 0;
	lines[nl++] = 0;
	lines[nl++] = 0;
	for (size_t k = 0; node_wide[k]; k++) {
		const struct qw_config_section *s = qw_config_find(cfg, node_wide[k], NULL), *again;

		if (!s)
			continue;
		if ((again = qw_config_find(cfg, node_wide[k], s)))
			return fail(err, cfg, qw_config_section_line(again), QW_EINVAL, "section repeated: ",
				    node_wide[k]);
		off += (size_t)snprintf(text + off, off < sizeof(text) ? sizeof(text) - off : 0, "[%s]\n",
					node_wide[k]);
		if (nl < 512)
			lines[nl++] = qw_config_section_line(s);
		for (size_t i = 0; i < qw_config_section_nkeys(s); i++) {
			const char *key, *v;
			int line;

			qw_config_section_entry(s, i, &key, &v, &line);
			off += (size_t)snprintf(text + off, off < sizeof(text) ? sizeof(text) - off : 0,
						"%s = %s\n", key, v);
			if (nl < 512)
				lines[nl++] = line;
		}
	}
	if (off >= sizeof(text) || nl >= 512)
		return fail(err, cfg, 0, QW_ERANGE, "[routing], [relay] and [policy] too long", NULL);
	ret = qw_config_parse_string(text, "-", &c, &e);
	if (!ret)
		ret = qw_km_conf_load(c, &kc, &e);
	if (ret) {
		/* e.line is the throw-away file's line: map it back */
		const char *what = strstr(e.msg, ": ");
		int line = e.line > 0 && (size_t)e.line <= nl ? lines[e.line - 1] : 0;

		fail(err, cfg, line, ret, "", what ? what + 2 : e.msg);
	}
	qw_km_conf_clear(&kc);
	qw_config_free(c);
	return ret;
}

int qw_km_topo_load(const struct qw_config *cfg, struct qw_km_topo *t, struct qw_config_error *err)
{
	static const char *const sections[] = { "node", "link", "sae", "limits", "routing", "relay",
						"policy", NULL };
	static const char *const node_keys[] = { "id", NULL };
	static const char *const sae_keys[] = { "id", "node", NULL };
	const char *link_keys[64];
	const struct qw_config_section *s;
	size_t n = 0, nk = 0;
	int ret;

	memset(t, 0, sizeof(*t));
	link_keys[nk++] = "a";
	link_keys[nk++] = "b";
	link_keys[nk++] = "length_km";
	for (size_t i = 0; qw_km_topo_link_keys[i]; i++)
		link_keys[nk++] = qw_km_topo_link_keys[i];
	link_keys[nk] = NULL;
	if ((ret = qw_config_check_sections(cfg, sections, err)))
		return ret;
	n = qw_config_nsections(cfg);
	t->nodes = qw_calloc(n + 1, sizeof(*t->nodes));
	t->links = qw_calloc(n + 1, sizeof(*t->links));
	t->saes = qw_calloc(n + 1, sizeof(*t->saes));
	if (!t->nodes || !t->links || !t->saes)
		return QW_ENOMEM;
	for (s = qw_config_find(cfg, "node", NULL); s; s = qw_config_find(cfg, "node", s)) {
		const char *id;
		if ((ret = qw_config_check_keys(s, node_keys, err)) || (ret = get_id(cfg, s, "id", &id, err)))
			return ret;
		if (node_known(t, id))
			return fail(err, cfg, qw_config_section_line(s), QW_EEXIST, "node declared twice: ", id);
		t->nodes[t->nnodes++] = id;
	}
	if (!t->nnodes)
		return fail(err, cfg, 0, QW_ENOTFOUND, "no [node] section", NULL);
	for (s = qw_config_find(cfg, "link", NULL); s; s = qw_config_find(cfg, "link", s)) {
		struct qw_km_topo_link *l = &t->links[t->nlinks];
		l->sec = s;
		l->line = qw_config_section_line(s);
		l->length_km = 0;
		if ((ret = qw_config_check_keys(s, link_keys, err)) || (ret = get_id(cfg, s, "a", &l->a, err)) ||
		    (ret = get_id(cfg, s, "b", &l->b, err)))
			return ret;
		if (!qw_config_section_get(s, "length_km", NULL))
			return fail(err, cfg, l->line, QW_ENOTFOUND, "[link] needs key 'length_km'", NULL);
		if ((ret = qw_config_get_double(s, "length_km", 0, 1000, &l->length_km, err)))
			return ret;
		if (!node_known(t, l->a) || !node_known(t, l->b))
			return fail(err, cfg, l->line, QW_ENOTFOUND, "[link] between undeclared nodes: ",
				    node_known(t, l->a) ? l->b : l->a);
		if (!strcmp(l->a, l->b))
			return fail(err, cfg, l->line, QW_EINVAL, "[link] from a node to itself: ", l->a);
		for (size_t i = 0; i < t->nlinks; i++)
			if ((!strcmp(t->links[i].a, l->a) && !strcmp(t->links[i].b, l->b)) ||
			    (!strcmp(t->links[i].a, l->b) && !strcmp(t->links[i].b, l->a)))
				return fail(err, cfg, l->line, QW_EEXIST, "second [link] between ", l->a);
		if ((ret = check_overrides(cfg, l, err)))
			return ret;
		t->nlinks++;
	}
	for (s = qw_config_find(cfg, "sae", NULL); s; s = qw_config_find(cfg, "sae", s)) {
		struct qw_km_sae_conf *a = &t->saes[t->nsaes];
		a->line = qw_config_section_line(s);
		if ((ret = qw_config_check_keys(s, sae_keys, err)) || (ret = get_id(cfg, s, "id", &a->id, err)) ||
		    (ret = get_id(cfg, s, "node", &a->node, err)))
			return ret;
		if (!node_known(t, a->node))
			return fail(err, cfg, a->line, QW_ENOTFOUND, "[sae] at an undeclared node: ", a->node);
		for (size_t i = 0; i < t->nsaes; i++)
			if (!strcmp(t->saes[i].id, a->id))
				return fail(err, cfg, a->line, QW_EEXIST, "SAE declared twice: ", a->id);
		t->nsaes++;
	}
	t->limits = qw_config_find(cfg, "limits", NULL);
	return check_node_wide(cfg, err);
}

void qw_km_topo_clear(struct qw_km_topo *t)
{
	if (!t)
		return;
	free(t->nodes);
	free(t->links);
	free(t->saes);
	memset(t, 0, sizeof(*t));
}
