/* qwave theory: what the decoy-state BB84 theory predicts for a fiber link
 * (key rate vs distance, asymptotic and finite-key). The numbers come from
 * src/distill/estimate.c, the same estimators the distillation chain uses;
 * formulas and sources in docs/theory.md. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "commands.h"
#include "qwave/error.h"
#include "qwave/estimate.h"
#include "qwave/svgplot.h"

#define MAX_ROWS 100000

struct keyrate_opts {
	struct qw_optics_params optics;
	enum qw_decoy_method method;
	double distance, mu, nu, nu2, q, f_ec, eps_sec, eps_cor;
	double block_bits;   /* 0: no finite-key figures */
	double pulses;       /* finite key for blocks of this many pulses (0: unset) */
	int have_distance, have_sweep, optimize, json;
	double from, to, step;
	const char *plot;
};

struct row {
	struct qw_keyrate_point pt;
	int finite;
	int too_few;         /* --pulses: under one expected key bit, no key */
	struct qw_finite_protocol pr;
	struct qw_finite_result fr;
};

static const char *method_name(enum qw_decoy_method m)
{
	switch (m) {
	case QW_DECOY_VACUUM_WEAK: return "vacuum-weak";
	case QW_DECOY_TWO_DECOY: return "two-decoy";
	default: return "infinite";
	}
}

static void keyrate_help(void)
{
	printf("usage: qwave theory keyrate (--distance KM | --sweep FROM:TO:STEP) [options]\n"
	       "\n"
	       "Decoy-state BB84 key rate of a fiber link predicted by the model of\n"
	       "Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005), and with --block-bits or --pulses\n"
	       "the finite-key rate of Lim et al., PRA 89, 022307 (2014). See docs/theory.md.\n"
	       "\n"
	       "options (defaults: GYS parameters of Ma et al. Table I):\n"
	       "  --distance KM          fiber length in km\n"
	       "  --sweep FROM:TO:STEP   table over distances (km)\n"
	       "  --decoy METHOD         infinite (default) | vacuum-weak | two-decoy\n"
	       "  --mu M                 signal mean photon number (0.48)\n"
	       "  --nu N                 weak decoy (0.05)\n"
	       "  --nu2 N2               second decoy of two-decoy, third intensity of the\n"
	       "                         finite-key protocol (0 = vacuum)\n"
	       "  --alpha DB_PER_KM      fiber loss (0.21 dB/km)\n"
	       "  --eta-bob E            Bob's detection efficiency (0.045)\n"
	       "  --y0 Y                 background yield per pulse (1.7e-6)\n"
	       "  --e-det E              misalignment error probability (0.033)\n"
	       "  --f-ec F               error-correction inefficiency (1.22)\n"
	       "  --q Q                  sifting factor of the asymptotic rate (0.5: BB84)\n"
	       "  --block-bits N         also the finite-key rate for blocks of N key bits\n"
	       "  --pulses N             also the finite-key rate and secret bits for blocks\n"
	       "                         of N pulses sent (e.g. 1e9), protocol optimised for N\n"
	       "  --no-optimize          finite key with fixed mu1=mu, mu2=nu, mu3=nu2,\n"
	       "                         p=(0.7,0.2,0.1), q_x=0.9 instead of optimizing them\n"
	       "  --eps-sec E            secrecy parameter (1e-10)\n"
	       "  --eps-cor E            correctness parameter (1e-15)\n"
	       "  --plot FILE.svg        with --sweep: key rate vs distance, log axis\n"
	       "  --json                 one JSON object on stdout\n"
	       "\n"
	       "Rates are secret bits per pulse sent. key_rate is the GLLP rate of\n"
	       "Ma et al. (key from signal pulses, sifting factor q). finite_key_rate is\n"
	       "Lim et al.'s protocol (biased bases, key from all intensities): compare it\n"
	       "with finite_limit, the same protocol's rate as the block grows without\n"
	       "bound, not with key_rate.\n");
}

