/* Routing on the node (the QKDN controller function): placeholder until
 * the LSA flooding is wired (docs/relay-routing.md "what the node must
 * wire"). Knows no path beyond the neighbours and allows every pair. */
#include "km_internal.h"

int km_route_init(struct qw_km *km)
{
	(void)km;
	return 0;
}

void km_route_free(struct qw_km *km)
{
	(void)km;
}

void km_route_on_message(struct km_peer *p, const struct qw_kmlink_msg *m)
{
	(void)p;
	(void)m;
}

void km_route_link_changed(struct km_peer *p)
{
	(void)p;
}

int km_route_paths(struct qw_km *km, const char *dst_node, uint64_t need_bits,
		   struct qw_route_path *paths, size_t max, size_t *n)
{
	(void)km;
	(void)dst_node;
	(void)need_bits;
	(void)paths;
	(void)max;
	*n = 0;
	return QW_ENOTFOUND;
}

int km_policy_check(struct qw_km *km, const char *master, const char *slave)
{
	(void)km;
	(void)master;
	(void)slave;
	return 0;
}
