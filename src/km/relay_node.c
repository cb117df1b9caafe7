/* Key relay on the node: placeholder until the relay protocol is wired
 * (docs/relay-routing.md); SAEs at non-neighbour nodes are unknown here,
 * as before. */
#include "km_internal.h"

int km_relay_init(struct qw_km *km)
{
	(void)km;
	return 0;
}

void km_relay_free(struct qw_km *km)
{
	(void)km;
}

void km_relay_on_message(struct km_peer *p, const struct qw_kmlink_msg *m)
{
	(void)m;
	km_peer_drop(p, "relay not spoken");
}

void km_relay_link_changed(struct km_peer *p)
{
	(void)p;
}

void km_relay_get_keys(struct qw_km *km, const struct qw_kme_get_key_req *req,
		       const char *dst_node, qw_kme_keys_cb cb, void *arg)
{
	(void)km;
	(void)req;
	(void)dst_node;
	cb(arg, QW_ENOTFOUND, NULL, 0);
}

int km_relay_status(struct qw_km *km, const char *dst_node, uint64_t *bits)
{
	(void)km;
	(void)dst_node;
	*bits = 0;
	return QW_ENOTFOUND;
}
