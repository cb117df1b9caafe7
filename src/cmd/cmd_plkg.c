/* qwave plkg: wireless physical-layer key generation end to end over the
 * simulated channel (include/qwave/plkg.h): key generation rate, key
 * disagreement before and after reconciliation, the eavesdropper's
 * disagreement, leaked bits, the channel's bound and a NIST SP 800-22
 * report on the keys; sweeps over SNR, speed or Eve's distance with an SVG
 * plot. docs/plkg.md explains every figure. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "commands.h"
#include "qwave/error.h"
#include "qwave/plkg.h"
#include "qwave/plkg_quant.h"
#include "qwave/randtest.h"
#include "qwave/svgplot.h"

#define MAX_ROWS 200

enum sweep_kind { SWEEP_NONE, SWEEP_SNR, SWEEP_SPEED, SWEEP_EVE };

struct opts {
	struct qw_plkg_params p;
	uint64_t probes, seed;
	double eve_wl;
	int json, randtest, have_remedy, is_static, have_scale, have_block;
	enum sweep_kind sweep;
	double from, to, step;
	const char *plot;
};

static void help(void)
{
	printf("usage: qwave plkg [options]\n"
	       "\n"
	       "Wireless physical-layer key generation end to end over a simulated\n"
	       "802.11 OFDM channel: probing, 2-D KLT quantization, reconciliation,\n"
	       "verification and privacy amplification between an access point (Alice)\n"
	       "and a terminal (Bob), with an eavesdropper near the terminal. See\n"
	       "docs/plkg.md.\n"
	       "\n"
	       "options (defaults in brackets):\n"
	       "  --snr DB               pilot SNR per subcarrier [20]\n"
	       "  --speed KMH            terminal speed [3]\n"
	       "  --probes N             probe rounds to simulate [6000]\n"
	       "  --probe-rate HZ        probe rounds per second [100]\n"
	       "  --model M              tgn-b | tgn-d | exp | flat [tgn-d]\n"
	       "  --quantizer Q          klt2d (2-D KLT, equiprobable Gray levels) [klt2d]\n"
	       "  --level-scale C        bits per feature b = floor(log2(C / sqrt(1 - rho^2)))\n"
	       "                         [1.5 cascade/ldpc, 0.6 bch]\n"
	       "  --max-bits B           at most B bits per real feature [6]\n"
	       "  --window W             probes per quantization window [192]\n"
	       "  --block-bits N         raw bits per distillation block [16384; bch 8192;\n"
	       "                         ldpc 40000]\n"
	       "  --reconcile R          cascade | bch | ldpc [cascade]\n"
	       "  --eve-distance WL      Eve's distance from the terminal in wavelengths [0.5]\n"
	       "  --eve-snr DB           Eve's pilot SNR [same as --snr]\n"
	       "  --static               terminal does not move (speed 0); turns the remedy\n"
	       "                         on unless --remedy none\n"
	       "  --remedy R             none | random-weights [none; random-weights with --static]\n"
	       "  --elements N           remedy: AP elements with random weights [8]\n"
	       "  --seed S               channel and noise seed [1]\n"
	       "  --no-randtest          skip the NIST SP 800-22 report\n"
	       "  --sweep WHAT[:FROM:TO:STEP]\n"
	       "                         table over snr (dB) [0:30:5], speed (km/h) [1:21:4]\n"
	       "                         or eve-distance (wavelengths) [0:1:0.1]\n"
	       "  --plot FILE.svg        with --sweep: the figure\n"
	       "  --json                 one JSON object on stdout\n"
	       "\n"
	       "Keys are simulation keys from seeded generators: never use them.\n");
}

static int parse_model(const char *v, enum qw_plkg_pdp *pdp)
{
	if (!strcmp(v, "tgn-b"))
		*pdp = QW_PLKG_PDP_TGN_B;
	else if (!strcmp(v, "tgn-d"))
		*pdp = QW_PLKG_PDP_TGN_D;
	else if (!strcmp(v, "exp"))
		*pdp = QW_PLKG_PDP_EXP;
	else if (!strcmp(v, "flat"))
		*pdp = QW_PLKG_PDP_FLAT;
	else
		return -1;
	return 0;
}

static const char *model_name(enum qw_plkg_pdp pdp)
{
	switch (pdp) {
	case QW_PLKG_PDP_TGN_B: return "tgn-b";
	case QW_PLKG_PDP_EXP: return "exp";
	case QW_PLKG_PDP_FLAT: return "flat";
	default: return "tgn-d";
	}
}

static int parse_sweep(const char *v, struct opts *o)
{
	char buf[128], *colon;

	if (strlen(v) >= sizeof(buf))
		return -1;
	strcpy(buf, v);
	colon = strchr(buf, ':');
	if (colon)
		*colon++ = '\0';
	if (!strcmp(buf, "snr")) {
		o->sweep = SWEEP_SNR;
		o->from = 0, o->to = 30, o->step = 5;
	} else if (!strcmp(buf, "speed")) {
		o->sweep = SWEEP_SPEED;
		o->from = 1, o->to = 21, o->step = 4;
	} else if (!strcmp(buf, "eve-distance")) {
		o->sweep = SWEEP_EVE;
		o->from = 0, o->to = 1, o->step = 0.1;
	} else {
		return -1;
	}
	if (colon) {
		char *a = strchr(colon, ':'), *b;
		if (!a)
			return -1;
		*a++ = '\0';
		b = strchr(a, ':');
		if (!b)
			return -1;
		*b++ = '\0';
		if (qw_cli_parse_double(colon, &o->from) || qw_cli_parse_double(a, &o->to) ||
		    qw_cli_parse_double(b, &o->step))
			return -1;
	}
	if (!(o->step > 0) || o->to < o->from || (o->to - o->from) / o->step + 1 > MAX_ROWS)
		return -1;
	return 0;
}

/* -1 on success, else the exit code. */
static int parse(int argc, char **argv, struct opts *o)
{
	static const char *cmd = "plkg";
	int have_eve_snr = 0, have_speed = 0;
	double eve_snr = 0, v;

	for (int i = 1; i < argc; i++) {
		const char *opt = argv[i], *val;

		if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
			help();
			return QW_EXIT_OK;
		}
		if (!strcmp(opt, "--json")) {
			o->json = 1;
			continue;
		}
		if (!strcmp(opt, "--static")) {
			o->is_static = 1;
			continue;
		}
		if (!strcmp(opt, "--no-randtest")) {
			o->randtest = 0;
			continue;
		}
		if (strncmp(opt, "--", 2))
			return qw_cli_usage_error(cmd, "unexpected argument '%s'", opt);
		if (i + 1 >= argc)
			return qw_cli_usage_error(cmd, "option '%s' needs a value (or is unknown)",
						  opt);
		val = argv[++i];
		if (!strcmp(opt, "--model")) {
			if (parse_model(val, &o->p.chan.pdp))
				return qw_cli_usage_error(cmd, "--model: '%s' is not tgn-b, tgn-d, exp or flat", val);
		} else if (!strcmp(opt, "--quantizer")) {
			if (strcmp(val, "klt2d"))
				return qw_cli_usage_error(cmd, "--quantizer: '%s' is not klt2d", val);
		} else if (!strcmp(opt, "--reconcile")) {
			enum qw_plkg_reconcile r;
			if (qw_plkg_reconcile_parse(val, &r))
				return qw_cli_usage_error(cmd, "--reconcile: '%s' is not cascade, bch or ldpc", val);
			o->p.reconcile = r;
		} else if (!strcmp(opt, "--remedy")) {
			if (!strcmp(val, "none"))
				o->p.remedy = QW_PLKG_REMEDY_NONE;
			else if (!strcmp(val, "random-weights"))
				o->p.remedy = QW_PLKG_REMEDY_RANDOM_WEIGHTS;
			else
				return qw_cli_usage_error(cmd, "--remedy: '%s' is not none or random-weights", val);
			o->have_remedy = 1;
		} else if (!strcmp(opt, "--sweep")) {
			if (parse_sweep(val, o))
				return qw_cli_usage_error(cmd, "--sweep: '%s' is not snr|speed|eve-distance[:FROM:TO:STEP] with STEP > 0, FROM <= TO, at most %d rows", val, MAX_ROWS);
		} else if (!strcmp(opt, "--plot")) {
			o->plot = val;
		} else if (!strcmp(opt, "--probes") || !strcmp(opt, "--seed") ||
			   !strcmp(opt, "--max-bits") || !strcmp(opt, "--window") ||
			   !strcmp(opt, "--block-bits") || !strcmp(opt, "--elements")) {
			uint64_t u;
			if (qw_cli_parse_u64(val, &u))
				return qw_cli_usage_error(cmd, "%s: '%s' is not a non-negative integer", opt, val);
			if (!strcmp(opt, "--probes")) {
				if (u < 1 || u > 100000000ull)
					return qw_cli_usage_error(cmd, "--probes: %s not in 1..1e8", val);
				o->probes = u;
			} else if (!strcmp(opt, "--seed")) {
				o->seed = u;
			} else if (!strcmp(opt, "--max-bits")) {
				if (u < 1 || u > QW_PLKG_MAX_BITS)
					return qw_cli_usage_error(cmd, "--max-bits: %s not in 1..%d", val, QW_PLKG_MAX_BITS);
				o->p.max_bits = (unsigned)u;
			} else if (!strcmp(opt, "--window")) {
				if (u < 1 || u > 1024)
					return qw_cli_usage_error(cmd, "--window: %s not in 1..1024", val);
				o->p.window = (unsigned)u;
			} else if (!strcmp(opt, "--block-bits")) {
				if (u < 64 || u > (1u << 30))
					return qw_cli_usage_error(cmd, "--block-bits: %s not in 64..2^30", val);
				o->p.block_bits = (size_t)u;
				o->have_block = 1;
			} else {
				if (u < 1 || u > 64)
					return qw_cli_usage_error(cmd, "--elements: %s not in 1..64", val);
				o->p.n_elements = (unsigned)u;
			}
		} else {
			if (qw_cli_parse_double(val, &v))
				return qw_cli_usage_error(cmd, "%s: '%s' is not a number", opt, val);
			if (!strcmp(opt, "--snr")) {
				if (v < -20 || v > 60)
					return qw_cli_usage_error(cmd, "--snr: %g dB not in -20..60", v);
				o->p.chan.snr_db = v;
			} else if (!strcmp(opt, "--eve-snr")) {
				if (v < -20 || v > 60)
					return qw_cli_usage_error(cmd, "--eve-snr: %g dB not in -20..60", v);
				eve_snr = v;
				have_eve_snr = 1;
			} else if (!strcmp(opt, "--speed")) {
				if (v < 0 || v > 500)
					return qw_cli_usage_error(cmd, "--speed: %g km/h not in 0..500", v);
				o->p.chan.speed_kmh = v;
				have_speed = 1;
			} else if (!strcmp(opt, "--probe-rate")) {
				if (!(v >= 1) || v > 10000)
					return qw_cli_usage_error(cmd, "--probe-rate: %g Hz not in 1..10000", v);
				o->p.chan.probe_rate_hz = v;
			} else if (!strcmp(opt, "--level-scale")) {
				if (!(v > 0) || v > 100)
					return qw_cli_usage_error(cmd, "--level-scale: %g not in (0, 100]", v);
				o->p.level_scale = v;
				o->have_scale = 1;
			} else if (!strcmp(opt, "--eve-distance")) {
				if (v < 0 || v > 1000)
					return qw_cli_usage_error(cmd, "--eve-distance: %g wavelengths not in 0..1000", v);
				o->eve_wl = v;
			} else {
				return qw_cli_usage_error(cmd, "unknown option '%s'", opt);
			}
		}
	}
	if (o->is_static) {
		if (have_speed && o->p.chan.speed_kmh != 0)
			return qw_cli_usage_error(cmd, "--static contradicts --speed %g", o->p.chan.speed_kmh);
		o->p.chan.speed_kmh = 0;
		if (!o->have_remedy)
			o->p.remedy = QW_PLKG_REMEDY_RANDOM_WEIGHTS;
	}
	o->p.chan.eve_snr_db = have_eve_snr ? eve_snr : o->p.chan.snr_db;
	if (o->plot && o->sweep == SWEEP_NONE)
		return qw_cli_usage_error(cmd, "--plot needs --sweep");
	if (o->sweep == SWEEP_SPEED && o->is_static)
		return qw_cli_usage_error(cmd, "--sweep speed contradicts --static");
	if (o->sweep == SWEEP_SPEED && o->from < 0)
		return qw_cli_usage_error(cmd, "--sweep speed: negative speed");
	if (o->sweep == SWEEP_EVE && o->from < 0)
		return qw_cli_usage_error(cmd, "--sweep eve-distance: negative distance");
	return -1;
}

