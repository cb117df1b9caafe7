/* A small SVG line-plot writer: one or more series of (x, y) points on
 * linear or logarithmic axes, with tick labels, axis labels and a legend.
 * Enough for key-rate-vs-distance and similar figures in reports; not a
 * general plotting library. Data are never secret: files are created 0644. */
#ifndef QWAVE_SVGPLOT_H
#define QWAVE_SVGPLOT_H

#include <stddef.h>
#include <stdio.h>

#include "qwave/error.h"

/* One polyline. x and y hold n points each (caller-owned, read only).
 * Points that are not finite, or not > 0 on a log axis, break the line
 * (they are skipped and the next point starts a new segment). */
struct qw_svgplot_series {
	const char *label; /* legend text; NULL = no legend entry */
	const double *x;
	const double *y;
	size_t n;
};

/* Figure options. Zero-initialise and set what you need: width/height 0
 * mean 720 x 480 pixels; NULL strings are left out. */
struct qw_svgplot {
	const char *title;
	const char *x_label;
	const char *y_label;
	int log_x; /* nonzero: log10 x axis */
	int log_y; /* nonzero: log10 y axis */
	unsigned width, height;
};

/* Write the SVG document for the series to f. Axis ranges cover every
 * plottable point (decades on log axes). Text is XML-escaped. Returns 0,
 * QW_EINVAL when no series has a plottable point (or n > 0 with NULL x/y),
 * QW_EIO when writing fails. */
QW_WUR int qw_svgplot_write(FILE *f, const struct qw_svgplot *plot,
			    const struct qw_svgplot_series *series, size_t nseries);

/* qw_svgplot_write() to a new or truncated file at path, created with mode
 * 0644. Same returns; on failure a partly written file is removed. */
QW_WUR int qw_svgplot_save(const char *path, const struct qw_svgplot *plot,
			   const struct qw_svgplot_series *series, size_t nseries);

#endif