static int parse_sweep(const char *s, double *from, double *to, double *step)
{
	char buf[128], *a, *b;

	if (strlen(s) >= sizeof(buf))
		return -1;
	strcpy(buf, s);
	a = strchr(buf, ':');
	if (!a)
		return -1;
	*a++ = '\0';
	b = strchr(a, ':');
	if (!b)
		return -1;
	*b++ = '\0';
	if (qw_cli_parse_double(buf, from) || qw_cli_parse_double(a, to) ||
	    qw_cli_parse_double(b, step))
		return -1;
	return 0;
}

/* Parse argv into o; returns -1 on success, else the exit code to return. */
static int keyrate_parse(int argc, char **argv, struct keyrate_opts *o)
{
	static const char *cmd = "theory keyrate";

	for (int i = 1; i < argc; i++) {
		const char *opt = argv[i], *val = NULL;
		double *dst = NULL;
		char name[32];
		const char *eq = strchr(opt, '=');

		if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
			keyrate_help();
			return QW_EXIT_OK;
		}
		if (!strcmp(opt, "--json")) {
			o->json = 1;
			continue;
		}
		if (!strcmp(opt, "--no-optimize")) {
			o->optimize = 0;
			continue;
		}
		if (strncmp(opt, "--", 2))
			return qw_cli_usage_error(cmd, "unexpected argument '%s'", opt);
		/* "--opt=value" or "--opt value" */
		if (eq) {
			size_t n = (size_t)(eq - opt);
			if (n >= sizeof(name))
				return qw_cli_usage_error(cmd, "unknown option '%s'", opt);
			memcpy(name, opt, n);
			name[n] = '\0';
			val = eq + 1;
		} else {
			if (strlen(opt) >= sizeof(name))
				return qw_cli_usage_error(cmd, "unknown option '%s'", opt);
			strcpy(name, opt);
		}

		if (!strcmp(name, "--distance"))
			dst = &o->distance, o->have_distance = 1;
		else if (!strcmp(name, "--mu"))
			dst = &o->mu;
		else if (!strcmp(name, "--nu"))
			dst = &o->nu;
		else if (!strcmp(name, "--nu2"))
			dst = &o->nu2;
		else if (!strcmp(name, "--alpha"))
			dst = &o->optics.alpha_db_per_km;
		else if (!strcmp(name, "--eta-bob"))
			dst = &o->optics.eta_bob;
		else if (!strcmp(name, "--y0"))
			dst = &o->optics.y0;
		else if (!strcmp(name, "--e-det"))
			dst = &o->optics.e_det;
		else if (!strcmp(name, "--f-ec"))
			dst = &o->f_ec;
		else if (!strcmp(name, "--q"))
			dst = &o->q;
		else if (!strcmp(name, "--block-bits"))
			dst = &o->block_bits;
		else if (!strcmp(name, "--pulses"))
			dst = &o->pulses;
		else if (!strcmp(name, "--eps-sec"))
			dst = &o->eps_sec;
		else if (!strcmp(name, "--eps-cor"))
			dst = &o->eps_cor;
		else if (strcmp(name, "--decoy") && strcmp(name, "--sweep") && strcmp(name, "--plot"))
			return qw_cli_usage_error(cmd, "unknown option '%s'", name);

		if (!val) {
			if (i + 1 >= argc)
				return qw_cli_usage_error(cmd, "option '%s' needs a value", name);
			val = argv[++i];
		}
		if (dst) {
			if (qw_cli_parse_double(val, dst))
				return qw_cli_usage_error(cmd, "%s: '%s' is not a number", name, val);
			if (dst == &o->block_bits) {
				uint64_t n;
				if (qw_cli_parse_u64(val, &n) || n < 1 || n > 9000000000000000ull)
					return qw_cli_usage_error(
						cmd, "--block-bits: '%s' is not an integer in 1..9e15",
						val);
			}
			if (dst == &o->pulses) {
				uint64_t n;
				/* 1e18 pulses: 30 years of a 1 GHz source, far past
				 * where the finite-size terms matter. */
				if (qw_cli_parse_u64(val, &n) || n < 1 || n > 1000000000000000000ull)
					return qw_cli_usage_error(
						cmd, "--pulses: '%s' is not an integer in 1..1e18", val);
			}
		} else if (!strcmp(name, "--decoy")) {
			if (!strcmp(val, "infinite"))
				o->method = QW_DECOY_INFINITE;
			else if (!strcmp(val, "vacuum-weak"))
				o->method = QW_DECOY_VACUUM_WEAK;
			else if (!strcmp(val, "two-decoy"))
				o->method = QW_DECOY_TWO_DECOY;
			else
				return qw_cli_usage_error(
					cmd, "--decoy: '%s' is not infinite, vacuum-weak or two-decoy",
					val);
		} else if (!strcmp(name, "--sweep")) {
			if (parse_sweep(val, &o->from, &o->to, &o->step))
				return qw_cli_usage_error(cmd, "--sweep: '%s' is not FROM:TO:STEP", val);
			o->have_sweep = 1;
		} else {
			o->plot = val;
		}
	}
	return -1;
}

