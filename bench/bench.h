/* Benchmark drivers, dispatched by `qwave bench <name>`. Each prints a
 * human view, or exactly one JSON object with --json. Results are recorded
 * in docs/PERFORMANCE.md with the command that produced them. */
#ifndef QWAVE_BENCH_H
#define QWAVE_BENCH_H

int qw_bench_crypto(int argc, char **argv);
int qw_bench_cascade(int argc, char **argv);
int qw_bench_pa(int argc, char **argv);
int qw_bench_pipeline(int argc, char **argv);
int qw_bench_qkdsim(int argc, char **argv);

/* Seconds from a monotonic clock. */
double qw_bench_now(void);
/* Median of n values (sorts v in place). */
double qw_bench_median(double *v, int n);

#endif