static void apply_reconciler_defaults(struct opts *o)
{
	size_t bb = o->p.block_bits;
	double sc = o->p.level_scale;

	qw_plkg_params_for(&o->p, o->p.reconcile);
	if (o->have_block)
		o->p.block_bits = bb;
	if (o->have_scale)
		o->p.level_scale = sc;
}

struct row {
	double x;
	struct qw_plkg_sim_result r;
	struct qw_randtest_result rt_key[QW_RANDTEST_COUNT], rt_rec[QW_RANDTEST_COUNT];
	size_t n_key, n_rec;
};

static void progress(void *ctx, uint64_t done, uint64_t total)
{
	const char *what = ctx;
	qw_cli_progress("plkg%s: %llu/%llu probes", what, (unsigned long long)done,
			(unsigned long long)total);
}

static int run_one(const struct opts *o, struct qw_plkg_params *p, struct row *row, const char *tag)
{
	int ret;

	p->chan.eve_distance_m = o->eve_wl * qw_plkg_wavelength(&p->chan);
	ret = qw_plkg_simulate(p, o->seed, o->probes, progress, (void *)tag, &row->r);
	qw_cli_progress_done();
	if (ret)
		return ret;
	if (o->randtest) {
		row->n_key = row->n_rec = QW_RANDTEST_COUNT;
		ret = qw_randtest_run_all(row->r.key, QW_RANDTEST_ALPHA_DEFAULT, row->rt_key,
					  &row->n_key);
		if (!ret)
			ret = qw_randtest_run_all(row->r.reconciled, QW_RANDTEST_ALPHA_DEFAULT,
						  row->rt_rec, &row->n_rec);
	}
	return ret;
}