/* Range checks with one line naming the bad value; -1 when all is well. */
static int keyrate_validate(const struct keyrate_opts *o)
{
	static const char *cmd = "theory keyrate";
	const struct qw_optics_params *p = &o->optics;

	if (o->have_distance == o->have_sweep)
		return qw_cli_usage_error(cmd, "give exactly one of --distance and --sweep");
	if (o->block_bits > 0.0 && o->pulses > 0.0)
		return qw_cli_usage_error(cmd, "give at most one of --block-bits and --pulses");
	if (o->plot && !o->have_sweep)
		return qw_cli_usage_error(cmd, "--plot needs --sweep FROM:TO:STEP");
	if (o->have_distance && o->distance < 0.0)
		return qw_cli_usage_error(cmd, "--distance: %g km is negative", o->distance);
	if (o->have_sweep) {
		if (o->from < 0.0 || o->to < o->from || !(o->step > 0.0))
			return qw_cli_usage_error(
				cmd, "--sweep: need 0 <= FROM <= TO and STEP > 0 (km)");
		if ((o->to - o->from) / o->step + 1.0 > MAX_ROWS)
			return qw_cli_usage_error(cmd, "--sweep: more than %d rows", MAX_ROWS);
	}
	if (!(o->mu > 0.0))
		return qw_cli_usage_error(cmd, "--mu: %g must be > 0", o->mu);
	if (!(o->nu > 0.0) || !(o->nu < o->mu))
		return qw_cli_usage_error(cmd, "--nu: %g must be in (0, mu)", o->nu);
	if (o->nu2 < 0.0 || !(o->nu2 < o->nu) || !(o->nu + o->nu2 < o->mu))
		return qw_cli_usage_error(cmd, "--nu2: %g needs 0 <= nu2 < nu and nu + nu2 < mu",
					  o->nu2);
	if (p->alpha_db_per_km < 0.0)
		return qw_cli_usage_error(cmd, "--alpha: %g dB/km is negative", p->alpha_db_per_km);
	if (!(p->eta_bob > 0.0) || p->eta_bob > 1.0)
		return qw_cli_usage_error(cmd, "--eta-bob: %g must be in (0, 1]", p->eta_bob);
	if (p->y0 < 0.0 || !(p->y0 < 1.0))
		return qw_cli_usage_error(cmd, "--y0: %g must be in [0, 1)", p->y0);
	if (p->e_det < 0.0 || p->e_det > 0.5)
		return qw_cli_usage_error(cmd, "--e-det: %g must be in [0, 0.5]", p->e_det);
	if (!(o->f_ec >= 1.0))
		return qw_cli_usage_error(cmd, "--f-ec: %g must be >= 1", o->f_ec);
	if (!(o->q > 0.0) || o->q > 1.0)
		return qw_cli_usage_error(cmd, "--q: %g must be in (0, 1]", o->q);
	if (!(o->eps_sec > 0.0) || !(o->eps_sec < 1.0))
		return qw_cli_usage_error(cmd, "--eps-sec: %g must be in (0, 1)", o->eps_sec);
	if (!(o->eps_cor > 0.0) || !(o->eps_cor < 1.0))
		return qw_cli_usage_error(cmd, "--eps-cor: %g must be in (0, 1)", o->eps_cor);
	return -1;
}

