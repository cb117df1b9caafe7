/* SVG line plots on linear or log axes (see include/qwave/svgplot.h). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qwave/error.h"
#include "qwave/svgplot.h"

#define DEF_W 720u
#define DEF_H 480u
#define MARGIN_L 90.0
#define MARGIN_R 30.0
#define MARGIN_T 40.0
#define MARGIN_B 60.0
#define MAX_TICKS 12

static const char *const colors[] = { "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
				      "#9467bd", "#8c564b", "#e377c2", "#17becf" };

struct axis {
	int log;
	double lo, hi;     /* data range in axis units (log10 when log) */
	double px0, px1;   /* pixel positions of lo and hi */
};

static int plottable(double v, int log_axis)
{
	return isfinite(v) && (!log_axis || v > 0.0);
}

static double to_axis(const struct axis *a, double v)
{
	return a->log ? log10(v) : v;
}

static double to_px(const struct axis *a, double v)
{
	return a->px0 + (to_axis(a, v) - a->lo) / (a->hi - a->lo) * (a->px1 - a->px0);
}

static void xml_text(FILE *f, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '<': fputs("&lt;", f); break;
		case '>': fputs("&gt;", f); break;
		case '&': fputs("&amp;", f); break;
		case '"': fputs("&quot;", f); break;
		default:
			/* Control characters are not allowed in XML 1.0 text. */
			if ((unsigned char)*s >= 0x20 || *s == '\t' || *s == '\n')
				fputc(*s, f);
		}
	}
}

/* Widen [lo, hi] to whole decades (log) or to a "nice" step multiple
 * (linear); a degenerate range is opened around its value. */
static double nice_step(double span)
{
	double mag = pow(10.0, floor(log10(span / 5.0)));
	double r = span / 5.0 / mag;

	if (r < 1.5)
		return mag;
	if (r < 3.5)
		return 2.0 * mag;
	if (r < 7.5)
		return 5.0 * mag;
	return 10.0 * mag;
}

static void axis_finish(struct axis *a)
{
	if (a->log) {
		a->lo = floor(a->lo);
		a->hi = ceil(a->hi);
		if (a->hi <= a->lo)
			a->hi = a->lo + 1.0;
		return;
	}
	if (a->hi <= a->lo) {
		double d = a->lo == 0.0 ? 1.0 : fabs(a->lo) * 0.1;
		a->lo -= d;
		a->hi += d;
	}
	double st = nice_step(a->hi - a->lo);
	a->lo = floor(a->lo / st) * st;
	a->hi = ceil(a->hi / st) * st;
}

static void tick_label(char *buf, size_t n, const struct axis *a, double t)
{
	if (a->log)
		snprintf(buf, n, "1e%d", (int)lround(t));
	else
		snprintf(buf, n, "%g", fabs(t) < 1e-12 * (a->hi - a->lo) ? 0.0 : t);
}

/* Tick positions in axis units: every k-th decade, or nice linear steps. */
static int ticks(const struct axis *a, double *out)
{
	int n = 0;

	if (a->log) {
		int dec = (int)lround(a->hi - a->lo);
		int every = dec / MAX_TICKS + 1;
		for (int d = 0; d <= dec && n < MAX_TICKS + 1; d += every)
			out[n++] = a->lo + d;
		return n;
	}
	double st = nice_step(a->hi - a->lo);
	for (double t = a->lo; t <= a->hi + st * 1e-9 && n < MAX_TICKS + 1; t += st)
		out[n++] = t;
	return n;
}