static json_t *randtest_json(const struct qw_bitvec *bits, const struct qw_randtest_result *rt,
			     size_t n)
{
	json_t *arr = json_array();
	int applicable = 0, passed = 0;

	for (size_t i = 0; i < n; i++) {
		json_t *t = json_object();
		json_object_set_new(t, "name", json_string(rt[i].name));
		json_object_set_new(t, "applicable", json_boolean(rt[i].applicable));
		json_object_set_new(t, "passed", json_boolean(rt[i].passed));
		if (rt[i].applicable) {
			json_object_set_new(t, "p_value", json_real(rt[i].p_value));
			if (!isnan(rt[i].p_value2))
				json_object_set_new(t, "p_value2", json_real(rt[i].p_value2));
		}
		json_object_set_new(t, "note", json_string(rt[i].note));
		json_array_append_new(arr, t);
		applicable += rt[i].applicable;
		passed += rt[i].passed;
	}
	return json_pack("{s:I, s:i, s:i, s:b, s:o}", "bits", (json_int_t)bits->nbits, "applicable",
			 applicable, "passed", passed, "all_applicable_passed",
			 applicable > 0 && applicable == passed, "tests", arr);
}

static json_t *row_json(const struct opts *o, const struct row *w)
{
	const struct qw_plkg_sim_result *r = &w->r;
	json_t *j = json_object();

	json_object_set_new(j, "probes", json_integer((json_int_t)r->probes));
	json_object_set_new(j, "seconds", json_real(r->seconds));
	json_object_set_new(j, "key_bits", json_integer((json_int_t)r->key_bits));
	json_object_set_new(j, "kgr_bits_per_probe", json_real(r->kgr_bits_per_probe));
	json_object_set_new(j, "kgr_bits_per_s", json_real(r->kgr_bits_per_s));
	json_object_set_new(j, "kgr_bits_per_min", json_real(60.0 * r->kgr_bits_per_s));
	json_object_set_new(j, "kdr_raw", json_real(r->kdr_raw));
	json_object_set_new(j, "kdr_final", json_real(r->kdr_final));
	json_object_set_new(j, "kdr_model", json_real(r->kdr_model));
	json_object_set_new(j, "keys_equal", json_boolean(r->keys_equal && r->blocks_delivered > 0));
	json_object_set_new(j, "blocks", json_integer((json_int_t)r->blocks));
	json_object_set_new(j, "blocks_delivered", json_integer((json_int_t)r->blocks_delivered));
	json_object_set_new(j, "blocks_equal", json_integer((json_int_t)r->blocks_equal));
	json_object_set_new(j, "blocks_dropped", json_integer((json_int_t)r->blocks_dropped));
	if (r->blocks_dropped)
		json_object_set_new(j, "last_drop_reason", json_string(r->last_drop));
	json_object_set_new(j, "eve_kdr", json_real(r->eve_kdr));
	json_object_set_new(j, "eve_kdr_strategies",
			    json_pack("{s:f, s:f, s:f, s:f}", "alice_pilot", r->eve_kdr_each[0],
				      "alice_pilot_negated", r->eve_kdr_each[1], "bob_pilot",
				      r->eve_kdr_each[2], "bob_pilot_negated", r->eve_kdr_each[3]));
	json_object_set_new(j, "eve_kdr_per_block_best", json_real(r->eve_kdr_per_block));
	json_object_set_new(j, "leak_bits", json_integer((json_int_t)r->leak_bits));
	json_object_set_new(j, "ec_leak_bits", json_integer((json_int_t)r->ec_leak_bits));
	json_object_set_new(j, "raw_bits", json_integer((json_int_t)r->raw_bits));
	json_object_set_new(j, "raw_bits_per_probe", json_real(r->raw_bits_per_probe));
	json_object_set_new(j, "entropy_bits", json_real(r->entropy_bits));
	json_object_set_new(j, "bound_bits_per_probe", json_real(r->bound_bits_per_probe));
	json_object_set_new(j, "bound_no_eve_bits_per_probe", json_real(r->bound_xy_bits_per_probe));
	json_object_set_new(j, "kgr_fraction_of_bound", json_real(r->kgr_fraction_of_bound));
	if (o->p.remedy == QW_PLKG_REMEDY_RANDOM_WEIGHTS)
		json_object_set_new(j, "remedy_informed_eve_bound_bits",
				    json_real(r->informed_eve_bound_bits));
	json_object_set_new(j, "modes", json_integer(r->modes));
	json_object_set_new(j, "features_per_window", json_integer((json_int_t)r->features_per_window));
	if (o->randtest)
		json_object_set_new(j, "randomness",
				    json_pack("{s:o, s:o}", "final_keys",
					      randtest_json(r->key, w->rt_key, w->n_key),
					      "reconciled_before_pa",
					      randtest_json(r->reconciled, w->rt_rec, w->n_rec)));
	return j;
}