static int compute_row(const struct keyrate_opts *o, double km, struct row *r)
{
	int ret = qw_decoy_keyrate(&o->optics, km, o->method, o->mu, o->nu, o->nu2, o->q,
				   o->f_ec, &r->pt);

	r->finite = 0;
	r->too_few = 0;
	if (ret || !(o->block_bits > 0.0 || o->pulses > 0.0))
		return ret;
	qw_finite_protocol_default(&r->pr, o->mu, o->nu, o->nu2);
	r->pr.f_ec = o->f_ec;
	r->pr.eps.eps_sec = o->eps_sec;
	r->pr.eps.eps_cor = o->eps_cor;
	if (o->pulses > 0.0) {
		/* The model refuses a block without one expected key bit (at the
		 * starting protocol): that is "no key", not a failure. */
		if (o->pulses * qw_finite_key_per_pulse(&o->optics, km, &r->pr) < 1.0) {
			r->too_few = 1;
			r->fr.pulses = o->pulses;
			return 0;
		}
		if (o->optimize)
			ret = qw_finite_optimize_pulses(&o->optics, km, &r->pr, o->pulses, &r->fr);
		else
			ret = qw_finite_model_pulses(&o->optics, km, &r->pr, o->pulses, &r->fr);
	} else if (o->optimize)
		ret = qw_finite_optimize(&o->optics, km, &r->pr, o->block_bits, &r->fr);
	else
		ret = qw_finite_model(&o->optics, km, &r->pr, o->block_bits, &r->fr);
	r->finite = ret == 0;
	return ret;
}

static json_t *row_json(const struct row *r)
{
	json_t *j = json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "distance_km",
			      r->pt.distance_km, "eta", r->pt.eta, "gain", r->pt.gain, "qber",
			      r->pt.qber, "y1", r->pt.b.y1, "e1", r->pt.b.e1, "q1", r->pt.b.q1,
			      "key_rate", r->pt.key_rate);

	if (j && r->too_few) {
		json_object_set_new(j, "finite_key_rate", json_real(0.0));
		json_object_set_new(j, "finite_secret_bits", json_integer(0));
		json_object_set_new(j, "finite_pulses", json_real(r->fr.pulses));
	}
	if (j && r->finite) {
		json_object_set_new(j, "finite_key_rate", json_real(r->fr.rate));
		json_object_set_new(j, "finite_rate_limit", json_real(r->fr.rate_limit));
		json_object_set_new(j, "finite_secret_bits", json_integer((json_int_t)r->fr.length));
		json_object_set_new(j, "finite_pulses", json_real(r->fr.pulses));
		json_object_set_new(j, "finite_block_bits", json_real(r->fr.b.n_x));
		json_object_set_new(j, "finite_phi_x", json_real(r->fr.b.phi_x));
		json_object_set_new(
			j, "finite_protocol",
			json_pack("{s:[f,f,f], s:[f,f,f], s:f}", "mu", r->pr.mu[0], r->pr.mu[1],
				  r->pr.mu[2], "p", r->pr.p[0], r->pr.p[1], r->pr.p[2], "q_x",
				  r->pr.q_x));
	}
	return j;
}

static json_t *params_json(const struct keyrate_opts *o)
{
	json_t *j = json_pack("{s:s, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "decoy",
			      method_name(o->method), "mu", o->mu, "nu", o->nu, "nu2", o->nu2,
			      "alpha_db_per_km", o->optics.alpha_db_per_km, "eta_bob",
			      o->optics.eta_bob, "y0", o->optics.y0, "e_det", o->optics.e_det,
			      "f_ec", o->f_ec, "q", o->q, "e0", o->optics.e0);

	if (j && (o->block_bits > 0.0 || o->pulses > 0.0)) {
		if (o->pulses > 0.0)
			json_object_set_new(j, "pulses", json_real(o->pulses));
		else
			json_object_set_new(j, "block_bits", json_real(o->block_bits));
		json_object_set_new(j, "eps_sec", json_real(o->eps_sec));
		json_object_set_new(j, "eps_cor", json_real(o->eps_cor));
		json_object_set_new(j, "finite_optimized", json_boolean(o->optimize));
	}
	return j;
}