int qw_svgplot_write(FILE *f, const struct qw_svgplot *plot,
		     const struct qw_svgplot_series *series, size_t nseries)
{
	struct axis ax = { 0 }, ay = { 0 };
	double w, h, tk[MAX_TICKS + 1];
	size_t npts = 0, nlegend = 0;
	int nt;

	QW_REQUIRE(f != NULL && plot != NULL && (series != NULL || nseries == 0));
	ax.log = plot->log_x != 0;
	ay.log = plot->log_y != 0;
	for (size_t s = 0; s < nseries; s++) {
		if (series[s].n && (!series[s].x || !series[s].y))
			return QW_EINVAL;
		for (size_t i = 0; i < series[s].n; i++) {
			double x = series[s].x[i], y = series[s].y[i];
			if (!plottable(x, ax.log) || !plottable(y, ay.log))
				continue;
			x = to_axis(&ax, x);
			y = to_axis(&ay, y);
			if (npts == 0) {
				ax.lo = ax.hi = x;
				ay.lo = ay.hi = y;
			}
			ax.lo = fmin(ax.lo, x);
			ax.hi = fmax(ax.hi, x);
			ay.lo = fmin(ay.lo, y);
			ay.hi = fmax(ay.hi, y);
			npts++;
		}
	}
	if (npts == 0)
		return QW_EINVAL;
	axis_finish(&ax);
	axis_finish(&ay);
	w = plot->width ? plot->width : DEF_W;
	h = plot->height ? plot->height : DEF_H;
	ax.px0 = MARGIN_L;
	ax.px1 = w - MARGIN_R;
	ay.px0 = h - MARGIN_B; /* SVG y grows downwards */
	ay.px1 = MARGIN_T;

	fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		   "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
		   "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n"
		   "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
		w, h, w, h);
	if (plot->title) {
		fprintf(f, "<text x=\"%.1f\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">",
			w / 2.0);
		xml_text(f, plot->title);
		fputs("</text>\n", f);
	}

	/* Grid and tick labels. */
	nt = ticks(&ax, tk);
	for (int i = 0; i < nt; i++) {
		char lab[32];
		double px = ax.px0 + (tk[i] - ax.lo) / (ax.hi - ax.lo) * (ax.px1 - ax.px0);
		tick_label(lab, sizeof(lab), &ax, tk[i]);
		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n"
			   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
			px, ay.px1, px, ay.px0, px, ay.px0 + 18.0, lab);
	}
	nt = ticks(&ay, tk);
	for (int i = 0; i < nt; i++) {
		char lab[32];
		double py = ay.px0 + (tk[i] - ay.lo) / (ay.hi - ay.lo) * (ay.px1 - ay.px0);
		tick_label(lab, sizeof(lab), &ay, tk[i]);
		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n"
			   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
			ax.px0, py, ax.px1, py, ax.px0 - 6.0, py + 4.0, lab);
	}
	fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
		   "stroke=\"black\"/>\n",
		ax.px0, ay.px1, ax.px1 - ax.px0, ay.px0 - ay.px1);
	if (plot->x_label) {
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">",
			(ax.px0 + ax.px1) / 2.0, h - 15.0);
		xml_text(f, plot->x_label);
		fputs("</text>\n", f);
	}
	if (plot->y_label) {
		double cy = (ay.px0 + ay.px1) / 2.0;
		fprintf(f, "<text x=\"20\" y=\"%.1f\" text-anchor=\"middle\" "
			   "transform=\"rotate(-90 20 %.1f)\">",
			cy, cy);
		xml_text(f, plot->y_label);
		fputs("</text>\n", f);
	}

	/* Series: one path each, "M" starting every unbroken segment. */
	for (size_t s = 0; s < nseries; s++) {
		const char *col = colors[s % (sizeof(colors) / sizeof(colors[0]))];
		int pen = 0;

		fprintf(f, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\" d=\"", col);
		for (size_t i = 0; i < series[s].n; i++) {
			double x = series[s].x[i], y = series[s].y[i];
			if (!plottable(x, ax.log) || !plottable(y, ay.log)) {
				pen = 0;
				continue;
			}
			fprintf(f, "%s%.2f %.2f ", pen ? "L" : "M", to_px(&ax, x), to_px(&ay, y));
			pen = 1;
		}
		fputs("\"/>\n", f);
		if (series[s].label) {
			double ly = ay.px1 + 16.0 + 18.0 * (double)nlegend++;
			fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
				   "stroke=\"%s\" stroke-width=\"2\"/>\n"
				   "<text x=\"%.1f\" y=\"%.1f\">",
				ax.px1 - 190.0, ly - 4.0, ax.px1 - 165.0, ly - 4.0, col,
				ax.px1 - 160.0, ly);
			xml_text(f, series[s].label);
			fputs("</text>\n", f);
		}
	}
	fputs("</svg>\n", f);
	return ferror(f) ? QW_EIO : 0;
}

static int has_points(const struct qw_svgplot *plot, const struct qw_svgplot_series *series,
		      size_t nseries)
{
	for (size_t s = 0; s < nseries; s++) {
		if (series[s].n && (!series[s].x || !series[s].y))
			return 0;
		for (size_t i = 0; i < series[s].n; i++)
			if (plottable(series[s].x[i], plot->log_x != 0) &&
			    plottable(series[s].y[i], plot->log_y != 0))
				return 1;
	}
	return 0;
}

int qw_svgplot_save(const char *path, const struct qw_svgplot *plot,
		    const struct qw_svgplot_series *series, size_t nseries)
{
	FILE *f;
	int fd, ret = QW_EIO;

	QW_REQUIRE(path != NULL && plot != NULL && (series != NULL || nseries == 0));
	/* Refuse before touching the file, so a bad call leaves it as it was. */
	if (!has_points(plot, series, nseries))
		return QW_EINVAL;
	/* A plot is public data: 0644 (less the umask, as for any tool). */
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return QW_EIO;
	f = fdopen(fd, "w");
	if (!f) {
		close(fd);
		goto out;
	}
	ret = qw_svgplot_write(f, plot, series, nseries);
	if (fclose(f) != 0 && ret == 0)
		ret = QW_EIO;
out:
	if (ret)
		unlink(path);
	return ret;
}