static json_t *params_json(const struct opts *o)
{
	const struct qw_plkg_params *p = &o->p;

	return json_pack("{s:s, s:f, s:f, s:f, s:f, s:s, s:f, s:i, s:i, s:I, s:s, s:s, s:i, s:f, s:f, s:I, s:i}",
			 "model", model_name(p->chan.pdp), "snr_db", p->chan.snr_db, "speed_kmh",
			 p->chan.speed_kmh, "probe_rate_hz", p->chan.probe_rate_hz,
			 "eve_distance_wavelengths", o->eve_wl, "quantizer", "klt2d",
			 "level_scale", p->level_scale, "max_bits", (int)p->max_bits, "window",
			 (int)p->window, "block_bits", (json_int_t)p->block_bits, "reconcile",
			 qw_plkg_reconcile_name(p->reconcile), "remedy",
			 p->remedy == QW_PLKG_REMEDY_RANDOM_WEIGHTS ? "random-weights" : "none",
			 "elements", (int)p->n_elements, "eve_snr_db", p->chan.eve_snr_db,
			 "eps_pa", p->eps_pa, "seed", (json_int_t)o->seed, "tag_bits",
			 (int)p->tag_bits);
}

static void print_randtest(const char *what, const struct qw_bitvec *bits,
			   const struct qw_randtest_result *rt, size_t n)
{
	int app = 0, pass = 0;

	for (size_t i = 0; i < n; i++) {
		app += rt[i].applicable;
		pass += rt[i].passed;
	}
	printf("randomness (%s, %zu bits): %d of %d applicable tests passed (alpha 0.01)\n", what,
	       bits->nbits, pass, app);
	for (size_t i = 0; i < n; i++) {
		if (rt[i].applicable)
			printf("  %-17s %s  P = %.4f%s\n", rt[i].name, rt[i].passed ? "pass" : "FAIL",
			       rt[i].p_value, isnan(rt[i].p_value2) ? "" : " (and P2)");
		else
			printf("  %-17s n/a   %s\n", rt[i].name, rt[i].note);
	}
}