static void print_point(const struct keyrate_opts *o, const struct row *r)
{
	printf("decoy method     %s (mu %g, nu %g, nu2 %g)\n", method_name(o->method), o->mu,
	       o->nu, o->nu2);
	printf("distance         %g km (%.2f dB channel loss)\n", r->pt.distance_km,
	       o->optics.alpha_db_per_km * r->pt.distance_km);
	printf("eta              %.6g (overall transmittance)\n", r->pt.eta);
	printf("gain Q_mu        %.6g detections/pulse\n", r->pt.gain);
	printf("qber E_mu        %.4f %%\n", 100.0 * r->pt.qber);
	printf("y1               %.6g\n", r->pt.b.y1);
	printf("e1               %.4f %%\n", 100.0 * r->pt.b.e1);
	printf("q1               %.6g\n", r->pt.b.q1);
	printf("key rate         %.6g bit/pulse (asymptotic, q = %g)\n", r->pt.key_rate, o->q);
	if (r->too_few)
		printf("finite key rate  0 bit/pulse (%.4g pulses give under one expected key "
		       "bit)\n", o->pulses);
	if (r->finite) {
		printf("finite key rate  %.6g bit/pulse (block %.0f bits, %llu secret bits, "
		       "%.4g pulses)\n",
		       r->fr.rate, o->pulses > 0.0 ? r->fr.b.n_x : o->block_bits,
		       (unsigned long long)r->fr.length, r->fr.pulses);
		printf("  finite limit   %.6g bit/pulse (same protocol, block size -> infinity)\n",
		       r->fr.rate_limit);
		printf("  protocol       mu %.3f/%.3f/%.3g, p %.3f/%.3f/%.3f, q_x %.3f%s\n",
		       r->pr.mu[0], r->pr.mu[1], r->pr.mu[2], r->pr.p[0], r->pr.p[1], r->pr.p[2],
		       r->pr.q_x, o->optimize ? " (optimized)" : "");
	}
}

static int write_plot(const struct keyrate_opts *o, const struct row *rows, size_t n)
{
	double *x = malloc(n * sizeof(*x)), *y = malloc(n * sizeof(*y));
	double *yi = malloc(n * sizeof(*yi)), *yf = malloc(n * sizeof(*yf));
	struct qw_svgplot_series s[3];
	struct qw_svgplot plot = { 0 };
	char flabel[64];
	size_t ns = 0;
	int ret = QW_ENOMEM;

	if (!x || !y || !yi || !yf)
		goto out;
	for (size_t i = 0; i < n; i++) {
		struct qw_keyrate_point pt;
		x[i] = rows[i].pt.distance_km;
		y[i] = rows[i].pt.key_rate;
		yf[i] = rows[i].finite ? rows[i].fr.rate : 0.0;
		ret = qw_decoy_keyrate(&o->optics, x[i], QW_DECOY_INFINITE, o->mu, o->nu, o->nu2,
				       o->q, o->f_ec, &pt);
		if (ret)
			goto out;
		yi[i] = pt.key_rate;
	}
	s[ns++] = (struct qw_svgplot_series){ method_name(o->method), x, y, n };
	if (o->method != QW_DECOY_INFINITE)
		s[ns++] = (struct qw_svgplot_series){ "infinite", x, yi, n };
	if (o->block_bits > 0.0 || o->pulses > 0.0) {
		if (o->pulses > 0.0)
			snprintf(flabel, sizeof(flabel), "finite key, %.3g-pulse blocks", o->pulses);
		else
			snprintf(flabel, sizeof(flabel), "finite key, %.3g-bit blocks",
				 o->block_bits);
		s[ns++] = (struct qw_svgplot_series){ flabel, x, yf, n };
	}
	plot.title = "Decoy-state BB84 key rate";
	plot.x_label = "fiber length (km)";
	plot.y_label = "secret key rate (bit/pulse)";
	plot.log_y = 1;
	ret = qw_svgplot_save(o->plot, &plot, s, ns);
out:
	free(x);
	free(y);
	free(yi);
	free(yf);
	return ret;
}

static int theory_keyrate(int argc, char **argv)
{
	struct keyrate_opts o = { 0 };
	struct row *rows = NULL;
	size_t n = 1;
	int rc, ret, finite;

	qw_optics_gys(&o.optics);
	o.method = QW_DECOY_INFINITE;
	o.mu = 0.48;
	o.nu = 0.05;
	o.nu2 = 0.0;
	o.q = 0.5;
	o.f_ec = 1.22;
	o.eps_sec = 1e-10;
	o.eps_cor = 1e-15;
	o.optimize = 1;
	rc = keyrate_parse(argc, argv, &o);
	if (rc >= 0)
		return rc;
	rc = keyrate_validate(&o);
	if (rc >= 0)
		return rc;

	finite = o.block_bits > 0.0 || o.pulses > 0.0;
	if (o.have_sweep)
		n = (size_t)floor((o.to - o.from) / o.step + 1e-9) + 1;
	rows = calloc(n, sizeof(*rows));
	if (!rows)
		return qw_cli_fail("out of memory");
	for (size_t i = 0; i < n; i++) {
		double km = o.have_sweep ? o.from + (double)i * o.step : o.distance;
		if (finite && n > 50)
			qw_cli_progress("theory: %zu/%zu distances", i + 1, n);
		ret = compute_row(&o, km, &rows[i]);
		if (ret) {
			if (finite && n > 50)
				qw_cli_progress_done();
			free(rows);
			return qw_cli_fail("model at %g km: %s", km, qw_strerror(ret));
		}
	}
	if (finite && n > 50)
		qw_cli_progress_done();

	if (o.plot) {
		ret = write_plot(&o, rows, n);
		if (ret) {
			free(rows);
			return qw_cli_fail("cannot write plot '%s': %s", o.plot, qw_strerror(ret));
		}
	}

	if (o.json) {
		json_t *obj;
		if (o.have_sweep) {
			json_t *arr = json_array();
			for (size_t i = 0; i < n; i++)
				json_array_append_new(arr, row_json(&rows[i]));
			obj = json_pack("{s:o, s:o}", "rows", arr, "parameters", params_json(&o));
		} else {
			obj = row_json(&rows[0]);
			json_object_set_new(obj, "parameters", params_json(&o));
		}
		if (o.plot)
			json_object_set_new(obj, "plot", json_string(o.plot));
		qw_cli_print_json(obj);
	} else if (o.have_sweep) {
		printf("# decoy %s, mu %g, nu %g, nu2 %g; rates in bit/pulse\n",
		       method_name(o.method), o.mu, o.nu, o.nu2);
		printf("%11s %11s %11s %9s %11s %9s %11s %11s%s\n", "distance_km", "eta", "gain",
		       "qber_%", "y1", "e1_%", "q1", "key_rate",
		       finite ? "  finite_key_rate  finite_limit" : "");
		for (size_t i = 0; i < n; i++) {
			const struct row *r = &rows[i];
			printf("%11.2f %11.4e %11.4e %9.4f %11.4e %9.4f %11.4e %11.4e", r->pt.distance_km,
			       r->pt.eta, r->pt.gain, 100.0 * r->pt.qber, r->pt.b.y1,
			       100.0 * r->pt.b.e1, r->pt.b.q1, r->pt.key_rate);
			if (r->finite)
				printf("  %15.4e  %12.4e", r->fr.rate, r->fr.rate_limit);
			else if (r->too_few)
				printf("  %15.4e  %12s", 0.0, "-");
			putchar('\n');
		}
		if (o.plot)
			printf("# plot written to %s\n", o.plot);
	} else {
		print_point(&o, &rows[0]);
	}
	free(rows);
	return QW_EXIT_OK;
}

int qw_cmd_theory(int argc, char **argv)
{
	static const struct qw_cli_cmd cmds[] = {
		{ "keyrate", theory_keyrate, "key rate vs distance (decoy-state BB84 model)" },
		{ NULL, NULL, NULL },
	};

	return qw_cli_dispatch("theory", "Decoy-state BB84 theory: key rates of the link model.",
			       cmds, argc, argv);
}