static void print_one(const struct opts *o, const struct row *w)
{
	const struct qw_plkg_sim_result *r = &w->r;
	const struct qw_plkg_params *p = &o->p;

	printf("channel          %s, %g dB, %g km/h, %g probes/s, Eve at %g wavelengths (%.1f mm)\n",
	       model_name(p->chan.pdp), p->chan.snr_db, p->chan.speed_kmh, p->chan.probe_rate_hz,
	       o->eve_wl, 1e3 * o->eve_wl * qw_plkg_wavelength(&p->chan));
	printf("chain            klt2d (window %u, scale %g) -> %s -> verify (%u-bit tag) -> PA%s\n",
	       p->window, p->level_scale, qw_plkg_reconcile_name(p->reconcile), p->tag_bits,
	       p->remedy == QW_PLKG_REMEDY_RANDOM_WEIGHTS ? " (remedy: random AP weights)" : "");
	printf("probes           %llu (%.1f s)\n", (unsigned long long)r->probes, r->seconds);
	printf("raw bits         %llu (%.2f bits/probe, %u modes, %zu features/window)\n",
	       (unsigned long long)r->raw_bits, r->raw_bits_per_probe, r->modes,
	       r->features_per_window);
	printf("entropy estimate %.0f bits (%.2f bits/probe)\n", r->entropy_bits,
	       r->entropy_bits / (double)r->probes);
	printf("leaked           %llu bits (%llu by reconciliation)\n",
	       (unsigned long long)r->leak_bits, (unsigned long long)r->ec_leak_bits);
	printf("secret key       %llu bits: %.3f bits/probe, %.1f bit/s, %.0f bits/min\n",
	       (unsigned long long)r->key_bits, r->kgr_bits_per_probe, r->kgr_bits_per_s,
	       60 * r->kgr_bits_per_s);
	printf("bound            %.2f bits/probe with Eve (I(X;Y|Z)), %.2f without; KGR = %.3f of it\n",
	       r->bound_bits_per_probe, r->bound_xy_bits_per_probe, r->kgr_fraction_of_bound);
	if (p->remedy == QW_PLKG_REMEDY_RANDOM_WEIGHTS)
		printf("remedy caveat    an Eve who knows the random weights leaves at most %.0f secret\n"
		       "                 bits for this whole session (grows like log(probes))\n",
		       r->informed_eve_bound_bits);
	printf("KDR              raw %.4f, final %.2g (model %.4f)\n", r->kdr_raw, r->kdr_final,
	       r->kdr_model);
	printf("blocks           %llu: %llu delivered (%llu equal), %llu dropped%s%s\n",
	       (unsigned long long)r->blocks, (unsigned long long)r->blocks_delivered,
	       (unsigned long long)r->blocks_equal, (unsigned long long)r->blocks_dropped,
	       r->blocks_dropped ? ", last: " : "", r->blocks_dropped ? r->last_drop : "");
	printf("Eve KDR          %.4f (best of: Alice's pilot %.4f, negated %.4f; Bob's %.4f, negated %.4f)\n",
	       r->eve_kdr, r->eve_kdr_each[0], r->eve_kdr_each[1], r->eve_kdr_each[2],
	       r->eve_kdr_each[3]);
	if (o->randtest) {
		print_randtest("final keys", r->key, w->rt_key, w->n_key);
		print_randtest("reconciled bits before PA", r->reconciled, w->rt_rec, w->n_rec);
	}
}

static const char *sweep_name(enum sweep_kind k)
{
	switch (k) {
	case SWEEP_SNR: return "snr_db";
	case SWEEP_SPEED: return "speed_kmh";
	default: return "eve_distance_wavelengths";
	}
}

static int write_plot(const struct opts *o, const struct row *rows, size_t n)
{
	double *x = calloc(n, sizeof(double)), *y1 = calloc(n, sizeof(double));
	double *y2 = calloc(n, sizeof(double)), *y3 = calloc(n, sizeof(double));
	struct qw_svgplot_series s[3];
	struct qw_svgplot plot = { 0 };
	size_t ns = 0;
	int ret = QW_ENOMEM;

	if (!x || !y1 || !y2 || !y3)
		goto out;
	for (size_t i = 0; i < n; i++) {
		x[i] = rows[i].x;
		if (o->sweep == SWEEP_EVE) {
			y1[i] = rows[i].r.eve_kdr;
			y2[i] = rows[i].r.kgr_fraction_of_bound;
			y3[i] = rows[i].r.kdr_raw;
		} else {
			y1[i] = rows[i].r.kgr_bits_per_probe;
			y2[i] = rows[i].r.bound_bits_per_probe;
			y3[i] = rows[i].r.raw_bits_per_probe;
		}
	}
	if (o->sweep == SWEEP_EVE) {
		s[ns++] = (struct qw_svgplot_series){ "Eve's KDR (best strategy)", x, y1, n };
		s[ns++] = (struct qw_svgplot_series){ "secret bits / bound with Eve", x, y2, n };
		s[ns++] = (struct qw_svgplot_series){ "Alice/Bob raw KDR", x, y3, n };
		plot.title = "PLKG: eavesdropper distance";
		plot.x_label = "Eve's distance from the terminal (wavelengths)";
		plot.y_label = "fraction";
	} else {
		s[ns++] = (struct qw_svgplot_series){ "secret key (after PA)", x, y1, n };
		s[ns++] = (struct qw_svgplot_series){ "bound I(X;Y|Z)", x, y2, n };
		s[ns++] = (struct qw_svgplot_series){ "raw quantized bits", x, y3, n };
		plot.title = o->sweep == SWEEP_SNR ? "PLKG key rate vs SNR" : "PLKG key rate vs speed";
		plot.x_label = o->sweep == SWEEP_SNR ? "pilot SNR (dB)" : "terminal speed (km/h)";
		plot.y_label = "bits per probe";
	}
	ret = qw_svgplot_save(o->plot, &plot, s, ns);
out:
	free(x);
	free(y1);
	free(y2);
	free(y3);
	return ret;
}

int qw_cmd_plkg(int argc, char **argv)
{
	struct opts o;
	struct row *rows = NULL;
	size_t n = 1;
	int rc, ret = 0;

	memset(&o, 0, sizeof(o));
	qw_plkg_params_default(&o.p);
	o.probes = 6000;
	o.seed = 1;
	o.eve_wl = 0.5;
	o.randtest = 1;
	rc = parse(argc, argv, &o);
	if (rc >= 0)
		return rc;
	apply_reconciler_defaults(&o);
	if (qw_plkg_params_check(&o.p))
		return qw_cli_usage_error("plkg", "inconsistent parameters");
	if (o.sweep != SWEEP_NONE) {
		n = (size_t)floor((o.to - o.from) / o.step + 1e-9) + 1;
		o.randtest = 0;
	}
	rows = calloc(n, sizeof(*rows));
	if (!rows)
		return qw_cli_fail("out of memory");
	for (size_t i = 0; i < n && !ret; i++) {
		struct qw_plkg_params p = o.p;
		struct opts oi = o;
		char tag[48] = "";

		if (o.sweep != SWEEP_NONE) {
			double x = o.from + (double)i * o.step;
			rows[i].x = x;
			snprintf(tag, sizeof(tag), " %s %g", sweep_name(o.sweep), x);
			if (o.sweep == SWEEP_SNR) {
				p.chan.snr_db = x;
				p.chan.eve_snr_db = x;
			} else if (o.sweep == SWEEP_SPEED) {
				p.chan.speed_kmh = x;
			} else {
				oi.eve_wl = x;
			}
		}
		ret = run_one(&oi, &p, &rows[i], tag);
		if (ret)
			ret = qw_cli_fail("simulation%s: %s", tag, qw_strerror(ret));
	}
	if (!ret && o.plot) {
		int pr = write_plot(&o, rows, n);
		if (pr)
			ret = qw_cli_fail("cannot write plot '%s': %s", o.plot, qw_strerror(pr));
	}
	if (!ret) {
		if (o.json) {
			json_t *obj;
			if (o.sweep != SWEEP_NONE) {
				json_t *arr = json_array();
				for (size_t i = 0; i < n; i++) {
					json_t *r = row_json(&o, &rows[i]);
					json_object_set_new(r, sweep_name(o.sweep), json_real(rows[i].x));
					json_array_append_new(arr, r);
				}
				obj = json_pack("{s:s, s:o, s:o}", "sweep", sweep_name(o.sweep), "rows",
						arr, "parameters", params_json(&o));
			} else {
				obj = row_json(&o, &rows[0]);
				json_object_set_new(obj, "parameters", params_json(&o));
			}
			if (o.plot)
				json_object_set_new(obj, "plot", json_string(o.plot));
			qw_cli_print_json(obj);
		} else if (o.sweep != SWEEP_NONE) {
			printf("# %s, %s, %llu probes at %g /s, seed %llu; rates in bits/probe\n",
			       model_name(o.p.chan.pdp), qw_plkg_reconcile_name(o.p.reconcile),
			       (unsigned long long)o.probes, o.p.chan.probe_rate_hz,
			       (unsigned long long)o.seed);
			printf("%12s %9s %9s %10s %9s %8s %9s %8s %7s %9s\n", sweep_name(o.sweep),
			       "raw", "secret", "secret/min", "bound", "fraction", "kdr_raw",
			       "eve_kdr", "equal", "leak_bits");
			for (size_t i = 0; i < n; i++) {
				const struct qw_plkg_sim_result *r = &rows[i].r;
				printf("%12g %9.3f %9.3f %10.0f %9.3f %8.3f %9.4f %8.4f %3llu/%-3llu %9llu\n",
				       rows[i].x, r->raw_bits_per_probe, r->kgr_bits_per_probe,
				       60 * r->kgr_bits_per_s, r->bound_bits_per_probe,
				       r->kgr_fraction_of_bound, r->kdr_raw, r->eve_kdr,
				       (unsigned long long)r->blocks_equal,
				       (unsigned long long)r->blocks, (unsigned long long)r->leak_bits);
			}
			if (o.plot)
				printf("# plot written to %s\n", o.plot);
		} else {
			print_one(&o, &rows[0]);
		}
	}
	for (size_t i = 0; i < n; i++)
		qw_plkg_sim_result_free(&rows[i].r);
	free(rows);
	return ret ? QW_EXIT_FAIL : QW_EXIT_OK;
}
